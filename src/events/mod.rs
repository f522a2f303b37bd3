//! Webhook delivery. Events come from the journal that `apply` keeps (see
//! `meta::events`), so every node holds the same events under the same
//! ids; the leader delivers them. Each endpoint has its own worker (one
//! slow or dead receiver delays nobody else) that sends events in journal
//! order, retries with exponential backoff and jitter, and parks what keeps
//! failing. Progress goes back through the log as `Delivered` commands a
//! few times a second, so a new leader resumes where the old one stopped:
//! delivery is at least once, and only what was sent after the last report
//! before a leader change is sent twice (same ids).

pub mod endpoint;
pub mod format;
pub mod guard;
pub mod platforms;
pub mod pulls;
pub mod sign;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::meta::events::EventId;
use crate::meta::webhooks::{Attempt, Endpoint, Progress, WebhookChange};
use crate::meta::{Command, StateMachine};

/// How often progress is reported through the log while there is some.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// How often the leader looks for added, changed or removed endpoints.
const ENDPOINTS_EVERY: Duration = Duration::from_millis(300);

/// What a node needs to deliver events.
pub struct Settings {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// How clients reach this node, for URLs in events without a `Host`.
    pub public_host: String,
    /// Endpoints from the configuration file.
    pub config_endpoints: Vec<Endpoint>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub struct Delivery {
    meta: StateMachine,
    cluster: Arc<Cluster>,
    settings: Settings,
    instance: String,
    /// This node's pull events.
    pub pulls: pulls::Pulls,
    /// Single images' platforms, read from their configurations.
    pub platforms: platforms::Platforms,
}

/// Progress not yet reported, shared by the workers and the reporter.
#[derive(Default)]
struct Pending {
    progress: Progress,
    positions: HashMap<String, EventId>,
}

type Shared = Arc<Mutex<Pending>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delivery {
    pub fn new(meta: StateMachine, cluster: Arc<Cluster>, settings: Settings) -> Arc<Delivery> {
        let instance = format!("{:016x}", cluster.id());
        Arc::new(Delivery {
            meta,
            cluster,
            settings,
            instance,
            pulls: pulls::Pulls::default(),
            platforms: platforms::Platforms::default(),
        })
    }

    fn context(&self) -> format::Context<'_> {
        format::Context {
            scheme: self.settings.scheme,
            fallback_host: &self.settings.public_host,
            instance: &self.instance,
        }
    }

    fn leads(&self) -> bool {
        self.cluster.raft().metrics().borrow().current_leader == Some(self.cluster.id())
    }

    /// Delivers the log's events while this node leads, and this node's
    /// pull events, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let pulls = tokio::spawn(pulls::run(self.clone(), stop.clone()));
        self.clone().deliver_log(stop).await;
        let _ = pulls.await;
    }

    async fn deliver_log(self: Arc<Self>, stop: CancellationToken) {
        let mut metrics = self.cluster.raft().metrics();
        loop {
            if self.leads() {
                let term = stop.child_token();
                self.lead(&term).await;
                term.cancel();
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One term as leader: workers for every endpoint, and the reporter.
    async fn lead(self: &Arc<Self>, term: &CancellationToken) {
        // A new leader may not have applied all it committed yet: positions
        // read before the earlier leader's last reports would resend what
        // it delivered, and skip what those reports trimmed.
        while let Err(e) = self.cluster.linearize().await {
            tracing::debug!(error = %e, "webhook delivery waits for this leader to catch up");
            if !self.leads() || term.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("this node leads: delivering webhook events");
        self.sync_config_endpoints().await;
        let shared: Shared = Arc::default();
        let reporter = tokio::spawn(self.clone().report(shared.clone(), term.clone()));
        let mut workers: HashMap<String, (Endpoint, CancellationToken)> = HashMap::new();
        let mut tick = tokio::time::interval(ENDPOINTS_EVERY);
        while self.leads() && !term.is_cancelled() {
            match self.meta.endpoints() {
                Ok(endpoints) => self.supervise(&mut workers, endpoints, &shared, term),
                Err(e) => tracing::warn!(error = %e, "cannot read the webhook endpoints"),
            }
            tokio::select! {
                _ = term.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
        for (_, (_, cancel)) in workers.drain() {
            cancel.cancel();
        }
        term.cancel();
        let _ = reporter.await;
        tracing::info!("this node no longer leads: webhook delivery handed over");
    }

    /// Starts a worker for each new endpoint, restarts the ones whose
    /// definition changed, and stops the ones removed.
    fn supervise(
        self: &Arc<Self>,
        workers: &mut HashMap<String, (Endpoint, CancellationToken)>,
        endpoints: Vec<Endpoint>,
        shared: &Shared,
        term: &CancellationToken,
    ) {
        workers.retain(|id, (current, cancel)| {
            let keep = endpoints.iter().any(|e| &e.id == id && e == current);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for endpoint in endpoints {
            if workers.contains_key(&endpoint.id) {
                continue;
            }
            let cancel = term.child_token();
            let worker = worker::Worker::new(self.clone(), endpoint.clone(), shared.clone());
            match worker {
                Ok(worker) => {
                    tokio::spawn(worker.run(cancel.clone()));
                }
                Err(e) => {
                    tracing::error!(endpoint = %endpoint.id, error = %e, "cannot start webhook delivery")
                }
            }
            workers.insert(endpoint.id.clone(), (endpoint, cancel));
        }
    }

    /// Makes the replicated endpoints from files match this node's file.
    async fn sync_config_endpoints(&self) {
        let mine = &self.settings.config_endpoints;
        let stored: Vec<Endpoint> = match self.meta.endpoints() {
            Ok(all) => all
                .into_iter()
                .filter(|e| e.source == crate::meta::webhooks::Source::Config)
                .collect(),
            Err(_) => return,
        };
        let same = stored.len() == mine.len() && mine.iter().all(|m| stored.contains(m));
        if same {
            return;
        }
        let cmd = Command::Webhook(WebhookChange::SyncConfig(mine.clone()));
        match self.cluster.write(cmd).await {
            Ok(_) => tracing::info!(
                endpoints = mine.len(),
                "webhook endpoints from the configuration file are in effect"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the configuration file's webhook endpoints")
            }
        }
    }

    /// Reports progress through the log while this term lasts, and once
    /// more at its end.
    async fn report(self: Arc<Self>, shared: Shared, term: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            let ending = tokio::select! {
                _ = term.cancelled() => true,
                _ = tick.tick() => false,
            };
            let progress = std::mem::take(&mut lock(&shared).progress);
            if !progress.is_empty() {
                let write = self.cluster.write(Command::Delivered(progress.clone()));
                match tokio::time::timeout(Duration::from_secs(5), write).await {
                    Ok(Ok(_)) => {}
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        tracing::warn!(error = %why, "cannot record webhook progress; will retry");
                        lock(&shared).merge_back(progress);
                    }
                }
            }
            if ending {
                return;
            }
        }
    }
}

impl Pending {
    fn position(&mut self, id: &str, at: EventId) {
        self.positions.insert(id.to_owned(), at);
        let progress = &mut self.progress;
        match progress.positions.iter_mut().find(|(i, _)| i == id) {
            Some(entry) => entry.1 = entry.1.max(at),
            None => progress.positions.push((id.to_owned(), at)),
        }
    }

    fn attempt(&mut self, id: &str, attempt: Attempt) {
        self.progress.attempts.push((id.to_owned(), attempt));
    }

    /// Puts back a report that could not be written, keeping what was
    /// added since.
    fn merge_back(&mut self, older: Progress) {
        let newer = std::mem::replace(&mut self.progress, older);
        for (id, at) in newer.positions {
            self.position(&id, at);
        }
        self.progress.parked.extend(newer.parked);
        self.progress.redelivered.extend(newer.redelivered);
        self.progress.attempts.extend(newer.attempts);
        // Attempts are for display: keep the report bounded.
        let excess = self.progress.attempts.len().saturating_sub(1000);
        self.progress.attempts.drain(..excess);
    }
}

/// The outcome of `berth webhook test`: one request, sent at once.
#[derive(Debug, serde::Serialize)]
pub struct TestOutcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Delivery {
    /// Sends `endpoint` a made-up push event (id `0-0`, detail "test
    /// delivery"), signed like any other, outside the journal.
    pub async fn test(
        &self,
        endpoint: &Endpoint,
        origin: crate::meta::events::Origin,
    ) -> TestOutcome {
        let timeout = Duration::from_millis(endpoint.timeout_ms);
        let client = match guard::client(endpoint.allow_internal, timeout) {
            Ok(client) => client,
            Err(e) => {
                return TestOutcome {
                    status: None,
                    error: Some(e.to_string()),
                    latency_ms: 0,
                }
            }
        };
        let repo = match endpoint.repositories.first() {
            Some(crate::meta::access::Resource::Repository(r)) => r.parse().ok(),
            Some(crate::meta::access::Resource::Namespace(n)) => format!("{n}/test").parse().ok(),
            None => "berth/test".parse().ok(),
        };
        let mut event =
            crate::meta::events::Event::new(crate::meta::events::Kind::Push, repo, &origin);
        event.detail = Some("test delivery".into());
        let mut chunk = [crate::meta::events::Stored {
            id: EventId::default(),
            event,
        }];
        let sent = worker::send(&client, self, endpoint, &mut chunk).await;
        TestOutcome {
            status: sent.status,
            error: sent.error,
            latency_ms: sent.latency.as_millis() as u64,
        }
    }
}
