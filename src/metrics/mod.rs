//! Prometheus metrics: the one owner of the node's metric handles. Layers
//! record through [`Metrics`]; what is state rather than events (Raft's
//! term and indexes, replication, disk) is read when scraped, through a
//! [`State`] source, so nothing has to keep it up to date. Labels are
//! bounded: route classes, methods, status codes and member ids, never
//! repository names or digests.

mod state;

use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use state::{GcFigures, MirrorFigures, Snapshot, State};
use state::{StateCollector, WeakState};

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
pub struct FromLabels {
    pub from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
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
    /// Blob bytes this node fetched from other nodes, to serve its clients.
    pub relayed_bytes: Counter,
    /// Blob bytes this node sent to other nodes that fetched them, `from`
    /// its `store` or from a `flight` it was itself still receiving.
    pub fetch_sent_bytes: Family<FromLabels, Counter>,
    /// Uploads refused because too few nodes took a copy.
    pub quorum_failures: Counter,
    state: Arc<StateCollector>,
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
        let relayed_bytes = Counter::default();
        registry.register(
            "replication_relayed_bytes",
            "Blob bytes this node fetched from other nodes, to serve blobs it does not hold",
            relayed_bytes.clone(),
        );
        let fetch_sent_bytes = Family::<FromLabels, Counter>::default();
        registry.register(
            "replication_fetch_sent_bytes",
            "Blob bytes this node sent to other nodes that fetched them, from its store or from a blob it was still receiving",
            fetch_sent_bytes.clone(),
        );
        // Both series exist from the start, so a rate over them has a base.
        for from in ["store", "flight"] {
            let _ = fetch_sent_bytes.get_or_create(&FromLabels { from });
        }
        let quorum_failures = Counter::default();
        registry.register(
            "replication_quorum_failures",
            "Uploads refused because too few nodes took a copy",
            quorum_failures.clone(),
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
            relayed_bytes,
            fetch_sent_bytes,
            quorum_failures,
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

    /// Counts blob bytes fetched from other nodes for a client; a client
    /// that follows a fetch under way adds nothing.
    pub fn relayed(&self, bytes: u64) {
        if self.enabled {
            self.relayed_bytes.inc_by(bytes);
        }
    }

    /// Counts blob bytes sent to a node that fetched them, `from` the
    /// store or a flight.
    pub fn fetch_sent(&self, from: &'static str, bytes: u64) {
        if self.enabled {
            self.fetch_sent_bytes
                .get_or_create(&FromLabels { from })
                .inc_by(bytes);
        }
    }

    /// Counts an upload refused for want of a write quorum.
    pub fn quorum_failed(&self) {
        if self.enabled {
            self.quorum_failures.inc();
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
