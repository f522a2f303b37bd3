//! Pull events. A registry serves far more pulls than it commits changes,
//! so pulls stay out of the log: the node that served one sends it to the
//! endpoints that subscribed to `pull`, best effort. Each endpoint has its
//! own bounded queue and sender (a dead one delays no other); a request is
//! tried twice; a full queue drops events and says so in the log. Ids are
//! `pull-<request id>`, unique per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{format, guard, worker, Delivery};
use crate::meta::events::{Event, EventId, Kind, Stored};
use crate::meta::webhooks::Endpoint;

/// Pulls waiting for the dispatcher, and per endpoint.
const QUEUE: usize = 4096;
/// How often the subscribed endpoints are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// The front of this node's pull events: handlers note pulls here.
pub struct Pulls {
    tx: mpsc::Sender<Event>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Event>>>,
    /// Whether some endpoint wants pulls: handlers build no event otherwise.
    wanted: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    seq: AtomicU64,
}

impl Default for Pulls {
    fn default() -> Pulls {
        let (tx, rx) = mpsc::channel(QUEUE);
        Pulls {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            wanted: Arc::default(),
            dropped: Arc::default(),
            seq: AtomicU64::new(0),
        }
    }
}

impl Pulls {
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Queues a pull event; drops it if the queue is full.
    pub fn note(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next out-of-log id.
    fn next_id(&self) -> EventId {
        EventId {
            index: 0,
            position: self.seq.fetch_add(1, Ordering::Relaxed) as u32,
        }
    }
}

/// Sends noted pulls to subscribed endpoints until `stop`.
pub(super) async fn run(delivery: Arc<Delivery>, stop: CancellationToken) {
    let pulls = &delivery.pulls;
    let Some(mut rx) = pulls.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let mut senders: HashMap<String, (Endpoint, mpsc::Sender<Stored>, CancellationToken)> =
        HashMap::new();
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = refresh.tick() => {
                let subscribed: Vec<Endpoint> = match delivery.meta.endpoints() {
                    Ok(all) => all.into_iter().filter(|e| e.events.contains(&Kind::Pull)).collect(),
                    Err(_) => continue,
                };
                pulls.wanted.store(!subscribed.is_empty(), Ordering::Relaxed);
                senders.retain(|id, (current, _, cancel)| {
                    let keep = subscribed.iter().any(|e| &e.id == id && e == current);
                    if !keep {
                        cancel.cancel();
                    }
                    keep
                });
                for endpoint in subscribed {
                    if senders.contains_key(&endpoint.id) {
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(QUEUE);
                    let cancel = stop.child_token();
                    tokio::spawn(send_loop(delivery.clone(), endpoint.clone(), rx, cancel.clone()));
                    senders.insert(endpoint.id.clone(), (endpoint, tx, cancel));
                }
                let dropped = pulls.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(dropped, "pull events dropped: their queue was full");
                }
            }
            event = rx.recv() => {
                let Some(event) = event else { break };
                let stored = Stored { id: pulls.next_id(), event };
                for (endpoint, tx, _) in senders.values() {
                    if endpoint.wants(&stored.event) && tx.try_send(stored.clone()).is_err() {
                        pulls.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    for (_, (_, _, cancel)) in senders {
        cancel.cancel();
    }
}

/// One endpoint's pull events: what is queued goes out in batches, each
/// request tried twice.
async fn send_loop(
    delivery: Arc<Delivery>,
    endpoint: Endpoint,
    mut rx: mpsc::Receiver<Stored>,
    stop: CancellationToken,
) {
    let timeout = Duration::from_millis(endpoint.timeout_ms);
    let Ok(client) = guard::client(endpoint.allow_internal, timeout) else {
        return;
    };
    let limit = format::batch_limit(endpoint.format, endpoint.max_batch);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            first = rx.recv() => match first { Some(s) => s, None => return },
        };
        let mut chunk = vec![first];
        while chunk.len() < limit {
            match rx.try_recv() {
                Ok(s) => chunk.push(s),
                Err(_) => break,
            }
        }
        for attempt in 0..2 {
            let sent = worker::send(&client, &delivery, &endpoint, &mut chunk).await;
            if sent.ok() {
                break;
            }
            tracing::debug!(endpoint = %endpoint.id, error = sent.error.as_deref().unwrap_or(""), attempt, "pull events not delivered");
            tokio::time::sleep(Duration::from_millis(endpoint.retry.backoff_ms)).await;
        }
    }
}
