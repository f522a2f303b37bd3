//! Manifest parsing: what a manifest references and how it is typed.
//!
//! The registry keeps the exact bytes a client pushed; this module only reads
//! them to learn the media type, the blobs and child manifests that must exist,
//! the `subject` and the fields the referrers API reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::media::{self, ManifestKind};
use super::Digest;

/// A content descriptor as it appears inside manifests and referrers lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing)]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// Foreign (non-distributable) layers live outside registries.
    fn is_foreign(&self) -> bool {
        media::FOREIGN_LAYERS.contains(&self.media_type.as_str())
            && self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What berth needs to know about a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// Config and layer blobs that must already be in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index, which must already be in the repository.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one its config's media
    /// type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedType(String),
    #[error("manifest of type {media_type} lacks the required field {field:?}")]
    MissingField {
        media_type: String,
        field: &'static str,
    },
    #[error("manifest type cannot be determined: no mediaType field, no manifest Content-Type, and neither 'config' nor 'manifests'")]
    UnknownType,
}

/// Strips parameters (`; charset=…`) and whitespace from a Content-Type.
pub fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses a manifest pushed with the given `Content-Type`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let header = content_type
        .map(bare_media_type)
        .filter(|t| is_manifest_type_name(t));
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ManifestError::MediaTypeMismatch {
                header: header.to_owned(),
                body: body.clone(),
            })
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header.to_owned(),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => media::OCI_MANIFEST.to_owned(),
        (None, None) => return Err(ManifestError::UnknownType),
    };
    let kind = media::manifest_kind(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedType(media_type.clone()))?;
    let missing = |field| ManifestError::MissingField {
        media_type: media_type.clone(),
        field,
    };
    let (blobs, manifests, artifact_type) = match kind {
        ManifestKind::Image => {
            let config = raw.config.as_ref().ok_or_else(|| missing("config"))?;
            let blobs = std::iter::once(config)
                .chain(raw.layers.iter().flatten())
                .filter(|d| !d.is_foreign())
                .map(|d| d.digest.clone())
                .collect();
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            (blobs, Vec::new(), artifact_type)
        }
        ManifestKind::Index => {
            let children = raw.manifests.as_ref().ok_or_else(|| missing("manifests"))?;
            let manifests = children.iter().map(|d| d.digest.clone()).collect();
            (Vec::new(), manifests, raw.artifact_type.clone())
        }
    };
    Ok(Manifest {
        media_type,
        kind,
        blobs,
        manifests,
        subject: raw.subject.map(|s| s.digest),
        artifact_type,
        annotations: raw.annotations,
    })
}

fn is_manifest_type_name(t: &str) -> bool {
    media::manifest_kind(t).is_some()
        || t == media::DOCKER_SCHEMA1
        || t == media::DOCKER_SCHEMA1_SIGNED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn image_manifest_without_media_type() {
        let m = parse(image("").as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let m = parse(image("").as_bytes(), Some(media::DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#""artifactType":"application/x.sig","subject":{{"mediaType":"{}","digest":"{}","size":9}},"#,
            media::OCI_MANIFEST,
            d('c')
        );
        let m = parse(image(&extra).as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.subject, Some(d('c').parse().unwrap()));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    }

    #[test]
    fn index_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            d('e')
        );
        let m = parse(
            body.as_bytes(),
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests, vec![d('e').parse().unwrap()]);
    }

    #[test]
    fn rejects() {
        let mismatch = format!(r#""mediaType":"{}","#, media::DOCKER_MANIFEST);
        let cases: Vec<(String, Option<&str>)> = vec![
            ("{".into(), None),
            ("[]".into(), None),
            (r#"{"schemaVersion":1}"#.into(), None),
            (r#"{"schemaVersion":2}"#.into(), None),
            (image(&mismatch), Some(media::OCI_MANIFEST)),
            (
                r#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#.into(),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{}","layers":[]}}"#,
                    media::OCI_MANIFEST
                ),
                None,
            ),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#
                    .into(),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":-1}}}}"#,
                    d('a')
                ),
                None,
            ),
        ];
        for (body, ct) in cases {
            assert!(parse(body.as_bytes(), ct).is_err(), "{body}");
        }
    }
}
