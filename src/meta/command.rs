//! Commands: every change to the replicated metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::access::AccessChange;
use crate::oci::{Digest, RepoName, Tag};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A blob's bytes are stored on `holders`; make it part of `repo`.
    LinkBlob {
        repo: RepoName,
        digest: Digest,
        size: u64,
        at: u64,
        holders: Vec<u64>,
    },
    /// More nodes now store a blob's verified bytes.
    AddHolders {
        digest: Digest,
        nodes: Vec<u64>,
    },
    /// Remove a blob from `repo` (its bytes go with garbage collection).
    UnlinkBlob {
        repo: RepoName,
        digest: Digest,
    },
    PutManifest(PutManifest),
    /// Remove a manifest and every tag that points at it. Written before
    /// deletes were timed; applied as a [`Command::RemoveManifest`] at 0.
    DeleteManifest {
        repo: RepoName,
        digest: Digest,
    },
    DeleteTag {
        repo: RepoName,
        tag: Tag,
    },
    /// A change to users, teams, grants or robots, made at `at`.
    Access {
        change: AccessChange,
        at: u64,
    },
    /// Remove a manifest and every tag that points at it, at `at`: the
    /// blobs it referenced start their grace period then.
    RemoveManifest {
        repo: RepoName,
        digest: Digest,
        at: u64,
    },
    /// Garbage collection's decision. Applying it checks each item again
    /// and removes only what is still garbage.
    Collect(Collect),
    /// A figure of garbage collection: a run's report, or what one node
    /// swept from its disk.
    GcReport(GcReport),
    /// A change to the repository policies, made at `at`.
    Policy {
        change: super::policy::PolicyChange,
        at: u64,
    },
    /// Retention's decision. Applying it evaluates the rules again and
    /// removes only tags still outside them.
    Retain(super::retention::Retain),
    /// A manifest a pull-through mirror fetched from its upstream, and
    /// the tag it had there. Stored as the upstream holds it: its blobs
    /// and children are fetched when first pulled, not before.
    CacheManifest(PutManifest),
    /// When manifests were last pulled through a mirror, reported in
    /// batches by the node that served them: what a mirror's size budget
    /// evicts by.
    Pulled(super::evict::Pulled),
    /// A command with who asked for it, for the events it causes.
    Attributed(Box<Attributed>),
    /// A change to the webhook endpoints.
    Webhook(super::webhooks::WebhookChange),
    /// What the leader's webhook delivery did: positions, parked events,
    /// attempts.
    Delivered(super::webhooks::Progress),
    /// Commands proposed together in one log entry: applied in order, each
    /// seeing the ones before it, each with its own result.
    Batch(Vec<Command>),
}

/// A command and its [`super::events::Origin`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attributed {
    pub command: Command,
    pub origin: super::events::Origin,
}

impl Command {
    /// `self`, naming who asked for it.
    pub fn by(self, origin: super::events::Origin) -> Command {
        Command::Attributed(Box::new(Attributed {
            command: self,
            origin,
        }))
    }

    /// Whether applying the command a second time changes nothing and
    /// answers as the first did: such a write may be sent again when the
    /// leader died before saying whether it took the first. The repeat may
    /// emit its events again, under the new entry's ids.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.inner(),
            Command::LinkBlob { .. }
                | Command::AddHolders { .. }
                | Command::PutManifest(_)
                | Command::CacheManifest(_)
        )
    }

    /// The command itself, without its origin.
    pub fn inner(&self) -> &Command {
        match self {
            Command::Attributed(a) => a.command.inner(),
            other => other,
        }
    }
}

/// Blobs and manifests a collection found to be garbage at `at`, with the
/// grace period it used. Anything referenced, tagged or linked since then
/// is left alone when the command is applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collect {
    pub blobs: Vec<Digest>,
    pub manifests: Vec<(RepoName, Digest)>,
    /// Seconds a blob must have been unreferenced, and a manifest stored.
    pub grace: u64,
    /// Unix seconds on the node that proposed the command.
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GcReport {
    Run(super::gc::RunReport),
    Swept(super::gc::SweepReport),
}

/// Store a manifest (exact bytes) and optionally point a tag at it. Rejected
/// unless every blob and child manifest it names is in the repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PutManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
    pub media_type: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub blobs: Vec<Digest>,
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Unix seconds on the node that proposed the command.
    pub at: u64,
}

impl PutManifest {
    /// The command storing `body`, whose parse is `parsed`, under `digest`
    /// (and `tag`) in `repo` now.
    pub fn new(
        repo: RepoName,
        digest: Digest,
        tag: Option<Tag>,
        body: Vec<u8>,
        parsed: crate::oci::Manifest,
    ) -> PutManifest {
        PutManifest {
            repo,
            digest,
            tag,
            media_type: parsed.media_type,
            body,
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            subject: parsed.subject,
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations,
            at: crate::storage::now_secs(),
        }
    }
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        crate::db::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, crate::db::DbError> {
        crate::db::decode("command", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testing::{image_body, link, put, state};

    /// What the writes that claim [`Command::is_idempotent`] promise: the
    /// second application answers as the first and changes no figure.
    #[test]
    fn idempotent_commands_applied_twice_answer_alike_and_change_nothing() {
        let (_dir, sm) = state();
        let config = link(&sm, "acme/app", b"config", 1);
        let layer = link(&sm, "acme/app", b"layer", 1);
        let body = image_body(&[(&config, 6), (&layer, 5)]);
        let again = [
            Command::LinkBlob {
                repo: "acme/app".parse().unwrap(),
                digest: layer.clone(),
                size: 5,
                at: 2,
                holders: vec![1, 2],
            },
            Command::AddHolders {
                digest: layer.clone(),
                nodes: vec![3],
            },
            put("acme/app", &body, Some("v1"), &[&config, &layer], 3),
        ];
        let repo: RepoName = "acme/app".parse().unwrap();
        for cmd in again {
            assert!(cmd.is_idempotent(), "{cmd:?}");
            let first = sm.apply(&cmd).unwrap();
            let usage = sm.usage("acme").unwrap();
            let holders = sm.holders(&layer).unwrap();
            let tag = sm.tag(&repo, &"v1".parse().unwrap()).unwrap();
            assert_eq!(sm.apply(&cmd).unwrap(), first, "{cmd:?}");
            assert_eq!(sm.usage("acme").unwrap(), usage, "{cmd:?}");
            assert_eq!(sm.holders(&layer).unwrap(), holders, "{cmd:?}");
            assert_eq!(sm.tag(&repo, &"v1".parse().unwrap()).unwrap(), tag);
        }
        let delete = Command::DeleteTag {
            repo,
            tag: "v1".parse().unwrap(),
        };
        assert!(!delete
            .clone()
            .by(crate::meta::events::Origin::default())
            .is_idempotent());
    }
}
