//! Prometheus metrics: the one owner of the node's metric handles. Layers
//! record through [`Metrics`]; what is state rather than events (Raft's
//! term and indexes, replication, disk) is read when scraped, through a
//! [`State`] source, so nothing has to keep it up to date. Labels are
//! bounded: route classes, methods, status codes and member ids, never
//! repository names or digests.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics exposition, which Prometheus asks for.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the older Prometheus text format, for other clients.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// What the state collector reads when scraped.
pub trait State: Send + Sync {
    fn snapshot(&self) -> Snapshot;
}

/// The node's state at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub term: u64,
    pub is_leader: bool,
    pub has_leader: bool,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: u64,
    /// (member id, entries behind the leader's log), as the leader sees it.
    pub lags: Vec<(u64, u64)>,
    pub under_replicated: u64,
    pub unavailable: u64,
    pub bytes_to_copy: u64,
    pub repair_rate: f64,
    pub local_blobs: u64,
    pub uploads: u64,
    pub disk_free: u64,
    pub disk_total: u64,
    pub webhook_endpoints: u64,
}

/// The node's metric handles.
#[derive(Debug)]
pub struct Metrics {
    /// Off: nothing is recorded (`--metrics false`).
    enabled: bool,
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    /// Sign-ins refused: `password`, `token`, `account` (a deleted or
    /// expired one), `rate_limited`.
    pub logins_refused: Family<ReasonLabels, Counter>,
    pub tokens_issued: Counter,
    /// Changes this node proposed, until applied here.
    pub write_seconds: Histogram,
    /// Webhook requests: `delivered`, `failed`, `parked`.
    pub webhook_requests: Family<OutcomeLabels, Counter>,
    pub webhook_events: Counter,
    state: Arc<StateCollector>,
}

/// Scrape-time gauges, from whatever [`Metrics::set_state`] was given.
#[derive(Debug, Default)]
struct StateCollector {
    source: OnceLock<WeakState>,
}

struct WeakState(Weak<dyn State>);

impl std::fmt::Debug for WeakState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms to about 65 s.
    exponential_buckets(0.0005, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Metrics that record nothing.
    pub fn off() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route class, method and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route class",
            request_seconds.clone(),
        );
        let received_bytes = Counter::default();
        registry.register(
            "http_received_bytes",
            "Request body bytes read",
            received_bytes.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register(
            "http_sent_bytes",
            "Response body bytes sent",
            sent_bytes.clone(),
        );
        let logins_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_logins_refused",
            "Sign-ins refused, by reason",
            logins_refused.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register("auth_tokens_issued", "Tokens issued", tokens_issued.clone());
        let write_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "raft_write_duration_seconds",
            "Time from proposing a change through the leader to its being applied on this node",
            write_seconds.clone(),
        );
        let webhook_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests this node sent, by outcome",
            webhook_requests.clone(),
        );
        let webhook_events = Counter::default();
        registry.register(
            "webhook_events_delivered",
            "Webhook events receivers accepted from this node",
            webhook_events.clone(),
        );
        let state = Arc::new(StateCollector::default());
        registry.register_collector(Box::new(state.clone()));
        Metrics {
            enabled: true,
            registry,
            requests,
            request_seconds,
            received_bytes,
            sent_bytes,
            logins_refused,
            tokens_issued,
            write_seconds,
            webhook_requests,
            webhook_events,
            state,
        }
    }

    pub fn login_refused(&self, reason: &'static str) {
        self.logins_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn webhook_request(&self, outcome: &'static str, events: u64) {
        self.webhook_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == "delivered" {
            self.webhook_events.inc_by(events);
        }
    }

    /// Where scrape-time gauges come from; set once.
    pub fn set_state(&self, source: Weak<dyn State>) {
        let _ = self.state.source.set(WeakState(source));
    }

    /// Records one answered request, with the body bytes it read and sent.
    pub fn request(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        took: Duration,
        (received, sent): (u64, u64),
    ) {
        if !self.enabled {
            return;
        }
        self.received_bytes.inc_by(received);
        self.sent_bytes.inc_by(sent);
        // A bounded set, and no allocation per request.
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            http::Method::PUT => "PUT",
            http::Method::POST => "POST",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The OpenMetrics exposition in the Prometheus text format 0.0.4: the same
/// samples, but a counter family is named like its `_total` sample, and
/// there are no `# UNIT` or `# EOF` lines.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until the type says whether the name changes.
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get().and_then(|s| s.0.upgrade()) else {
            return Ok(());
        };
        let s = source.snapshot();
        gauge(&mut e, "raft_term", "The current Raft term", s.term as i64)?;
        gauge(
            &mut e,
            "raft_is_leader",
            "1 if this node leads",
            i64::from(s.is_leader),
        )?;
        gauge(
            &mut e,
            "raft_has_leader",
            "1 if this node knows a leader",
            i64::from(s.has_leader),
        )?;
        gauge(
            &mut e,
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            s.last_log_index as i64,
        )?;
        gauge(
            &mut e,
            "raft_commit_index",
            "Highest index this node knows committed",
            s.commit_index as i64,
        )?;
        gauge(
            &mut e,
            "raft_applied_index",
            "Highest index this node applied",
            s.applied_index as i64,
        )?;
        gauge(
            &mut e,
            "raft_members",
            "Voters in the membership",
            s.members as i64,
        )?;
        {
            #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct Member {
                member: String,
            }
            let lag = ConstGauge::new(0i64);
            let mut family = e.encode_descriptor(
                "raft_follower_lag_entries",
                "Entries each member is behind the leader's log (on the leader only)",
                None,
                lag.metric_type(),
            )?;
            for (id, behind) in &s.lags {
                let labels = Member {
                    member: format!("{id:016x}"),
                };
                ConstGauge::new(*behind as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "replication_under_replicated_blobs",
            "Blobs held by fewer live members than the replication factor wants",
            s.under_replicated as i64,
        )?;
        gauge(
            &mut e,
            "replication_unavailable_blobs",
            "Blobs no live member holds",
            s.unavailable as i64,
        )?;
        gauge(
            &mut e,
            "replication_bytes_to_copy",
            "Bytes repair still has to copy",
            s.bytes_to_copy as i64,
        )?;
        gauge(
            &mut e,
            "replication_repair_rate_bytes_per_second",
            "Bytes a second this node copied in its last repair round",
            s.repair_rate,
        )?;
        gauge(
            &mut e,
            "storage_local_blobs",
            "Blobs this node stores (an estimate)",
            s.local_blobs as i64,
        )?;
        gauge(
            &mut e,
            "storage_uploads_in_progress",
            "Upload sessions open on this node (an estimate)",
            s.uploads as i64,
        )?;
        gauge(
            &mut e,
            "storage_disk_free_bytes",
            "Free bytes on the data directory's file system",
            s.disk_free as i64,
        )?;
        gauge(
            &mut e,
            "storage_disk_size_bytes",
            "Size of the data directory's file system",
            s.disk_total as i64,
        )?;
        gauge(
            &mut e,
            "webhook_endpoints",
            "Webhook endpoints",
            s.webhook_endpoints as i64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.request(
            "manifest",
            &http::Method::GET,
            200,
            Duration::from_millis(3),
            (0, 10),
        );
        let text = to_text(&m.encode());
        assert!(
            text.contains("# HELP berth_http_requests_total Requests answered"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE berth_http_requests_total counter"),
            "{text}"
        );
        assert!(text.contains(
            "berth_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("# TYPE berth_http_request_duration_seconds histogram"));
        assert!(!text.contains("# EOF"));
    }
}
