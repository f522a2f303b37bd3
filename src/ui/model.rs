//! Manifests and image configurations read for display. Lenient: a field a
//! page cannot read is left out, never a failed page (what berth accepted
//! at push time was checked there).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::meta::events::Platform;
use crate::meta::ManifestRecord;
use crate::oci::Digest;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desc {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// What a manifest lists.
pub enum Doc {
    Index(Vec<Desc>),
    Image {
        config: Desc,
        layers: Vec<Desc>,
    },
    /// Not readable as either (should not happen for what berth stored).
    Other,
}

#[derive(Deserialize)]
struct Raw {
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    manifests: Option<Vec<Desc>>,
}

impl Doc {
    pub fn of(record: &ManifestRecord) -> Doc {
        match serde_json::from_slice::<Raw>(&record.body) {
            Ok(Raw {
                manifests: Some(m), ..
            }) => Doc::Index(m),
            Ok(Raw {
                config: Some(config),
                layers,
                ..
            }) => Doc::Image { config, layers },
            _ => Doc::Other,
        }
    }

    /// An image's compressed size: its config and layers, as a pull fetches.
    pub fn image_size(&self) -> Option<u64> {
        match self {
            Doc::Image { config, layers } => {
                Some(config.size + layers.iter().map(|l| l.size).sum::<u64>())
            }
            _ => None,
        }
    }
}

/// An image configuration, as far as a page shows it.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub config: RunConfig,
    pub history: Vec<History>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RunConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct History {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub empty_layer: bool,
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Option<Config> {
        serde_json::from_slice(bytes).ok()
    }

    /// `os/architecture[/variant]`, if the configuration names an OS.
    pub fn platform(&self) -> Option<String> {
        let p = Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        };
        (!p.os.is_empty()).then(|| p.text())
    }
}

/// A command line as a shell would read it back: `["sh", "-c", "a b"]`
/// shows as `sh -c 'a b'`.
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &str) -> ManifestRecord {
        ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: body.as_bytes().to_vec(),
            subject: None,
            artifact_type: None,
            annotations: None,
            created: 0,
        }
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn images_sum_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D1}","size":10}},
               "layers":[{{"mediaType":"l","digest":"{D2}","size":100}},{{"mediaType":"l","digest":"{D2}","size":5}}]}}"#
        );
        let doc = Doc::of(&record(&body));
        assert_eq!(doc.image_size(), Some(115));
    }

    #[test]
    fn indexes_list_platforms_once_without_attestations() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[
               {{"mediaType":"m","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
               {{"mediaType":"m","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
               {{"mediaType":"m","digest":"{D2}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}},
               {{"mediaType":"m","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let doc = Doc::of(&record(&body));
        assert!(matches!(&doc, Doc::Index(children) if children.len() == 4));
        assert_eq!(doc.image_size(), None);
        assert_eq!(
            crate::meta::events::index_platforms(body.as_bytes()),
            ["linux/amd64", "linux/arm64/v8"]
        );
    }

    #[test]
    fn unreadable_manifests_are_other() {
        assert!(matches!(Doc::of(&record("{}")), Doc::Other));
        assert!(matches!(Doc::of(&record("not json")), Doc::Other));
    }

    #[test]
    fn configs_read_leniently() {
        let c = Config::parse(
            br#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["/bin/app"],"Env":["A=1"],"Labels":{"k":"v"}},
                "history":[{"created_by":"RUN x","empty_layer":true}],"rootfs":{"type":"layers"}}"#,
        )
        .unwrap();
        assert_eq!(c.config.entrypoint.unwrap(), ["/bin/app"]);
        assert_eq!(c.history.len(), 1);
        assert!(c.history[0].empty_layer);
        assert!(Config::parse(b"42").is_none());
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args = ["sh", "-c", "echo it's"].map(String::from);
        assert_eq!(command_line(&args), r"sh -c 'echo it'\''s'");
        assert_eq!(command_line(&["/bin/app".into()]), "/bin/app");
    }
}
