//! Webhook endpoints and their delivery progress, kept in the replicated
//! `webhooks` family, so that whichever node leads knows every endpoint,
//! where its delivery stands, and what was parked.
//!
//! ```text
//! webhooks  "ep" 0x00 <id>                      -> Endpoint
//!           "pos" 0x00 <id>                     -> EventId: delivered up to here
//!           "park" 0x00 <id> 0x00 <event key>   -> Parked
//!           "try" 0x00 <id> 0x00 <seq u64>      -> Attempt (the last MAX_ATTEMPTS_KEPT)
//! ```
//!
//! The journal (`events`) keeps an event until every endpoint's position
//! has passed it: a `Delivered` command moves positions and trims.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::access::Resource;
use super::events::{Event, EventId, Kind};
use super::{Batch, Rejection, StateMachine};
use crate::db::{self, keys, Cf, DbError};

/// Attempts kept per endpoint for `berth webhook deliveries`.
pub const MAX_ATTEMPTS_KEPT: usize = 200;
/// Parked events kept per endpoint; older ones are dropped.
pub const MAX_PARKED_KEPT: usize = 10_000;

/// The body a receiver gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Distribution's envelope, `application/vnd.docker.distribution.events.v1+json`.
    #[default]
    Distribution,
    /// Docker Hub's webhook JSON (`push_data`, `repository`).
    Hub,
    /// CloudEvents 1.0, structured mode.
    CloudEvents,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "distribution" => Ok(Format::Distribution),
            "hub" | "dockerhub" => Ok(Format::Hub),
            "cloudevents" => Ok(Format::CloudEvents),
            _ => Err(format!(
                "unknown format {s:?}; use distribution, hub or cloudevents"
            )),
        }
    }
}

/// Where an endpoint was defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Added through the admin API by `by`.
    Api { by: String },
    /// From the `notifications` section of the leader's configuration file.
    Config,
}

/// How a failed delivery is retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts before the events are parked.
    pub attempts: u32,
    /// The first wait; each later one doubles, up to `max_backoff_ms`,
    /// with up to a quarter of random jitter.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 10,
            backoff_ms: 1000,
            max_backoff_ms: 300_000,
        }
    }
}

/// A webhook endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub format: Format,
    /// The kinds delivered.
    pub events: Vec<Kind>,
    /// Repositories and namespaces (`acme/*`) whose events are delivered;
    /// empty for every event, those without a repository included.
    pub repositories: Vec<Resource>,
    /// The HMAC-SHA256 key that signs each body.
    pub secret: Option<String>,
    /// Extra request headers, e.g. `Authorization`.
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub retry: Retry,
    /// Events of these media types, and Distribution actions (`push`,
    /// `delete`, `mount`, `pull`), are not sent: Distribution's `ignore`.
    pub ignored_media_types: Vec<String>,
    pub ignored_actions: Vec<String>,
    /// Events per request, for formats that carry several.
    pub max_batch: u32,
    /// Whether loopback, link-local and metadata-service addresses may be
    /// reached: only an administrator sets it.
    pub allow_internal: bool,
    pub source: Source,
    /// Unix seconds.
    pub created: u64,
}

impl Endpoint {
    /// Whether this endpoint gets `event`.
    pub fn wants(&self, event: &Event) -> bool {
        if !self.events.contains(&event.kind) {
            return false;
        }
        if let Some(media_type) = &event.media_type {
            if self.ignored_media_types.iter().any(|m| m == media_type) {
                return false;
            }
        }
        if self
            .ignored_actions
            .iter()
            .any(|a| a == distribution_action(event.kind))
        {
            return false;
        }
        if self.repositories.is_empty() {
            return true;
        }
        let Some(repo) = &event.repository else {
            return false;
        };
        self.repositories.iter().any(|r| r.covers(repo.as_str()))
    }

    /// The endpoint as shown: the secret and header values hidden.
    pub fn redacted(&self) -> Endpoint {
        Endpoint {
            secret: self.secret.as_ref().map(|_| "(set)".into()),
            headers: self
                .headers
                .iter()
                .map(|(k, _)| (k.clone(), "(set)".into()))
                .collect(),
            ..self.clone()
        }
    }
}

/// The action Distribution's envelope gives a kind: its own four, and the
/// kind's name for the rest.
pub fn distribution_action(kind: Kind) -> &'static str {
    match kind {
        Kind::Push => "push",
        Kind::Pull => "pull",
        Kind::Mount => "mount",
        Kind::TagDeleted | Kind::ManifestDeleted => "delete",
        other => other.name(),
    }
}

/// One change to the endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WebhookChange {
    /// Adds an endpoint, or replaces the one with its id (keeping its
    /// position). A new endpoint gets the events committed after it.
    Put(Box<Endpoint>),
    Remove {
        id: String,
    },
    /// The leader's configuration-file endpoints: these replace every
    /// endpoint that came from a file.
    SyncConfig(Vec<Endpoint>),
    /// Queues parked events of `id` for another delivery; all when `events`
    /// is empty.
    Redeliver {
        id: String,
        events: Vec<EventId>,
    },
}

/// An attempt to deliver events to an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub first: EventId,
    pub last: EventId,
    pub events: u32,
    /// Unix milliseconds when it started.
    pub at_ms: u64,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The node that made it.
    pub node: u64,
}

/// A parked event: delivery gave up on it after its last attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub event: Event,
    pub last: Option<Attempt>,
    /// An operator asked for it to be delivered again.
    pub requeued: bool,
}

/// What the leader's delivery did since its last report: applied as one
/// command, a few times a second while there is progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Each endpoint's new position: everything up to it was delivered or
    /// parked.
    pub positions: Vec<(String, EventId)>,
    /// Events given up on, with the attempt that gave up.
    pub parked: Vec<(String, EventId, Attempt)>,
    /// Parked events delivered after all.
    pub redelivered: Vec<(String, EventId)>,
    pub attempts: Vec<(String, Attempt)>,
}

impl Progress {
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
            && self.parked.is_empty()
            && self.redelivered.is_empty()
            && self.attempts.is_empty()
    }
}

const ENDPOINT: &str = "ep";
const POSITION: &str = "pos";
const PARKED: &str = "park";
const ATTEMPT: &str = "try";

fn key(kind: &str, id: &str) -> Vec<u8> {
    keys::join(&[kind, id])
}

fn sub_key(kind: &str, id: &str, tail: &[u8]) -> Vec<u8> {
    let mut k = keys::prefix(&[kind, id]);
    k.extend_from_slice(tail);
    k
}

impl StateMachine {
    /// Whether any endpoint exists: events are journaled only then.
    pub(super) fn has_endpoints(&self) -> Result<bool, DbError> {
        let prefix = keys::prefix(&[ENDPOINT]);
        Ok(!self
            .db
            .scan_prefix(Cf::Webhooks, &prefix, None, 1)?
            .is_empty())
    }

    pub fn endpoints(&self) -> Result<Vec<Endpoint>, DbError> {
        let prefix = keys::prefix(&[ENDPOINT]);
        self.db
            .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| db::decode("webhook endpoint", &v))
            .collect()
    }

    pub fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, DbError> {
        self.db
            .get(Cf::Webhooks, &key(ENDPOINT, id))?
            .map(|v| db::decode("webhook endpoint", &v))
            .transpose()
    }

    /// Where delivery to `id` stands: every event up to it is done.
    pub fn position(&self, id: &str) -> Result<Option<EventId>, DbError> {
        self.db
            .get(Cf::Webhooks, &key(POSITION, id))?
            .map(|v| db::decode("webhook position", &v))
            .transpose()
    }

    /// The parked events of `id`, oldest first; only requeued ones with
    /// `requeued_only`.
    pub fn parked(&self, id: &str, requeued_only: bool) -> Result<Vec<(EventId, Parked)>, DbError> {
        let prefix = keys::prefix(&[PARKED, id]);
        let mut found = Vec::new();
        for (k, v) in self
            .db
            .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?
        {
            let Some(event) = EventId::from_key(&k[prefix.len()..]) else {
                continue;
            };
            let parked: Parked = db::decode("parked event", &v)?;
            if !requeued_only || parked.requeued {
                found.push((event, parked));
            }
        }
        Ok(found)
    }

    /// The last attempts of `id`, oldest first.
    pub fn attempts(&self, id: &str) -> Result<Vec<Attempt>, DbError> {
        let prefix = keys::prefix(&[ATTEMPT, id]);
        self.db
            .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| db::decode("webhook attempt", &v))
            .collect()
    }

    pub(super) fn stage_webhook(
        &self,
        batch: &mut Batch,
        change: &WebhookChange,
        index: u64,
    ) -> Result<(), super::state::Staged> {
        // Positions this change sets or removes, for trimming the journal.
        let mut changed: Vec<(String, Option<EventId>)> = Vec::new();
        match change {
            WebhookChange::Put(endpoint) => {
                changed.push((
                    endpoint.id.clone(),
                    self.put_endpoint(batch, endpoint, index)?,
                ));
            }
            WebhookChange::Remove { id } => {
                if self.endpoint(id)?.is_none() {
                    return Err(Rejection::WebhookUnknown(id.clone()).into());
                }
                self.remove_endpoint(batch, id)?;
                changed.push((id.clone(), None));
            }
            WebhookChange::SyncConfig(endpoints) => {
                for old in self.endpoints()? {
                    let kept = endpoints.iter().any(|e| e.id == old.id);
                    if old.source == Source::Config && !kept {
                        self.remove_endpoint(batch, &old.id)?;
                        changed.push((old.id.clone(), None));
                    }
                }
                for endpoint in endpoints {
                    if let Some(old) = self.endpoint(&endpoint.id)? {
                        if old.source != Source::Config {
                            // An endpoint added through the API keeps its
                            // id; the file's is not applied.
                            continue;
                        }
                    }
                    changed.push((
                        endpoint.id.clone(),
                        self.put_endpoint(batch, endpoint, index)?,
                    ));
                }
            }
            WebhookChange::Redeliver { id, events } => {
                if self.endpoint(id)?.is_none() {
                    return Err(Rejection::WebhookUnknown(id.clone()).into());
                }
                for (event, mut parked) in self.parked(id, false)? {
                    if events.is_empty() || events.contains(&event) {
                        parked.requeued = true;
                        batch.put_cf(
                            self.db.cf(Cf::Webhooks),
                            sub_key(PARKED, id, &event.key()),
                            db::encode(&parked),
                        );
                    }
                }
            }
        }
        Ok(self.trim_journal(batch, &changed)?)
    }

    /// Stores an endpoint; a new one starts after entry `index`. Returns
    /// the position it starts from, if new.
    fn put_endpoint(
        &self,
        batch: &mut Batch,
        endpoint: &Endpoint,
        index: u64,
    ) -> Result<Option<EventId>, DbError> {
        let cf = self.db.cf(Cf::Webhooks);
        let position = match self.position(&endpoint.id)? {
            Some(at) => at,
            None => {
                // Events of earlier entries are not this endpoint's.
                let start = EventId {
                    index,
                    position: u32::MAX,
                };
                batch.put_cf(cf, key(POSITION, &endpoint.id), db::encode(&start));
                start
            }
        };
        batch.put_cf(cf, key(ENDPOINT, &endpoint.id), db::encode(endpoint));
        Ok(Some(position))
    }

    fn remove_endpoint(&self, batch: &mut Batch, id: &str) -> Result<(), DbError> {
        let cf = self.db.cf(Cf::Webhooks);
        batch.delete_cf(cf, key(ENDPOINT, id));
        batch.delete_cf(cf, key(POSITION, id));
        for kind in [PARKED, ATTEMPT] {
            let prefix = keys::prefix(&[kind, id]);
            for (k, _) in self
                .db
                .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?
            {
                batch.delete_cf(cf, k);
            }
        }
        Ok(())
    }

    pub(super) fn stage_progress(
        &self,
        batch: &mut Batch,
        progress: &Progress,
        index: u64,
    ) -> Result<(), DbError> {
        let cf = self.db.cf(Cf::Webhooks);
        let mut moved = Vec::new();
        for (id, to) in &progress.positions {
            // Positions only move forward, and only for endpoints that exist.
            match self.position(id)? {
                Some(at) if at < *to => {
                    batch.put_cf(cf, key(POSITION, id), db::encode(to));
                    moved.push((id.clone(), Some(*to)));
                }
                _ => {}
            }
        }
        for (id, event, attempt) in &progress.parked {
            if self.endpoint(id)?.is_none() {
                continue;
            }
            let Some(stored) = self.event(*event)? else {
                continue;
            };
            let parked = Parked {
                event: stored,
                last: Some(attempt.clone()),
                requeued: false,
            };
            batch.put_cf(cf, sub_key(PARKED, id, &event.key()), db::encode(&parked));
        }
        for (id, event) in &progress.redelivered {
            batch.delete_cf(cf, sub_key(PARKED, id, &event.key()));
        }
        self.keep_attempts(batch, progress, index)?;
        self.trim_parked(batch, progress)?;
        self.trim_journal(batch, &moved)
    }

    /// Appends the reported attempts and keeps the last
    /// [`MAX_ATTEMPTS_KEPT`] of each endpoint.
    fn keep_attempts(
        &self,
        batch: &mut Batch,
        progress: &Progress,
        index: u64,
    ) -> Result<(), DbError> {
        let cf = self.db.cf(Cf::Webhooks);
        let mut added: BTreeMap<&str, usize> = BTreeMap::new();
        for (seq, (id, attempt)) in progress.attempts.iter().enumerate() {
            if self.endpoint(id)?.is_none() {
                continue;
            }
            // Log index and place: unique, and in order.
            let seq = (index << 16) | (seq as u64 & 0xffff);
            batch.put_cf(
                cf,
                sub_key(ATTEMPT, id, &seq.to_be_bytes()),
                db::encode(attempt),
            );
            *added.entry(id).or_default() += 1;
        }
        for (id, n) in added {
            self.keep_newest(batch, ATTEMPT, id, n, MAX_ATTEMPTS_KEPT)?;
        }
        Ok(())
    }

    /// Keeps the last [`MAX_PARKED_KEPT`] parked events of each endpoint.
    fn trim_parked(&self, batch: &mut Batch, progress: &Progress) -> Result<(), DbError> {
        let mut added: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, ..) in &progress.parked {
            *added.entry(id).or_default() += 1;
        }
        for (id, n) in added {
            self.keep_newest(batch, PARKED, id, n, MAX_PARKED_KEPT)?;
        }
        Ok(())
    }

    /// Deletes the oldest records of `kind` for endpoint `id` so that, with
    /// the `added` this batch writes after them, at most `max` remain.
    fn keep_newest(
        &self,
        batch: &mut Batch,
        kind: &str,
        id: &str,
        added: usize,
        max: usize,
    ) -> Result<(), DbError> {
        let prefix = keys::prefix(&[kind, id]);
        let kept = self
            .db
            .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?;
        let excess = (kept.len() + added).saturating_sub(max);
        for (k, _) in kept.into_iter().take(excess) {
            batch.delete_cf(self.db.cf(Cf::Webhooks), k);
        }
        Ok(())
    }

    /// Drops journal events every endpoint has passed (all of them when no
    /// endpoint is left). `changed` are the positions this batch sets
    /// (`None`: the endpoint goes), which the database does not show yet.
    fn trim_journal(
        &self,
        batch: &mut Batch,
        changed: &[(String, Option<EventId>)],
    ) -> Result<(), DbError> {
        let prefix = keys::prefix(&[POSITION]);
        let mut positions: BTreeMap<String, EventId> = BTreeMap::new();
        for (k, v) in self
            .db
            .scan_prefix(Cf::Webhooks, &prefix, None, usize::MAX)?
        {
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            positions.insert(id, db::decode("webhook position", &v)?);
        }
        for (id, at) in changed {
            match at {
                Some(at) => positions.insert(id.clone(), *at),
                None => positions.remove(id),
            };
        }
        let end = positions.values().min().map(|low| low.next_key());
        // Point deletes, not a range: a range tombstone a few times a
        // second would slow every later read of the journal.
        let cf = self.db.cf(Cf::Events);
        for item in self.db.raw().iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            if end.is_some_and(|end| *k >= end[..]) {
                break;
            }
            batch.delete_cf(cf, k);
        }
        Ok(())
    }
}
