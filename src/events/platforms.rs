//! The platform of a single image, filled in at delivery: it is in the
//! image's configuration blob, which the log does not hold. An index's
//! platforms come with its event (`meta::events`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, Weak};

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::meta::events::{Kind, Platform, Stored};
use crate::meta::StateMachine;
use crate::oci::{Digest, RepoName};

/// Configurations remembered, by digest; past this the memory starts over.
const REMEMBERED: usize = 10_000;
/// A configuration larger than this is not read for its platform.
pub const MAX_CONFIG: u64 = 1 << 20;

/// Reads an image's configuration blob, wherever in the cluster it is.
pub trait Configs: Send + Sync {
    fn config<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Option<Vec<u8>>>;
}

#[derive(Default)]
pub struct Platforms {
    source: OnceLock<Weak<dyn Configs>>,
    known: Mutex<HashMap<Digest, Option<String>>>,
}

const IMAGE_MANIFESTS: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

impl Platforms {
    /// Where configurations are read from; set once, after the registry
    /// exists.
    pub fn set_source(&self, source: Weak<dyn Configs>) {
        let _ = self.source.set(source);
    }

    /// Fills in the platform of each image event that has none.
    pub async fn fill(&self, meta: &StateMachine, events: &mut [Stored]) {
        for s in events.iter_mut() {
            let e = &mut s.event;
            let about_image = matches!(
                e.kind,
                Kind::Push | Kind::TagMoved | Kind::MirrorFetch | Kind::Pull | Kind::BaseUpdated
            );
            if !about_image || !e.platforms.is_empty() {
                continue;
            }
            let (Some(repo), Some(digest)) = (&e.repository, &e.digest) else {
                continue;
            };
            if let Some(platform) = self.platform(meta, repo, digest).await {
                e.platforms = vec![platform];
            }
        }
    }

    /// The platform of the image `digest` names in `repo`, if it is a
    /// single image whose configuration can be read.
    pub async fn platform(
        &self,
        meta: &StateMachine,
        repo: &RepoName,
        digest: &Digest,
    ) -> Option<String> {
        let record = meta.manifest(repo, digest).ok()??;
        if !IMAGE_MANIFESTS.contains(&record.media_type.as_str()) {
            return None;
        }
        #[derive(Deserialize)]
        struct Manifest {
            config: Descriptor,
        }
        #[derive(Deserialize)]
        struct Descriptor {
            digest: Digest,
            #[serde(default)]
            size: u64,
        }
        let config = serde_json::from_slice::<Manifest>(&record.body)
            .ok()?
            .config;
        if let Some(known) = self.lock().get(&config.digest) {
            return known.clone();
        }
        if config.size > MAX_CONFIG {
            return None;
        }
        let source = self.source.get()?.upgrade()?;
        let bytes = source.config(repo, &config.digest).await?;
        let found = serde_json::from_slice::<Platform>(&bytes)
            .ok()
            .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
            .map(|p| p.text());
        let mut known = self.lock();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(config.digest, found.clone());
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Option<String>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}
