//! Serving a blob this node does not hold, from the nodes that do.
//!
//! A whole blob this node may keep is fetched once, however many ask for it
//! at the same time: the first request starts a *flight* that writes a
//! [`Spool`], and every reader (clients, repair, a scrub) follows that spool
//! while its bytes arrive. The last byte reaches a reader only once the whole
//! blob is verified, so a peer that sends wrong bytes makes every response
//! fail, never complete. The verified blob is kept, and its holders recorded.
//!
//! A range joins a flight under way, and otherwise streams straight from a
//! holder, as does a blob larger than this node keeps.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rand::seq::SliceRandom;
use tokio::sync::mpsc;

use super::{record_holders, ReplicationError, Replicator};
use crate::cluster::pb::{FetchRequest, OfferReply, OfferRequest};
use crate::cluster::types::NodeId;
use crate::oci::Digest;
use crate::storage::{ByteStream, Follow, Spool};

/// Longest a fetch from a peer may take before it is abandoned for another.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest a peer may take to say what it offers before it is passed over.
const OFFER_TIMEOUT: Duration = Duration::from_secs(1);

type Chunk = io::Result<Bytes>;

fn channel_stream(rx: mpsc::Receiver<Chunk>) -> ByteStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

/// The blobs this node is fetching from peers, by digest.
#[derive(Clone, Default)]
pub struct Flights(Arc<Mutex<HashMap<Digest, Flight>>>);

/// A fetch under way on this node.
#[derive(Clone)]
struct Flight {
    follow: Follow,
    /// How many receivers stand between this node and a node that stores
    /// the blob ([`UNCHOSEN`] until this node has chosen its source).
    depth: Arc<AtomicU32>,
}

impl Flight {
    /// A failed flight is left for a new one.
    fn followable(&self) -> bool {
        !self.follow.failed()
    }
}

/// A flight's depth before its source is chosen. Peers fetch only from
/// flights with a chosen source, and a flight chooses among flights that
/// chose before it, so no two flights can wait on each other.
const UNCHOSEN: u32 = u32::MAX;
/// Longest chain of receivers a fetch joins.
const MAX_DEPTH: u32 = 8;

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Flight>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flight of `digest`, unless it failed.
    fn get(&self, digest: &Digest) -> Option<Flight> {
        self.lock().get(digest).filter(|f| f.followable()).cloned()
    }

    /// What peers may fetch of `digest` while it arrives: the flight and its
    /// depth, once its source is chosen.
    pub fn offer(&self, digest: &Digest) -> Option<(Follow, u32)> {
        let flight = self.get(digest)?;
        let depth = flight.depth.load(Ordering::Acquire);
        (depth != UNCHOSEN).then_some((flight.follow, depth))
    }

    /// Forgets a flight that ended, unless a newer one took its place.
    fn land(&self, digest: &Digest, flight: &Follow) {
        let mut map = self.lock();
        if map.get(digest).is_some_and(|f| f.follow.same_spool(flight)) {
            map.remove(digest);
        }
    }
}

/// A blob's bytes on their way to a reader.
pub struct Relay {
    pub body: ByteStream,
    /// Whether this request made the node ask peers for bytes; `false`
    /// when it follows a fetch another request started, or reads a copy
    /// that arrived meanwhile.
    pub fetched: bool,
}

/// How fast a fetch may take bytes from peers: repair's share of the
/// bandwidth, over a round that started at `since` and had copied `before`.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    bytes_per_second: u64,
    since: Instant,
    before: u64,
}

impl Pace {
    /// `bytes_per_second` 0 is no limit.
    pub fn new(bytes_per_second: u64, since: Instant, before: u64) -> Pace {
        Pace {
            bytes_per_second,
            since,
            before,
        }
    }

    async fn wait(&self, fetched: u64) {
        if self.bytes_per_second == 0 {
            return;
        }
        let due =
            Duration::from_secs_f64((self.before + fetched) as f64 / self.bytes_per_second as f64);
        if let Some(wait) = due.checked_sub(self.since.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Where a request's bytes come from.
enum Source {
    /// This node's own copy (it arrived since the caller looked).
    Local,
    /// The flight under way.
    Join(Follow),
    /// A flight this request starts.
    Start(Box<Spool>, Flight),
    /// Straight from a holder, nothing kept.
    Through,
}

/// Where fetched bytes go.
enum Sink<'a> {
    Spool(&'a mut Spool, Option<Pace>),
    Client(&'a mpsc::Sender<Chunk>),
}

impl Sink<'_> {
    /// Takes `data`, the bytes up to `fetched`; an error stops the fetch.
    async fn put(&mut self, data: Bytes, fetched: u64) -> Result<(), String> {
        match self {
            Sink::Spool(spool, pace) => {
                spool
                    .append(data)
                    .await
                    .map_err(|e| format!("this node could not store the bytes: {e}"))?;
                if let Some(pace) = pace {
                    pace.wait(fetched).await;
                }
                Ok(())
            }
            Sink::Client(tx) => tx
                .send(Ok(data))
                .await
                .map_err(|_| "the client went away".to_string()),
        }
    }
}

impl Replicator {
    /// Streams bytes `first..=last` (or the whole blob) of `digest`, held by
    /// `holders`, moving on to the next holder if one fails mid-stream.
    pub async fn relay(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<(u64, u64)>,
        holders: Vec<NodeId>,
    ) -> Result<Relay, ReplicationError> {
        self.relay_paced(digest, size, range, holders, None).await
    }

    /// [`Replicator::relay`], with a fetch this call starts held to `pace`.
    pub async fn relay_paced(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<(u64, u64)>,
        holders: Vec<NodeId>,
        pace: Option<Pace>,
    ) -> Result<Relay, ReplicationError> {
        let (first, end) = range.map(|(f, l)| (f, l + 1)).unwrap_or((0, size));
        let me = self.cluster.id();
        let mut holders: Vec<NodeId> = holders.into_iter().filter(|&h| h != me).collect();
        // Spread load, and let a retry reach a different holder.
        holders.shuffle(&mut rand::rng());
        let (body, fetched) = match self.source(digest, size, range.is_none(), &holders)? {
            Source::Local => {
                let read = self.blobs.read(digest, first, end - first);
                let body = read.map_err(|e| ReplicationError::NoHolder {
                    digest: digest.clone(),
                    reasons: format!("this node's copy: {e}"),
                })?;
                (body, false)
            }
            Source::Join(follow) => (follow.read(first, end), false),
            Source::Start(spool, flight) => {
                let body = flight.follow.read(first, end);
                let this = self.clone();
                let digest = digest.clone();
                tokio::spawn(async move { this.fly(digest, holders, *spool, flight, pace).await });
                (body, true)
            }
            Source::Through => {
                let (tx, rx) = mpsc::channel::<Chunk>(4);
                let this = self.clone();
                let digest = digest.clone();
                tokio::spawn(
                    async move { this.pass_through(digest, first, end, holders, tx).await },
                );
                (channel_stream(rx), true)
            }
        };
        Ok(Relay { body, fetched })
    }

    /// Joins the flight of `digest`, or starts one for a `whole` read of a
    /// blob this node may keep.
    fn source(
        &self,
        digest: &Digest,
        size: u64,
        whole: bool,
        holders: &[NodeId],
    ) -> Result<Source, ReplicationError> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(digest).filter(|f| f.followable()) {
            return Ok(Source::Join(flight.follow.clone()));
        }
        if self.holds(digest) {
            return Ok(Source::Local);
        }
        if holders.is_empty() {
            return Err(ReplicationError::NoHolder {
                digest: digest.clone(),
                reasons: "no other node holds it".into(),
            });
        }
        // Past the size cap the blob is only passed on, like a range.
        if !whole || !self.may_keep(size) {
            return Ok(Source::Through);
        }
        match Spool::create(&self.blobs, digest, size) {
            Ok((spool, follow)) => {
                let flight = Flight {
                    follow,
                    depth: Arc::new(AtomicU32::new(UNCHOSEN)),
                };
                flights.insert(digest.clone(), flight.clone());
                Ok(Source::Start(Box::new(spool), flight))
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot keep a relayed copy; passing the blob on");
                Ok(Source::Through)
            }
        }
    }

    /// The fetch of a flight: the whole blob into `spool`, verified, kept
    /// and recorded; its readers get the last byte or the error.
    async fn fly(
        self,
        digest: Digest,
        holders: Vec<NodeId>,
        mut spool: Spool,
        flight: Flight,
        pace: Option<Pace>,
    ) {
        let (sources, depth) = self.choose_source(&digest, holders).await;
        flight.depth.store(depth, Ordering::Release);
        let size = flight.follow.size();
        let fetched = self
            .fetch_range(&digest, 0, size, &sources, Sink::Spool(&mut spool, pace))
            .await;
        let kept = match fetched {
            Ok(()) => match spool.finish().await {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(%digest, sources = ?sources, error = %e, "a fetched copy was not kept (wrong bytes, or this node could not store it)");
                    false
                }
            },
            Err(why) => {
                tracing::warn!(%digest, reasons = %why, "relay failed: no holder could finish the blob");
                spool.fail(&format!("no holder could send {digest}: {why}"));
                false
            }
        };
        // Later readers find the kept copy in the store.
        self.flights.land(&digest, &flight.follow);
        if kept {
            record_holders(self.cluster.clone(), digest, vec![self.cluster.id()]).await;
        }
    }

    /// Where a flight fetches from, in order, and its depth: first the
    /// least busy of the peers that store the blob and of those receiving it
    /// (a holder wins a tie), then the other holders, for a fetch that fails
    /// midway. Receivers spread a fan-out into a tree instead of a star
    /// around the holders.
    async fn choose_source(&self, digest: &Digest, holders: Vec<NodeId>) -> (Vec<NodeId>, u32) {
        let me = self.cluster.id();
        let mut peers: Vec<_> = self
            .cluster
            .members()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .collect();
        if peers.len() < 2 {
            return (holders, 0);
        }
        // Equally busy peers are taken in random order.
        peers.shuffle(&mut rand::rng());
        let offers = futures_util::future::join_all(
            peers
                .iter()
                .map(|(id, addr)| async move { (*id, self.offer(&addr.peer, digest).await) }),
        )
        .await;
        let mut best: Option<(u32, bool, NodeId, u32)> = None;
        for (id, offer) in offers {
            let Some(offer) = offer else { continue };
            let candidate = if offer.held && holders.contains(&id) {
                (offer.sending, false, id, 0)
            } else if offer.receiving && offer.depth < MAX_DEPTH {
                (offer.sending, true, id, offer.depth + 1)
            } else {
                continue;
            };
            if best.is_none_or(|b| (candidate.0, candidate.1) < (b.0, b.1)) {
                best = Some(candidate);
            }
        }
        let Some((_, receiving, chosen, depth)) = best else {
            return (holders, 0);
        };
        tracing::info!(%digest, node = chosen, receiving, "fetching a blob from a peer");
        let mut sources = vec![chosen];
        sources.extend(holders.into_iter().filter(|&h| h != chosen));
        (sources, depth)
    }

    /// What `peer` offers of `digest`; `None` if it does not answer soon.
    async fn offer(&self, peer: &str, digest: &Digest) -> Option<OfferReply> {
        let client = self.cluster.pool().client(peer).ok()?;
        let req = OfferRequest {
            digest: digest.to_string(),
        };
        let reply = client
            .blob_queries()
            .offer(client.request(req, OFFER_TIMEOUT))
            .await;
        reply.ok().map(|r| r.into_inner())
    }

    /// A range, or a blob this node does not keep, straight to the client.
    async fn pass_through(
        self,
        digest: Digest,
        first: u64,
        end: u64,
        holders: Vec<NodeId>,
        client: mpsc::Sender<Chunk>,
    ) {
        let sink = Sink::Client(&client);
        if let Err(why) = self.fetch_range(&digest, first, end, &holders, sink).await {
            if client.is_closed() {
                return; // nobody is left to tell
            }
            tracing::warn!(%digest, reasons = %why, "relay failed");
            let e = io::Error::other(format!("no holder could send {digest}: {why}"));
            let _ = client.send(Err(e)).await;
        }
    }

    /// Bytes `first..end` of `digest` from `holders` into `sink`, each
    /// holder taking over where the one before it stopped.
    async fn fetch_range(
        &self,
        digest: &Digest,
        first: u64,
        end: u64,
        holders: &[NodeId],
        mut sink: Sink<'_>,
    ) -> Result<(), String> {
        let mut offset = first;
        let mut reasons = Vec::new();
        for &holder in holders {
            if offset >= end {
                break;
            }
            let mut stream = match self.open_fetch(holder, digest, offset, end - offset).await {
                Ok(s) => s,
                Err(e) => {
                    reasons.push(format!("node {holder}: {e}"));
                    continue;
                }
            };
            while let Some(chunk) = stream.next().await {
                let data = match chunk {
                    Ok(c) => c.data,
                    Err(s) => {
                        reasons.push(format!(
                            "node {holder} stopped at byte {offset}: {}",
                            s.message()
                        ));
                        break;
                    }
                };
                // A peer that sends more than asked is cut off at the end.
                let data = data.slice(..data.len().min((end - offset) as usize));
                offset += data.len() as u64;
                sink.put(data, offset - first).await?;
            }
        }
        match offset >= end {
            true => Ok(()),
            false if reasons.is_empty() => Err("every holder ended early".into()),
            false => Err(reasons.join("; ")),
        }
    }

    async fn open_fetch(
        &self,
        holder: NodeId,
        digest: &Digest,
        offset: u64,
        length: u64,
    ) -> Result<tonic::Streaming<crate::cluster::pb::BlobChunk>, String> {
        let addr = self
            .member_addr(holder)
            .ok_or_else(|| "not a member".to_string())?;
        let client = self
            .cluster
            .pool()
            .client(&addr.peer)
            .map_err(|e| e.to_string())?;
        let req = FetchRequest {
            digest: digest.to_string(),
            offset,
            length,
        };
        client
            .blobs()
            .fetch(client.request(req, FETCH_TIMEOUT))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::store;

    #[tokio::test]
    async fn a_flight_is_offered_to_peers_only_once_its_source_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let digest = Digest::sha256(b"abc");
        let (spool, follow) = Spool::create(&blobs, &digest, 3).unwrap();
        let flights = Flights::default();
        let flight = Flight {
            follow: follow.clone(),
            depth: Arc::new(AtomicU32::new(UNCHOSEN)),
        };
        flights.lock().insert(digest.clone(), flight.clone());
        assert!(flights.offer(&digest).is_none(), "offered before choosing");
        flight.depth.store(2, Ordering::Release);
        assert_eq!(flights.offer(&digest).map(|(_, d)| d), Some(2));
        spool.fail("the source went away");
        assert!(
            flights.offer(&digest).is_none(),
            "a failed flight is offered"
        );
        flights.land(&digest, &follow);
        assert!(flights.lock().is_empty());
    }
}
