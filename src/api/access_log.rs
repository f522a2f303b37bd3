//! One log line per request (method, path, status, bytes received and
//! sent, duration), written when the response body has been sent or
//! abandoned. The health probes are not logged: orchestrators call them
//! every few seconds.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};

use std::sync::Arc;

use axum::extract::State;

use super::body::Received;
use super::route::ClassSlot;
use crate::metrics::Metrics;

pub async fn layer(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let received = Received::default();
    request.extensions_mut().insert(received.clone());
    let class = ClassSlot::default();
    request.extensions_mut().insert(class.clone());
    let entry = Entry {
        class,
        metrics,
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        started: Instant::now(),
        status: StatusCode::OK,
        expected: None,
        received,
    };
    let resp = next.run(request).await;
    let entry = Entry {
        status: resp.status(),
        expected: resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()),
        ..entry
    };
    resp.map(|body| {
        Body::new(Counted {
            inner: body,
            bytes: 0,
            entry: Some(entry),
        })
    })
}

struct Entry {
    /// The route's class, the label of its metrics, once parsed.
    class: ClassSlot,
    metrics: Arc<Metrics>,
    method: Method,
    path: String,
    started: Instant,
    status: StatusCode,
    /// The declared length; hyper stops polling once it has sent that much.
    expected: Option<u64>,
    /// Request body bytes read, drained ones included.
    received: Received,
}

impl Entry {
    fn log(self, bytes: u64, complete: bool) {
        let received = self.received.0.load(Ordering::Relaxed);
        let route = match self.class.0.get() {
            Some(class) => class,
            None => other_class(&self.path),
        };
        self.metrics.request(
            route,
            &self.method,
            self.status.as_u16(),
            self.started.elapsed(),
            (received, bytes),
        );
        tracing::info!(
            target: "berth::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            received = self.received.0.load(Ordering::Relaxed),
            bytes,
            complete,
            ms = millis(self.started.elapsed()),
        );
    }
}

/// Milliseconds to the microsecond: `0.155`, not `0.15510000000000002`.
/// A bounded name for what a request is about, for a request whose path
/// the `/v2/` route parser did not classify: never a repository or digest.
fn other_class(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/v2") => "v2_invalid",
        "/metrics" => "metrics",
        "/auth/token" => "token",
        p if p.starts_with("/_berth/") => "admin",
        p if p.starts_with("/ui") => "ui",
        _ => "other",
    }
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A response body that counts what it sends and logs when it ends.
struct Counted {
    inner: Body,
    bytes: u64,
    entry: Option<Entry>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Counted {
    fn finish(&mut self, complete: bool) {
        if let Some(entry) = self.entry.take() {
            entry.log(self.bytes, complete);
        }
    }
}

impl Counted {
    /// Whether everything the response had to send went out, judged when
    /// it is dropped: bodies hyper never polls (HEAD, whose body is never
    /// sent; empty ones) or stops polling once the declared length is sent
    /// end here, and so do aborted ones.
    fn sent_everything(&self) -> bool {
        let Some(entry) = &self.entry else {
            return true;
        };
        let sent_all = entry.expected.is_some_and(|n| self.bytes >= n);
        entry.method == Method::HEAD || sent_all || http_body::Body::is_end_stream(&self.inner)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let complete = self.sent_everything();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(method: Method, expected: u64) -> Counted {
        Counted {
            inner: Body::from("{\"errors\":[]}"),
            bytes: 0,
            entry: Some(Entry {
                class: ClassSlot::default(),
                metrics: Arc::default(),
                method,
                path: "/v2/x/blobs/y".into(),
                started: Instant::now(),
                status: StatusCode::NOT_FOUND,
                expected: Some(expected),
                received: Received::default(),
            }),
        }
    }

    #[test]
    fn a_head_answer_is_complete_without_its_body() {
        assert!(counted(Method::HEAD, 13).sent_everything());
        assert!(
            !counted(Method::GET, 13).sent_everything(),
            "a GET cut short"
        );
    }

    #[test]
    fn durations_print_to_the_microsecond() {
        let d = std::time::Duration::from_nanos(155_100);
        assert_eq!(millis(d).to_string(), "0.155");
        assert_eq!(
            millis(std::time::Duration::from_millis(1234)).to_string(),
            "1234"
        );
    }
}
