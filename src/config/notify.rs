//! Webhook endpoints from the configuration file, in the form Distribution's
//! `notifications` section uses, with berth's additions:
//!
//! ```yaml
//! notifications:
//!   endpoints:
//!     - name: ci                          # the endpoint's id
//!       url: https://ci.example.com/registry-events
//!       headers:
//!         Authorization: [Bearer <token>]
//!       timeout: 500ms                    # per request
//!       threshold: 5                      # attempts before events are parked
//!       backoff: 1s                       # first wait between attempts; doubles
//!       ignoredmediatypes: [application/octet-stream]
//!       ignore:
//!         mediatypes: [application/vnd.oci.image.config.v1+json]
//!         actions: [pull]
//!       # berth's own keys:
//!       format: distribution              # or hub, cloudevents
//!       events: push,delete,mount         # what is sent (default: these three)
//!       repositories: [acme/*]            # default: every repository
//!       secret-file: /run/secrets/hook    # HMAC-SHA256 signing key
//!       allow-internal: false             # loopback or link-local receivers
//! ```
//!
//! The leader's file is in effect: when a node takes the lead, its file's
//! endpoints replace those of the previous leader's file. Give every node
//! the same section.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::events::endpoint::EndpointSpec;
use crate::meta::webhooks::{Endpoint, Source};

/// Distribution's default: what its endpoints are sent.
const DEFAULT_EVENTS: &str = "push,delete,mount";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default)]
    pub endpoints: Vec<EndpointEntry>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ignore {
    #[serde(default)]
    pub mediatypes: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointEntry {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// A duration, e.g. `500ms`, `5s`.
    pub timeout: Option<String>,
    pub threshold: Option<u32>,
    pub backoff: Option<String>,
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    #[serde(default)]
    pub ignore: Ignore,
    pub format: Option<String>,
    pub events: Option<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_internal: bool,
}

fn millis(name: &str, what: &str, text: Option<&str>) -> Result<Option<u64>, ConfigError> {
    text.map(|t| {
        humantime::parse_duration(t.trim())
            .map(|d| d.as_millis() as u64)
            .map_err(|e| {
                ConfigError::Invalid(format!(
                    "notifications endpoint {name}: {what} {t:?} is not a duration (e.g. 500ms, 5s): {e}"
                ))
            })
    })
    .transpose()
}

/// The file's endpoints, checked; disabled ones left out.
pub fn resolve(notifications: Option<Notifications>) -> Result<Vec<Endpoint>, ConfigError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for e in notifications.unwrap_or_default().endpoints {
        if e.disabled {
            continue;
        }
        let name = e.name.clone();
        let invalid =
            |m: String| ConfigError::Invalid(format!("notifications endpoint {name}: {m}"));
        let secret = match &e.secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let headers = e
            .headers
            .iter()
            .flat_map(|(k, values)| values.iter().map(move |v| format!("{k}: {v}")))
            .collect();
        let mut ignored_media_types = e.ignoredmediatypes.clone();
        ignored_media_types.extend(e.ignore.mediatypes.iter().cloned());
        let spec = EndpointSpec {
            id: e.name.clone(),
            url: e.url.clone(),
            format: e.format.clone(),
            events: Some(e.events.clone().unwrap_or_else(|| DEFAULT_EVENTS.into())),
            repositories: e.repositories.clone(),
            secret,
            headers,
            timeout_ms: millis(&name, "timeout", e.timeout.as_deref())?,
            attempts: e.threshold,
            backoff_ms: millis(&name, "backoff", e.backoff.as_deref())?,
            max_backoff_ms: None,
            max_batch: None,
            allow_internal: e.allow_internal,
            ignored_media_types,
            ignored_actions: e.ignore.actions.clone(),
        };
        // The creation time is fixed so that the same file gives the same
        // endpoint on every node and at every start.
        let endpoint = spec.build(Source::Config, 0).map_err(invalid)?;
        if out.iter().any(|o| o.id == endpoint.id) {
            return Err(invalid("the name is used twice".into()));
        }
        out.push(endpoint);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::events::Kind;

    fn parse(yaml: &str) -> Result<Vec<Endpoint>, ConfigError> {
        resolve(Some(serde_yaml_ng::from_str(yaml).unwrap()))
    }

    #[test]
    fn distribution_form_is_understood() {
        let endpoints = parse(
            r#"
endpoints:
  - name: alistener
    url: https://mylistener.example.com/event
    headers:
      Authorization: [Bearer token]
    timeout: 500ms
    threshold: 5
    backoff: 1s
    ignoredmediatypes: [application/octet-stream]
    ignore:
      actions: [pull]
  - name: off
    url: https://off.example.com/
    disabled: true
"#,
        )
        .unwrap();
        assert_eq!(endpoints.len(), 1);
        let e = &endpoints[0];
        assert_eq!(e.id, "alistener");
        assert_eq!(e.timeout_ms, 500);
        assert_eq!(e.retry.attempts, 5);
        assert_eq!(e.retry.backoff_ms, 1000);
        assert_eq!(
            e.headers,
            vec![("Authorization".into(), "Bearer token".into())]
        );
        assert_eq!(
            e.ignored_media_types,
            vec!["application/octet-stream".to_owned()]
        );
        assert_eq!(e.ignored_actions, vec!["pull".to_owned()]);
        assert_eq!(
            e.events,
            vec![
                Kind::Push,
                Kind::TagDeleted,
                Kind::ManifestDeleted,
                Kind::Mount
            ]
        );
        assert_eq!(e.source, Source::Config);
    }

    #[test]
    fn mistakes_name_the_endpoint() {
        let err =
            parse("endpoints:\n  - name: ci\n    url: https://x.example/\n    timeout: soon\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("endpoint ci") && err.contains("timeout"),
            "{err}"
        );
        let err = parse("endpoints:\n  - name: ci\n    url: http://127.0.0.1:1/\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow-internal"), "{err}");
    }
}
