//! Webhook endpoints and rebuild triggers as the admin API sees them:
//! changes through the log, status from the replicated metadata, test
//! deliveries from this node.

use serde::Serialize;

use super::{Error, Registry, Result};
use crate::events::TestOutcome;
use crate::meta::bases::Dependent;
use futures_util::StreamExt;

use crate::meta::events::{index_platforms, Event, EventId, Kind, Origin};
use crate::meta::webhooks::{Attempt, Endpoint, Parked, WebhookChange};
use crate::meta::Command;
use crate::oci::{Digest, Reference, RepoName};

/// Events counted at most when showing how far behind an endpoint is.
const BACKLOG_COUNTED: usize = 10_000;

/// An endpoint and how its delivery stands.
#[derive(Serialize)]
pub struct WebhookStatus {
    pub endpoint: Endpoint,
    /// Every event up to this id was delivered or parked.
    pub position: String,
    /// Events it wants that wait for delivery (counted up to 10 000).
    pub backlog: usize,
    pub parked: usize,
    pub last_attempt: Option<Attempt>,
}

/// `berth webhook deliveries`: the last attempts and the parked events.
#[derive(Serialize)]
pub struct Deliveries {
    pub status: WebhookStatus,
    pub attempts: Vec<Attempt>,
    pub parked: Vec<ParkedView>,
}

#[derive(Serialize)]
pub struct ParkedView {
    pub id: String,
    pub kind: &'static str,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub requeued: bool,
    pub last: Option<Attempt>,
}

impl From<(EventId, Parked)> for ParkedView {
    fn from((id, p): (EventId, Parked)) -> ParkedView {
        ParkedView {
            id: id.to_string(),
            kind: p.event.kind.name(),
            repository: p.event.repository.map(|r| r.to_string()),
            tag: p.event.tag.map(|t| t.to_string()),
            digest: p.event.digest.map(|d| d.to_string()),
            requeued: p.requeued,
            last: p.last,
        }
    }
}

impl Registry {
    /// Every endpoint with its delivery status, secrets hidden.
    pub async fn webhooks(&self) -> Result<Vec<WebhookStatus>> {
        let meta = self.fresh().await?;
        let mut all = Vec::new();
        for endpoint in meta.endpoints()? {
            all.push(self.webhook_status(endpoint)?);
        }
        Ok(all)
    }

    fn webhook_status(&self, endpoint: Endpoint) -> Result<WebhookStatus> {
        let id = endpoint.id.clone();
        let position = self.meta.position(&id)?.unwrap_or_default();
        let backlog = self
            .meta
            .events_after(position, BACKLOG_COUNTED)?
            .iter()
            .filter(|s| endpoint.wants(&s.event))
            .count();
        Ok(WebhookStatus {
            endpoint: endpoint.redacted(),
            position: position.to_string(),
            backlog,
            parked: self.meta.parked(&id, false)?.len(),
            last_attempt: self.meta.attempts(&id)?.pop(),
        })
    }

    /// One endpoint as stored (secret included): for permission checks
    /// and test deliveries.
    pub async fn webhook(&self, id: &str) -> Result<Endpoint> {
        self.fresh()
            .await?
            .endpoint(id)?
            .ok_or_else(|| Error::AccessUnknown(format!("no webhook endpoint {id:?}")))
    }

    /// Adds or replaces an endpoint.
    pub async fn put_webhook(&self, endpoint: Endpoint, origin: Origin) -> Result<()> {
        let change = WebhookChange::Put(Box::new(endpoint));
        self.write(Command::Webhook(change).by(origin)).await
    }

    pub async fn remove_webhook(&self, id: &str, origin: Origin) -> Result<()> {
        let change = WebhookChange::Remove { id: id.to_owned() };
        self.write(Command::Webhook(change).by(origin)).await
    }

    pub async fn webhook_deliveries(&self, id: &str) -> Result<Deliveries> {
        let endpoint = self.webhook(id).await?;
        Ok(Deliveries {
            status: self.webhook_status(endpoint)?,
            attempts: self.meta.attempts(id)?,
            parked: self
                .meta
                .parked(id, false)?
                .into_iter()
                .map(ParkedView::from)
                .collect(),
        })
    }

    /// Queues parked events (all when `events` is empty) for delivery
    /// again; how many were queued.
    pub async fn redeliver(&self, id: &str, events: Vec<EventId>, origin: Origin) -> Result<usize> {
        let parked = self.fresh().await?.parked(id, false)?;
        let queued = parked
            .iter()
            .filter(|(e, _)| events.is_empty() || events.contains(e))
            .count();
        let change = WebhookChange::Redeliver {
            id: id.to_owned(),
            events,
        };
        self.write(Command::Webhook(change).by(origin)).await?;
        Ok(queued)
    }

    /// Sends the endpoint a test event from this node.
    pub async fn test_webhook(&self, id: &str, origin: Origin) -> Result<TestOutcome> {
        let endpoint = self.webhook(id).await?;
        Ok(self.delivery.test(&endpoint, origin).await)
    }

    /// The images built on what `repo:reference` names.
    pub async fn dependents(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Vec<Dependent>> {
        let (digest, _) = self
            .lookup(super::Freshness::Required, |m| m.resolve(repo, reference))
            .await?
            .ok_or(Error::ManifestUnknown)?;
        Ok(self.meta.dependents(repo, &digest)?)
    }

    /// Whether a pull should be noted: some endpoint wants pulls.
    pub fn pulls_wanted(&self) -> bool {
        self.delivery.pulls.wanted()
    }

    /// Notes that `manifest` was served from `repo` as `reference`.
    pub fn note_pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
        manifest: &super::ResolvedManifest,
        origin: Origin,
    ) {
        let mut event = Event::new(Kind::Pull, Some(repo.clone()), &origin);
        if let Reference::Tag(tag) = reference {
            event.tag = Some(tag.clone());
        }
        event.digest = Some(manifest.digest.clone());
        event.media_type = Some(manifest.record.media_type.clone());
        event.size = Some(manifest.record.body.len() as u64);
        event.platforms = index_platforms(&manifest.record.body);
        self.delivery.pulls.note(event);
    }

    /// The leader's webhook delivery; runs until `stop`.
    pub fn deliver(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.delivery.clone().run(stop)
    }
}

impl crate::events::platforms::Configs for Registry {
    fn config<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> futures_util::future::BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let read = self.read_blob(repo, digest, None).await.ok()?;
            if read.size > crate::events::platforms::MAX_CONFIG {
                return None;
            }
            let mut body = read.body;
            let mut bytes = Vec::with_capacity(read.size as usize);
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(&chunk.ok()?);
            }
            Some(bytes)
        })
    }
}
