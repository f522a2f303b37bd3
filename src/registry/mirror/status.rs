//! What each mirror has done, for `berth mirror status`: cached content
//! (from the replicated metadata, the same on every node) and this node's
//! hits, misses, upstream bytes and last upstream error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Registry;
use crate::storage::now_secs;

/// One node's counters for one mirror.
#[derive(Default)]
pub struct MirrorStats {
    hits: AtomicU64,
    misses: AtomicU64,
    fetched_bytes: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
}

impl MirrorStats {
    /// A read served from what the cluster already held.
    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A read the cache could not answer: it fetched from the upstream, or
    /// joined a fetch under way (so misses can outnumber upstream fetches).
    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn fetched(&self, bytes: u64) {
        self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((now_secs(), error.to_owned()));
    }
}

/// One mirror as `GET /_berth/mirrors` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MirrorReport {
    pub name: String,
    pub url: String,
    pub default: bool,
    pub anonymous: bool,
    pub tag_ttl_secs: u64,
    /// Distinct blobs cached for it in the cluster, and their bytes.
    pub cached_blobs: u64,
    pub cached_bytes: u64,
    pub cached_repositories: u64,
    /// This node's counts since it started.
    pub hits: u64,
    pub misses: u64,
    pub upstream_bytes: u64,
    /// Unix seconds and text of the last upstream failure this node saw.
    pub last_error: Option<(u64, String)>,
}

impl Registry {
    /// Every mirror's counters on this node, for a metrics scrape.
    pub(crate) fn mirror_figures(&self) -> Vec<crate::metrics::MirrorFigures> {
        self.mirrors
            .list
            .iter()
            .map(|m| crate::metrics::MirrorFigures {
                name: m.config.name.clone(),
                hits: m.stats.hits.load(Ordering::Relaxed),
                misses: m.stats.misses.load(Ordering::Relaxed),
                upstream_bytes: m.stats.fetched_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every mirror's cached content and this node's counters.
    pub async fn mirror_status(&self) -> super::Result<Vec<MirrorReport>> {
        let meta = self.fresh().await?;
        let mut out = Vec::new();
        for m in &self.mirrors.list {
            let c = &m.config;
            let cached = meta.namespace_content(&c.name)?;
            let s = &m.stats;
            out.push(MirrorReport {
                name: c.name.clone(),
                url: c.url.to_string(),
                default: c.default,
                anonymous: c.anonymous,
                tag_ttl_secs: c.tag_ttl.as_secs(),
                cached_blobs: cached.blobs,
                cached_bytes: cached.bytes,
                cached_repositories: cached.repositories,
                hits: s.hits.load(Ordering::Relaxed),
                misses: s.misses.load(Ordering::Relaxed),
                upstream_bytes: s.fetched_bytes.load(Ordering::Relaxed),
                last_error: s
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            });
        }
        Ok(out)
    }
}
