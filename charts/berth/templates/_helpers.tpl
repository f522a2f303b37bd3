{{/*
Names. The full name is cut to 52 characters: a StatefulSet's pods carry a
controller-revision-hash label made of its name and an 11-character suffix,
and a label value may not exceed 63 characters.
*/}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "berth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; they never change over the release's life. */}}
{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "berth.labels" -}}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: registry
app.kubernetes.io/part-of: berth
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "berth.chart" . }}
{{- end }}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The headless Service that gives every pod a stable DNS name. */}}
{{- define "berth.peersService" -}}
{{- printf "%s-peers" (include "berth.fullname" .) }}
{{- end }}

{{/* Domain shared by the members' names: <peers>.<namespace>.svc.<clusterDomain>. */}}
{{- define "berth.peersDomain" -}}
{{- printf "%s.%s.svc.%s" (include "berth.peersService" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* host:port of every member, comma-separated: pod i is <fullname>-i. */}}
{{- define "berth.peers" -}}
{{- $fullname := include "berth.fullname" . }}
{{- $domain := include "berth.peersDomain" . }}
{{- $peers := list }}
{{- range $i := until (int .Values.replicas) }}
{{- $peers = append $peers (printf "%s-%d.%s:5001" $fullname $i $domain) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{- define "berth.clusterSecretName" -}}
{{- if .Values.cluster.existingSecret }}
{{- .Values.cluster.existingSecret }}
{{- else }}
{{- printf "%s-cluster" (include "berth.fullname" .) }}
{{- end }}
{{- end }}

{{- define "berth.clusterSecretKey" -}}
{{- if .Values.cluster.existingSecret }}
{{- .Values.cluster.existingSecretKey }}
{{- else }}
{{- "secret" }}
{{- end }}
{{- end }}

{{- define "berth.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
Checks of values that depend on each other, which the schema cannot express
with a clear message. Included by every template that needs them; it renders
nothing.
*/}}
{{- define "berth.validate" -}}
{{- if lt (int .Values.replicas) 1 }}
{{- fail (printf "replicas must be at least 1 (got %v)" .Values.replicas) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := required "tls.secretName is required when tls.enabled is true: name a kubernetes.io/tls Secret with tls.crt and tls.key" .Values.tls.secretName }}
{{- end }}
{{- if .Values.peerTls.enabled }}
{{- $_ := required "peerTls.secretName is required when peerTls.enabled is true: name a Secret with ca.crt, tls.crt and tls.key" .Values.peerTls.secretName }}
{{- end }}
{{- if .Values.auth.htpasswd.enabled }}
{{- $_ := required "auth.htpasswd.secretName is required when auth.htpasswd.enabled is true: name a Secret with the key htpasswd" .Values.auth.htpasswd.secretName }}
{{- end }}
{{- if and .Values.cluster.existingSecret (not .Values.cluster.existingSecretKey) }}
{{- fail "cluster.existingSecretKey must name the key of the cluster secret in cluster.existingSecret" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.service.nodePort)) (eq .Values.service.type "ClusterIP") }}
{{- fail "service.nodePort is only used with service.type NodePort or LoadBalancer" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicas) 1) (ge (int .Values.podDisruptionBudget.maxUnavailable) (int .Values.replicas)) }}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%v) must be less than replicas (%v)" .Values.podDisruptionBudget.maxUnavailable .Values.replicas) }}
{{- end }}
{{- $rf := toString .Values.replicationFactor }}
{{- if not (regexMatch "^([1-9][0-9]*|all)$" $rf) }}
{{- fail (printf "replicationFactor must be a positive number or \"all\" (got %q)" $rf) }}
{{- end }}
{{- end }}
