//! Events: what a committed change means to a webhook receiver, derived in
//! `apply` from the changes a command made, so that every node derives the
//! same events with the same ids. They are kept in the `events` family
//! (the journal) until every endpoint has had them; delivery reads them
//! there (see `crate::events`).

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::command::Command;
use super::StateMachine;
use crate::db::{self, Cf, DbError};
use crate::oci::{Digest, RepoName, Tag};

/// Who asked for a change, and through which node: carried by the command
/// (see [`Command::Attributed`]), so that its events can name them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The signed-in user or robot; `None` for anonymous callers.
    pub actor: Option<String>,
    /// The node that served the request.
    pub node: u64,
    /// The client's address, `ip:port`.
    pub addr: String,
    /// The `Host` the client addressed.
    pub host: String,
    pub method: String,
    pub user_agent: String,
    /// Unique per request, for correlating events with access logs.
    pub request_id: String,
    /// Unix milliseconds on the serving node.
    pub at_ms: u64,
}

/// What an event reports. The names are what `--events` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A manifest was stored, under a tag or by digest.
    Push,
    /// A tag that named one manifest now names another.
    TagMoved,
    TagDeleted,
    ManifestDeleted,
    /// A blob was linked into a repository from another one.
    Mount,
    /// A manifest was served (`GET`). Not from the log: sent by the node
    /// that served it, best effort (tried twice, never parked), and only to
    /// endpoints that ask for it.
    Pull,
    /// A pull-through mirror stored a manifest from its upstream.
    MirrorFetch,
    /// A garbage collection removed blobs or manifests.
    GcCollected,
    /// Users, organizations, teams, grants or robots changed.
    AccessChanged,
    /// A tag moved, and this image was built on the manifest it named.
    BaseUpdated,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Push,
        Kind::TagMoved,
        Kind::TagDeleted,
        Kind::ManifestDeleted,
        Kind::Mount,
        Kind::Pull,
        Kind::MirrorFetch,
        Kind::GcCollected,
        Kind::AccessChanged,
        Kind::BaseUpdated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Push => "push",
            Kind::TagMoved => "tag.moved",
            Kind::TagDeleted => "tag.deleted",
            Kind::ManifestDeleted => "manifest.deleted",
            Kind::Mount => "mount",
            Kind::Pull => "pull",
            Kind::MirrorFetch => "mirror.fetch",
            Kind::GcCollected => "gc.collected",
            Kind::AccessChanged => "access.changed",
            Kind::BaseUpdated => "base.updated",
        }
    }

    /// The kinds a name in `--events` stands for: a kind's own name, or
    /// `delete` for both deletions.
    pub fn parse_list(text: &str) -> Result<Vec<Kind>, String> {
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "delete" => kinds.extend([Kind::TagDeleted, Kind::ManifestDeleted]),
                "all" => kinds.extend(Kind::ALL.into_iter().filter(|k| *k != Kind::Pull)),
                _ => match Kind::ALL.into_iter().find(|k| k.name() == name) {
                    Some(kind) => kinds.push(kind),
                    None => {
                        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                        return Err(format!(
                            "unknown event {name:?}; known: {}, delete, all",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why something was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// A client's `DELETE`.
    Request,
    /// Garbage collection (untagged manifests, a mirror's size budget).
    Collection,
    /// A retention rule.
    Retention,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Request => "request",
            Cause::Collection => "gc",
            Cause::Retention => "retention",
        }
    }
}

/// An event's position in the journal: the log index of the command that
/// caused it and its place among that command's events. Unique and the
/// same on every node; `index-position` is the id receivers see.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventId {
    pub index: u64,
    pub position: u32,
}

impl EventId {
    /// Just before the first event of log entry `index`.
    pub fn before(index: u64) -> EventId {
        EventId {
            index: index.saturating_sub(1),
            position: u32::MAX,
        }
    }

    pub fn key(self) -> [u8; 12] {
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&self.index.to_be_bytes());
        key[8..].copy_from_slice(&self.position.to_be_bytes());
        key
    }

    pub fn from_key(key: &[u8]) -> Option<EventId> {
        let key: &[u8; 12] = key.try_into().ok()?;
        Some(EventId {
            index: u64::from_be_bytes(key[..8].try_into().ok()?),
            position: u32::from_be_bytes(key[8..].try_into().ok()?),
        })
    }

    /// The key just after this one: where a scan for later events starts.
    pub fn next_key(self) -> [u8; 12] {
        match self.position.checked_add(1) {
            Some(position) => EventId { position, ..self }.key(),
            None => EventId {
                index: self.index + 1,
                position: 0,
            }
            .key(),
        }
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.index, self.position)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<EventId, String> {
        let bad = || format!("{s:?} is not an event id (INDEX-POSITION, e.g. 1042-0)");
        let (index, position) = s.split_once('-').ok_or_else(bad)?;
        Ok(EventId {
            index: index.parse().map_err(|_| bad())?,
            position: position.parse().map_err(|_| bad())?,
        })
    }
}

/// The base image a [`Kind::BaseUpdated`] event is about: the tag that
/// moved, and the manifests it named before and names now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseMove {
    pub repository: RepoName,
    pub tag: Tag,
    pub previous: Digest,
    pub current: Digest,
    /// How the image was found to be built on it: `annotation` or `layers`.
    pub matched: String,
}

/// One event as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    pub repository: Option<RepoName>,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    /// Bytes of the manifest or blob.
    pub size: Option<u64>,
    /// For a moved tag, the manifest it named before.
    pub previous: Option<Digest>,
    /// `os/architecture[/variant]` of each image an index lists; filled in
    /// at delivery for a single image, from its configuration.
    pub platforms: Vec<String>,
    pub cause: Option<Cause>,
    pub base: Option<BaseMove>,
    /// Free text for the kinds without a target: a collection's figures,
    /// an access change.
    pub detail: Option<String>,
    pub origin: Origin,
}

impl Event {
    /// An event of `kind` about `repository`, otherwise empty.
    pub fn new(kind: Kind, repository: Option<RepoName>, origin: &Origin) -> Event {
        Event {
            kind,
            repository,
            tag: None,
            digest: None,
            media_type: None,
            size: None,
            previous: None,
            platforms: Vec::new(),
            cause: None,
            base: None,
            detail: None,
            origin: origin.clone(),
        }
    }
}

/// An event with its id, as delivery reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: EventId,
    pub event: Event,
}

/// What applying a command changed, as its events describe it. Staging
/// records these beside its writes (see [`super::Batch`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A manifest was stored; `previous` is what its tag named before.
    Stored {
        repo: RepoName,
        digest: Digest,
        tag: Option<Tag>,
        previous: Option<Digest>,
        media_type: String,
        size: u64,
        platforms: Vec<String>,
        upstream: bool,
    },
    TagRemoved {
        repo: RepoName,
        tag: Tag,
        digest: Digest,
    },
    ManifestRemoved {
        repo: RepoName,
        digest: Digest,
        media_type: String,
        size: u64,
    },
    Mounted {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    /// A tag moved and `image` (in `repo`) was built on what it named.
    BaseUpdated {
        repo: RepoName,
        image: Digest,
        tags: Vec<Tag>,
        base: BaseMove,
    },
}

impl StateMachine {
    /// The events of one applied command, from the changes its staging
    /// recorded, written to the journal in `batch` under `index` and
    /// numbered from `first` (a batched entry's commands number theirs on
    /// from the one before); how many there were. Nothing is written while
    /// no endpoint exists: nobody would read it.
    pub(crate) fn journal(
        &self,
        batch: &mut WriteBatch,
        index: u64,
        first: u32,
        cmd: &Command,
        changes: Vec<Change>,
    ) -> Result<u32, DbError> {
        if !self.has_endpoints()? {
            return Ok(0);
        }
        let events = derive(cmd, changes);
        let count = events.len() as u32;
        for (position, event) in (first..).zip(events) {
            let id = EventId { index, position };
            batch.put_cf(self.db.cf(Cf::Events), id.key(), db::encode(&event));
        }
        Ok(count)
    }

    /// Up to `limit` journal events after `after`, in order.
    pub fn events_after(&self, after: EventId, limit: usize) -> Result<Vec<Stored>, DbError> {
        let mut found = Vec::new();
        let start = after.next_key();
        let iter = self.db.raw().iterator_cf(
            self.db.cf(Cf::Events),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter.take(limit) {
            let (key, value) = item?;
            let Some(id) = EventId::from_key(&key) else {
                continue;
            };
            let event = db::decode(Cf::Events.name(), &value)?;
            found.push(Stored { id, event });
        }
        Ok(found)
    }

    /// One journal event, if still kept.
    pub fn event(&self, id: EventId) -> Result<Option<Event>, DbError> {
        self.db
            .get(Cf::Events, &id.key())?
            .map(|v| db::decode(Cf::Events.name(), &v))
            .transpose()
    }

    /// The last event id in the journal, if any.
    pub fn last_event(&self) -> Result<Option<EventId>, DbError> {
        let mut iter = self
            .db
            .raw()
            .iterator_cf(self.db.cf(Cf::Events), rocksdb::IteratorMode::End);
        match iter.next() {
            Some(item) => Ok(EventId::from_key(&item?.0)),
            None => Ok(None),
        }
    }
}

/// The events a command's changes mean, in the order they happened.
fn derive(cmd: &Command, changes: Vec<Change>) -> Vec<Event> {
    let (origin, inner) = match cmd {
        Command::Attributed(a) => (a.origin.clone(), &a.command),
        other => (Origin::default(), other),
    };
    let cause = match inner {
        Command::Collect(_) => Cause::Collection,
        Command::Retain(_) => Cause::Retention,
        _ => Cause::Request,
    };
    let mut events = Vec::new();
    let mut removed = (0u64, 0u64);
    for change in changes {
        events.extend(change_events(change, cause, &origin, &mut removed));
    }
    match inner {
        Command::Collect(c) if removed.0 > 0 || !c.blobs.is_empty() => {
            let mut e = Event::new(Kind::GcCollected, None, &origin);
            e.detail = Some(format!(
                "{} manifests and up to {} blobs collected",
                removed.0,
                c.blobs.len()
            ));
            e.cause = Some(Cause::Collection);
            events.push(e);
        }
        Command::Access { change, .. } => {
            let mut e = Event::new(Kind::AccessChanged, None, &origin);
            e.detail = Some(change.describe());
            events.push(e);
        }
        _ => {}
    }
    events
}

fn change_events(
    change: Change,
    cause: Cause,
    origin: &Origin,
    removed: &mut (u64, u64),
) -> Vec<Event> {
    match change {
        Change::Stored {
            repo,
            digest,
            tag,
            previous,
            media_type,
            size,
            platforms,
            upstream,
        } => {
            let kind = match upstream {
                true => Kind::MirrorFetch,
                false => Kind::Push,
            };
            let mut e = Event::new(kind, Some(repo), origin);
            e.tag = tag;
            e.digest = Some(digest);
            e.media_type = Some(media_type);
            e.size = Some(size);
            e.platforms = platforms;
            let moved = previous.is_some() && !upstream;
            e.previous = previous;
            let mut out = vec![e.clone()];
            if moved {
                e.kind = Kind::TagMoved;
                out.push(e);
            }
            out
        }
        Change::TagRemoved { repo, tag, digest } => {
            let mut e = Event::new(Kind::TagDeleted, Some(repo), origin);
            e.tag = Some(tag);
            e.digest = Some(digest);
            e.cause = Some(cause);
            vec![e]
        }
        Change::ManifestRemoved {
            repo,
            digest,
            media_type,
            size,
        } => {
            removed.0 += 1;
            removed.1 += size;
            let mut e = Event::new(Kind::ManifestDeleted, Some(repo), origin);
            e.digest = Some(digest);
            e.media_type = Some(media_type);
            e.size = Some(size);
            e.cause = Some(cause);
            vec![e]
        }
        Change::Mounted { repo, digest, size } => {
            let mut e = Event::new(Kind::Mount, Some(repo), origin);
            e.digest = Some(digest);
            e.size = Some(size);
            e.media_type = Some("application/octet-stream".into());
            vec![e]
        }
        Change::BaseUpdated {
            repo,
            image,
            tags,
            base,
        } => {
            let mut e = Event::new(Kind::BaseUpdated, Some(repo), origin);
            e.digest = Some(image);
            e.tag = tags.into_iter().next();
            e.base = Some(base);
            vec![e]
        }
    }
}

/// `os/architecture[/variant]` of each manifest an image index lists.
pub fn index_platforms(body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        platform: Option<Platform>,
    }
    let Ok(index) = serde_json::from_slice::<Index>(body) else {
        return Vec::new();
    };
    // In the index's order, each once; attestations name `unknown/unknown`.
    let mut found: Vec<String> = Vec::new();
    for text in index
        .manifests
        .into_iter()
        .filter_map(|m| m.platform)
        .filter(|p| p.os != "unknown")
        .map(|p| p.text())
    {
        if !found.contains(&text) {
            found.push(text);
        }
    }
    found
}

/// An OCI platform, as an index or an image configuration gives it.
#[derive(Clone, Debug, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    pub fn text(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}
