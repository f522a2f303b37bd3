//! One endpoint's delivery on the leader: read the journal after the
//! endpoint's position, send what it wants in order, retry, park.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{format, guard, lock, sign, Delivery, Shared};
use crate::meta::events::Stored;
use crate::meta::webhooks::{Attempt, Endpoint};
use crate::storage::{now_millis, now_secs};

/// Journal entries read at once.
const SCAN: usize = 1000;
/// Response bytes read (and dropped) so the connection can be reused.
const MAX_RESPONSE: usize = 64 << 10;
/// How often parked events an operator requeued are looked for.
const REQUEUED_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Worker {
    delivery: Arc<Delivery>,
    endpoint: Endpoint,
    client: reqwest::Client,
    shared: Shared,
}

/// The outcome of one request.
pub struct Sent {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl Worker {
    pub(super) fn new(
        delivery: Arc<Delivery>,
        endpoint: Endpoint,
        shared: Shared,
    ) -> reqwest::Result<Worker> {
        let client = guard::client(
            endpoint.allow_internal,
            Duration::from_millis(endpoint.timeout_ms),
        )?;
        Ok(Worker {
            delivery,
            endpoint,
            client,
            shared,
        })
    }

    pub(super) async fn run(self, stop: CancellationToken) {
        let id = self.endpoint.id.clone();
        let durable = self.delivery.meta.position(&id);
        // A worker restarted in this term (its endpoint changed) goes on
        // from what its predecessor sent, reported or not.
        let sent = lock(&self.shared).positions.get(&id).copied();
        let mut at = match durable {
            Ok(Some(at)) => at.max(sent.unwrap_or_default()),
            Ok(None) => return,
            Err(e) => {
                tracing::error!(endpoint = %id, error = %e, "cannot read the webhook position");
                return;
            }
        };
        tracing::debug!(endpoint = %id, position = %at, "webhook delivery starts");
        let mut applied = self.delivery.cluster.raft().metrics();
        let mut requeued_at = Instant::now();
        while !stop.is_cancelled() {
            if requeued_at.elapsed() >= REQUEUED_EVERY {
                requeued_at = Instant::now();
                self.redeliver(&stop).await;
            }
            let events = match self.delivery.meta.events_after(at, SCAN) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(endpoint = %id, error = %e, "cannot read the event journal");
                    Vec::new()
                }
            };
            let Some(last) = events.last().map(|s| s.id) else {
                // Nothing new: wait for the next applied entry.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = applied.changed() => {}
                    _ = tokio::time::sleep(REQUEUED_EVERY) => {}
                }
                continue;
            };
            let mut wanted: Vec<Stored> = events
                .into_iter()
                .filter(|s| self.endpoint.wants(&s.event))
                .collect();
            let limit = format::batch_limit(self.endpoint.format, self.endpoint.max_batch);
            for chunk in wanted.chunks_mut(limit) {
                if !self.deliver(chunk, &stop).await {
                    return;
                }
                at = chunk[chunk.len() - 1].id;
                lock(&self.shared).position(&id, at);
            }
            at = last;
            lock(&self.shared).position(&id, at);
        }
    }

    /// Sends `chunk` until it is accepted or parked; false if stopped
    /// first (the chunk is then neither).
    async fn deliver(&self, chunk: &mut [Stored], stop: &CancellationToken) -> bool {
        let retry = &self.endpoint.retry;
        let mut failures = 0u32;
        loop {
            let started_ms = now_millis();
            let sent = tokio::select! {
                _ = stop.cancelled() => return false,
                sent = send(&self.client, &self.delivery, &self.endpoint, chunk) => sent,
            };
            let attempt = attempt_of(chunk, started_ms, &sent, self.delivery.cluster.id());
            let ok = sent.ok();
            if ok {
                lock(&self.shared).attempt(&self.endpoint.id, attempt);
                return true;
            }
            failures += 1;
            tracing::warn!(
                endpoint = %self.endpoint.id,
                first = %chunk[0].id,
                status = ?sent.status,
                error = sent.error.as_deref().unwrap_or(""),
                failures,
                "webhook delivery failed"
            );
            if failures >= retry.attempts.max(1) {
                tracing::error!(
                    endpoint = %self.endpoint.id,
                    events = chunk.len(),
                    first = %chunk[0].id,
                    "webhook events parked after {failures} failed attempts; `berth webhook redeliver` sends them again"
                );
                self.delivery.settings.metrics.webhook_request("parked", 0);
                let mut pending = lock(&self.shared);
                for s in chunk.iter() {
                    pending
                        .progress
                        .parked
                        .push((self.endpoint.id.clone(), s.id, attempt.clone()));
                }
                pending.attempt(&self.endpoint.id, attempt);
                return true;
            }
            lock(&self.shared).attempt(&self.endpoint.id, attempt);
            let wait = backoff(retry.backoff_ms, retry.max_backoff_ms, failures);
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the parked events an operator requeued, oldest first, once
    /// each; what succeeds leaves the parked list.
    async fn redeliver(&self, stop: &CancellationToken) {
        let id = &self.endpoint.id;
        let parked = match self.delivery.meta.parked(id, true) {
            Ok(parked) => parked,
            Err(_) => return,
        };
        for (event_id, parked) in parked {
            if stop.is_cancelled() {
                return;
            }
            let mut chunk = [Stored {
                id: event_id,
                event: parked.event,
            }];
            let started_ms = now_millis();
            let sent = send(&self.client, &self.delivery, &self.endpoint, &mut chunk).await;
            let attempt = attempt_of(&chunk, started_ms, &sent, self.delivery.cluster.id());
            let mut pending = lock(&self.shared);
            if sent.ok() {
                pending.progress.redelivered.push((id.clone(), event_id));
            } else {
                // Parked again, with this attempt, and no longer requeued.
                pending
                    .progress
                    .parked
                    .push((id.clone(), event_id, attempt.clone()));
            }
            pending.attempt(id, attempt);
        }
    }
}

fn attempt_of(chunk: &[Stored], at_ms: u64, sent: &Sent, node: u64) -> Attempt {
    Attempt {
        first: chunk[0].id,
        last: chunk[chunk.len() - 1].id,
        events: chunk.len() as u32,
        at_ms,
        status: sent.status,
        error: sent.error.clone(),
        latency_ms: sent.latency.as_millis() as u64,
        node,
    }
}

/// The wait after `failures` failures: `base` doubled each time, at most
/// `max`, less up to a quarter at random so that retries spread out.
pub fn backoff(base_ms: u64, max_ms: u64, failures: u32) -> Duration {
    let doubled = base_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(30));
    let full = doubled.min(max_ms.max(base_ms));
    let jitter = rand::rng().random_range(0..=full / 4);
    Duration::from_millis(full - jitter)
}

/// One request to `endpoint` carrying `chunk`: completed (single images'
/// platforms), rendered, signed, sent, and its response read up to
/// [`MAX_RESPONSE`].
pub async fn send(
    client: &reqwest::Client,
    delivery: &Delivery,
    endpoint: &Endpoint,
    chunk: &mut [Stored],
) -> Sent {
    delivery.platforms.fill(&delivery.meta, chunk).await;
    let sent = post(client, delivery, endpoint, chunk).await;
    let outcome = match sent.ok() {
        true => "delivered",
        false => "failed",
    };
    delivery
        .settings
        .metrics
        .webhook_request(outcome, chunk.len() as u64);
    sent
}

/// The request itself.
async fn post(
    client: &reqwest::Client,
    delivery: &Delivery,
    endpoint: &Endpoint,
    chunk: &[Stored],
) -> Sent {
    let body = format::render(endpoint.format, chunk, &delivery.context());
    let started = Instant::now();
    let mut req = client
        .post(&endpoint.url)
        .header(http::header::CONTENT_TYPE, body.content_type)
        .header("berth-event-id", format::id_text(&chunk[0]))
        .header("berth-event-count", chunk.len().to_string());
    for (name, value) in &endpoint.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(secret) = &endpoint.secret {
        req = req.header(sign::HEADER, sign::sign(secret, now_secs(), &body.bytes));
    }
    match req.body(body.bytes).send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut read = 0usize;
            while read < MAX_RESPONSE {
                match resp.chunk().await {
                    Ok(Some(bytes)) => read += bytes.len(),
                    _ => break,
                }
            }
            let error = (!(200..300).contains(&status)).then(|| format!("answered {status}"));
            Sent {
                status: Some(status),
                error,
                latency: started.elapsed(),
            }
        }
        Err(e) => Sent {
            status: None,
            error: Some(describe(&e)),
            latency: started.elapsed(),
        },
    }
}

/// A reqwest error with its causes: "error sending request" alone does not
/// say that the connection was refused.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit_with_bounded_jitter() {
        for _ in 0..50 {
            let first = backoff(1000, 300_000, 1).as_millis();
            assert!((750..=1000).contains(&first), "{first}");
            let fourth = backoff(1000, 300_000, 4).as_millis();
            assert!((6000..=8000).contains(&fourth), "{fourth}");
            let late = backoff(1000, 300_000, 40).as_millis();
            assert!((225_000..=300_000).contains(&late), "{late}");
        }
    }
}
