//! Reads through a mirror: what the cluster has cached is served as it is
//! (a tag after checking upstream once its TTL has passed); the rest is
//! fetched from the upstream, each blob by one node for the whole cluster.
//!
//! The node that fetches a blob is the first live member in an order every
//! node computes alike from the digest (rendezvous hashing), so concurrent
//! pulls anywhere join one download. Others stream from it while it still
//! arrives; if it stops answering, the next member in the order takes over
//! from the byte the client reached.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::flight::upstream_error;
use super::{Mirrors, Pull, UpstreamError};
use crate::cluster::pb::PullRequest;
use crate::cluster::types::NodeId;
use crate::meta::{Command, ManifestRecord, PutManifest};
use crate::oci::{manifest, media, Algorithm, Digest, Reference, RepoName};
use crate::registry::{BlobRead, ByteRange, Error, Freshness, Registry, ResolvedManifest, Result};
use crate::storage::ByteStream;

/// Longest a peer's pull stream may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(3600);
/// After an upstream failure a tag is served from the cache for this long
/// before the upstream is asked again, so an outage does not slow every
/// pull by a failed request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

type Chunk = io::Result<Bytes>;

impl Mirrors {
    /// Whether this node checked `tag` upstream less than `ttl` ago.
    fn checked_within(&self, repo: &RepoName, tag: &str, ttl: Duration) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked
            .get(&(repo.clone(), tag.to_owned()))
            .is_some_and(|at| at.elapsed() < ttl)
    }

    /// Notes that `tag` was checked; `valid_for` shortens its next TTL.
    fn mark_checked(&self, repo: &RepoName, tag: &str, ttl: Duration, valid_for: Duration) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        // Stored as the instant that makes `elapsed() < ttl` last `valid_for`.
        let at = Instant::now()
            .checked_sub(ttl.saturating_sub(valid_for))
            .unwrap_or_else(Instant::now);
        checked.insert((repo.clone(), tag.to_owned()), at);
    }
}

impl Registry {
    /// A manifest through a mirror, if the client's `Accept` admits it.
    pub async fn pull_manifest<'a>(
        &self,
        pull: &Pull,
        reference: &Reference,
        accept: impl IntoIterator<Item = &'a str>,
    ) -> Result<ResolvedManifest> {
        let cached = self
            .lookup(Freshness::ContentAddressed, |m| {
                m.resolve(&pull.cache, reference)
            })
            .await?;
        let ttl = pull.mirror.config.tag_ttl;
        let current = match (reference, cached) {
            (Reference::Digest(_), Some(found)) => {
                pull.mirror.stats.hit();
                found
            }
            (Reference::Tag(tag), Some(found))
                if self.mirrors.checked_within(&pull.cache, tag.as_str(), ttl) =>
            {
                pull.mirror.stats.hit();
                found
            }
            (_, cached) => self.refresh_manifest(pull, reference, cached).await?,
        };
        let (digest, record) = current;
        self.mirrors.note_pull(pull, &digest);
        if !media::accepts(accept, &record.media_type) {
            return Err(Error::ManifestNotAcceptable {
                media_type: record.media_type,
            });
        }
        Ok(ResolvedManifest { digest, record })
    }

    /// Asks the upstream about a manifest: a cached tag whose digest has
    /// not moved stays; anything else is fetched and cached. When the
    /// upstream fails, what is cached is served (stale-if-error).
    async fn refresh_manifest(
        &self,
        pull: &Pull,
        reference: &Reference,
        cached: Option<(Digest, ManifestRecord)>,
    ) -> Result<(Digest, ManifestRecord)> {
        let mirror = &pull.mirror;
        let upstream = &mirror.upstream;
        let ttl = mirror.config.tag_ttl;
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        let stale = |e: UpstreamError, cached: Option<(Digest, ManifestRecord)>| {
            mirror.stats.failed(&e.to_string());
            match (e, cached, tag) {
                (UpstreamError::NotFound(_), ..) => Err(Error::ManifestUnknown),
                (e, Some(found), Some(tag)) => {
                    tracing::warn!(mirror = %mirror.config.name, repository = %pull.remote, tag, digest = %found.0, error = %e, "upstream failed; serving the cached tag");
                    let retry = RETRY_AFTER_FAILURE.min(ttl);
                    self.mirrors.mark_checked(&pull.cache, tag, ttl, retry);
                    Ok(found)
                }
                (e, ..) => Err(upstream_error(e, Error::ManifestUnknown)),
            }
        };
        if let (Some(tag), Some(found)) = (tag, &cached) {
            match upstream.manifest(&pull.remote, tag, true, 0).await {
                Ok(head) if head.digest.as_ref() == Some(&found.0) => {
                    mirror.stats.hit();
                    self.mirrors.mark_checked(&pull.cache, tag, ttl, ttl);
                    return Ok(cached.expect("matched above"));
                }
                Ok(_) => {}
                Err(e) => return stale(e, cached),
            }
        }
        mirror.stats.miss();
        let reference_text = match reference {
            Reference::Tag(t) => t.to_string(),
            Reference::Digest(d) => d.to_string(),
        };
        let fetched = match upstream
            .manifest(&pull.remote, &reference_text, false, self.max_manifest_size)
            .await
        {
            Ok(f) => f,
            Err(e) => return stale(e, cached),
        };
        let digest = match (reference, &fetched.digest) {
            (Reference::Digest(d), _) => Digest::of(d.algorithm(), &fetched.body),
            (Reference::Tag(_), Some(d)) => Digest::of(d.algorithm(), &fetched.body),
            (Reference::Tag(_), None) => Digest::of(Algorithm::Sha256, &fetched.body),
        };
        let claimed = match reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => fetched.digest.as_ref(),
        };
        if let Some(claimed) = claimed.filter(|c| **c != digest) {
            let e = format!(
                "upstream {} sent a manifest for {claimed} whose bytes hash to {digest}; not cached",
                mirror.config.name
            );
            mirror.stats.failed(&e);
            tracing::error!(repository = %pull.remote, "{e}");
            return Err(Error::Upstream(e));
        }
        let parsed =
            manifest::parse(&fetched.body, fetched.media_type.as_deref()).map_err(|e| {
                Error::Upstream(format!(
                    "upstream {} sent a manifest berth cannot read: {e}",
                    mirror.config.name
                ))
            })?;
        let tag_of = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let put = PutManifest::new(
            pull.cache.clone(),
            digest.clone(),
            tag_of,
            fetched.body,
            parsed,
        );
        let cmd = Command::CacheManifest(put);
        self.write(cmd).await?;
        if let Some(tag) = tag {
            self.mirrors.mark_checked(&pull.cache, tag, ttl, ttl);
        }
        let record = self
            .meta
            .manifest(&pull.cache, &digest)?
            .ok_or(Error::ManifestUnknown)?;
        Ok((digest, record))
    }

    /// A blob's size through a mirror (`HEAD`).
    pub async fn pull_blob_size(&self, pull: &Pull, digest: &Digest) -> Result<u64> {
        match self.stat_blob(&pull.cache, digest).await {
            Err(Error::BlobUnknown) => {}
            found => return found,
        }
        let mirror = &pull.mirror;
        mirror
            .upstream
            .blob_size(&pull.remote, digest)
            .await
            .map_err(|e| {
                mirror.stats.failed(&e.to_string());
                upstream_error(e, Error::BlobUnknown)
            })
    }

    /// A blob through a mirror: from the cluster when it is cached, else
    /// from the one fetch of it.
    pub async fn pull_blob(
        &self,
        pull: &Pull,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        match self.read_blob(&pull.cache, digest, range).await {
            Err(Error::BlobUnknown) => {}
            found => {
                pull.mirror.stats.hit();
                return found;
            }
        }
        pull.mirror.stats.miss();
        let order = self.fetch_order(digest);
        let (size, first, rest) = self.open_pull(pull, digest, 0, &order).await?;
        let range = range
            .map(|r| r.resolve(size).ok_or(Error::RangeNotSatisfiable { size }))
            .transpose()?;
        let (start, end, source, rest) = match range {
            None => (0, size, first, rest),
            // The fetch goes on; the range is read from it.
            Some((f, l)) => {
                let (_, source, rest) = self.open_pull(pull, digest, f, &order).await?;
                (f, l + 1, source, rest)
            }
        };
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        let relay = Relay {
            registry: self.handle(),
            pull: pull.clone(),
            digest: digest.clone(),
            order: rest,
            verify: range.is_none(),
        };
        tokio::spawn(relay.run(source, start, end, tx));
        let body: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        }));
        Ok(BlobRead { size, range, body })
    }

    /// The members in the order they take on a fetch of `digest`: the same
    /// on every node with the same membership.
    fn fetch_order(&self, digest: &Digest) -> Vec<NodeId> {
        let mut ids: Vec<(Digest, NodeId)> = self
            .cluster
            .members()
            .into_iter()
            .map(|(id, _)| (Digest::sha256(format!("{digest}/{id}").as_bytes()), id))
            .collect();
        ids.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Opens the blob from `offset` at the first member in `order` that
    /// answers; returns its size, the stream, and the members not yet
    /// tried. An upstream's own refusal ends the search.
    async fn open_pull(
        &self,
        pull: &Pull,
        digest: &Digest,
        offset: u64,
        order: &[NodeId],
    ) -> Result<(u64, ByteStream, Vec<NodeId>)> {
        let mut reasons = Vec::new();
        for (i, &node) in order.iter().enumerate() {
            match self.open_at(node, pull, digest, offset).await {
                Ok((size, stream)) => return Ok((size, stream, order[i + 1..].to_vec())),
                Err(Opened::Final(e)) => return Err(e),
                Err(Opened::Retry(why)) => {
                    tracing::debug!(node, %digest, error = %why, "member cannot fetch; trying the next");
                    reasons.push(format!("node {node}: {why}"));
                }
            }
        }
        Err(Error::Unavailable(format!(
            "no member could fetch {digest} from upstream {}: {}",
            pull.mirror.config.name,
            reasons.join("; ")
        )))
    }

    async fn open_at(
        &self,
        node: NodeId,
        pull: &Pull,
        digest: &Digest,
        offset: u64,
    ) -> std::result::Result<(u64, ByteStream), Opened> {
        if node == self.cluster.id() {
            return self
                .pull_here(pull, digest, offset)
                .await
                .map_err(Opened::Final);
        }
        let addr = self
            .cluster
            .members()
            .into_iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| a)
            .ok_or_else(|| Opened::Retry("not a member".into()))?;
        let client = self
            .cluster
            .pool()
            .client(&addr.peer)
            .map_err(|e| Opened::Retry(e.to_string()))?;
        let req = PullRequest {
            mirror: pull.mirror.config.name.clone(),
            repository: pull.remote.clone(),
            digest: digest.to_string(),
            offset,
        };
        let mut stream = client
            .mirrors()
            .pull(client.request(req, PULL_TIMEOUT))
            .await
            .map_err(Opened::from_status)?
            .into_inner();
        let size = match stream.next().await {
            Some(Ok(first)) => first.size,
            Some(Err(s)) => return Err(Opened::from_status(s)),
            None => return Err(Opened::Retry("the pull ended at once".into())),
        };
        let body = stream.map(|c| c.map(|c| c.data).map_err(io::Error::other));
        Ok((size, Box::pin(body)))
    }
}

/// Why a member could not start a pull.
enum Opened {
    /// The upstream's answer, which another member would get too.
    Final(Error),
    /// The member did not answer: the next one may.
    Retry(String),
}

impl Opened {
    fn from_status(s: tonic::Status) -> Opened {
        use tonic::Code;
        match s.code() {
            Code::NotFound => Opened::Final(Error::BlobUnknown),
            Code::FailedPrecondition => Opened::Final(Error::Upstream(s.message().to_owned())),
            Code::ResourceExhausted => Opened::Final(Error::BodyTooLarge { limit: 0 }),
            _ => Opened::Retry(format!("{}: {}", s.code(), s.message())),
        }
    }
}

/// Streams a pulled blob to the client, moving to the next member from the
/// byte reached when one stops. A whole blob is hashed on the way and its
/// last chunk held back until it matches, so whatever the members sent, the
/// client never completes with the wrong bytes.
struct Relay {
    registry: std::sync::Arc<Registry>,
    pull: Pull,
    digest: Digest,
    order: Vec<NodeId>,
    verify: bool,
}

impl Relay {
    async fn run(mut self, mut source: ByteStream, start: u64, end: u64, tx: mpsc::Sender<Chunk>) {
        let mut offset = start;
        let mut hasher = self.verify.then(|| self.digest.algorithm().hasher());
        let mut held: Option<Bytes> = None;
        let mut reasons = Vec::new();
        while offset < end {
            match source.next().await {
                Some(Ok(data)) => {
                    let data = data.slice(..data.len().min((end - offset) as usize));
                    offset += data.len() as u64;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&data);
                    }
                    if let Some(previous) = held.replace(data) {
                        if tx.send(Ok(previous)).await.is_err() {
                            return; // the client went away; the fetch goes on
                        }
                    }
                    continue;
                }
                Some(Err(e)) => reasons.push(e.to_string()),
                None => reasons.push(format!("the stream ended at byte {offset}")),
            }
            // The member stopped: the next one carries on from `offset`.
            let order = std::mem::take(&mut self.order);
            match self
                .registry
                .open_pull(&self.pull, &self.digest, offset, &order)
                .await
            {
                Ok((_, next, rest)) => {
                    tracing::info!(digest = %self.digest, offset, "the fetching member stopped; another took over");
                    source = next;
                    self.order = rest;
                }
                Err(e) => {
                    reasons.push(e.to_string());
                    let why = format!("pull of {} failed: {}", self.digest, reasons.join("; "));
                    tracing::warn!("{why}");
                    let _ = tx.send(Err(io::Error::other(why))).await;
                    return;
                }
            }
        }
        if let Some(h) = hasher {
            let actual = h.finish();
            if actual != self.digest {
                let why = format!("the bytes pulled for {} hash to {actual}", self.digest);
                tracing::error!("{why}; the response is cut short");
                let _ = tx.send(Err(io::Error::other(why))).await;
                return;
            }
        }
        if let Some(last) = held {
            let _ = tx.send(Ok(last)).await;
        }
    }
}
