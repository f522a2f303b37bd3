//! Request bodies: how fast they must arrive, and what becomes of the part
//! a handler did not read.
//!
//! A handler may answer before it has read the body (a 401, 413 or 416 to
//! an upload). Over HTTP/1.1 the next request on that connection starts
//! where this body ends, so the connection is only reusable once the rest
//! of the body has been read. Go's HTTP client, which docker, containerd
//! and skopeo use, does not retry a POST, PATCH or PUT that fails on a
//! reused connection, so a connection that is silently dropped breaks a
//! push. The rule here:
//!
//! - the unread rest is drained, up to [`BodyLimits::drain_bytes`] and
//!   [`BodyLimits::drain_time`], and the connection is kept;
//! - past that bound, or when the client asked `Expect: 100-continue` and
//!   was never told to send, the response says `Connection: close` and the
//!   connection ends cleanly (see `conn::linger`), so the client learns
//!   before its next request;
//! - HTTP/2 needs neither: an answered stream whose body is unread is reset
//!   with `NO_ERROR`, and the connection goes on.
//!
//! Every body must also deliver at least [`BodyLimits::min_rate`] bytes a
//! second, measured over each [`BodyLimits::window`] of time the server
//! spends waiting for it, so a client that stalls or trickles cannot hold
//! an upload session or a connection forever.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::time::Sleep;

/// Limits on request bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most unread body bytes drained after an early answer to keep the
    /// connection.
    pub drain_bytes: u64,
    /// Longest a drain may take.
    pub drain_time: Duration,
    /// Least bytes per second a body must deliver.
    pub min_rate: u64,
    /// The stretch of waiting over which `min_rate` is measured; a body
    /// that sends nothing for this long fails whatever the rate.
    pub window: Duration,
}

impl Default for BodyLimits {
    fn default() -> BodyLimits {
        BodyLimits {
            drain_bytes: 256 << 10,
            drain_time: Duration::from_secs(1),
            min_rate: 1024,
            window: Duration::from_secs(60),
        }
    }
}

impl BodyLimits {
    /// Bytes a window of waiting must bring: at least one, so a silent
    /// client always fails.
    fn window_bytes(&self) -> u64 {
        self.min_rate
            .saturating_mul(self.window.as_secs().max(1))
            .max(1)
    }
}

/// The error a body yields when its client sends too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the client sent less than {min_rate} bytes/s for {window:?}")]
pub struct TooSlow {
    pub min_rate: u64,
    pub window: Duration,
}

/// A body error as the registry sees it: a client that sends too slowly
/// becomes `TimedOut`, anything else a plain I/O error.
pub fn to_io(e: impl Into<axum::BoxError>) -> std::io::Error {
    let e: axum::BoxError = e.into();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(c) = cause {
        if c.is::<TooSlow>() {
            return std::io::Error::new(std::io::ErrorKind::TimedOut, e);
        }
        cause = c.source();
    }
    std::io::Error::other(e)
}

/// Request bytes received, for the access log.
#[derive(Clone, Default)]
pub struct Received(pub Arc<AtomicU64>);

/// What a handler left of the body.
enum Leftover {
    /// Not read to the end; `polled` says whether reading ever started
    /// (and so whether a `100 Continue` went out).
    Unread { body: Body, polled: bool },
    /// Failed (too slow, or broken framing): nothing more can be read.
    Broken,
}

/// The middleware: every request body passes through [`Guarded`], and the
/// response learns what became of it.
pub async fn guard(request: Request, next: Next) -> Response {
    let limits = request
        .extensions()
        .get::<BodyLimits>()
        .copied()
        .unwrap_or_default();
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let version = request.version();
    let expects_continue = request
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let received = request.extensions().get::<Received>().cloned();
    let (tx, mut rx) = oneshot::channel();
    let request = request.map(|body| Body::new(Guarded::new(body, limits, received.clone(), tx)));
    let mut resp = next.run(request).await;
    if version >= Version::HTTP_2 {
        return resp;
    }
    let keep = match rx.try_recv() {
        // The body was read to its end.
        Err(TryRecvError::Closed) => true,
        // Something still reads it: the connection cannot be reused.
        Err(TryRecvError::Empty) => false,
        Ok(Leftover::Broken) => false,
        Ok(Leftover::Unread { polled: false, .. }) if expects_continue => false,
        Ok(Leftover::Unread { body, .. }) => drain(body, &limits, received.as_ref()).await,
    };
    if !keep {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads and discards what is left of a body, within the limits; whether
/// it reached the end.
async fn drain(mut body: Body, limits: &BodyLimits, received: Option<&Received>) -> bool {
    let mut left = limits.drain_bytes;
    let read = async {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if let Some(r) = received {
                        r.0.fetch_add(n, Ordering::Relaxed);
                    }
                    match left.checked_sub(n) {
                        Some(l) => left = l,
                        None => return false,
                    }
                }
            }
        }
    };
    tokio::time::timeout(limits.drain_time, read)
        .await
        .unwrap_or(false)
}

/// A request body that hands itself back when dropped unread, counts what
/// arrives, and fails a client that sends too slowly.
struct Guarded {
    inner: Option<Body>,
    back: Option<oneshot::Sender<Leftover>>,
    polled: bool,
    broken: bool,
    limits: BodyLimits,
    received: Option<Received>,
    /// Bytes and waiting time in the current window.
    bytes: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(
        body: Body,
        limits: BodyLimits,
        received: Option<Received>,
        back: oneshot::Sender<Leftover>,
    ) -> Guarded {
        Guarded {
            inner: Some(body),
            back: Some(back),
            polled: false,
            broken: false,
            limits,
            received,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            deadline: Box::pin(tokio::time::sleep(limits.window)),
        }
    }

    /// Data arrived: account for it, and judge a finished window.
    fn arrived(&mut self, n: u64) -> Result<(), TooSlow> {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.bytes += n;
        if let Some(r) = &self.received {
            r.0.fetch_add(n, Ordering::Relaxed);
        }
        if self.waited >= self.limits.window {
            self.judge_window()?;
        }
        Ok(())
    }

    /// The server waits: arm the deadline at the end of this window of
    /// waiting; `TooSlow` once a window is over and too little came.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Result<(), TooSlow> {
        loop {
            let now = Instant::now();
            let since = *self.waiting_since.get_or_insert(now);
            let end = since + self.limits.window.saturating_sub(self.waited);
            if self.deadline.deadline() != end.into() {
                self.deadline.as_mut().reset(end.into());
            }
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.waited += now.saturating_duration_since(since);
            self.waiting_since = None;
            self.judge_window()?;
        }
    }

    fn judge_window(&mut self) -> Result<(), TooSlow> {
        if self.bytes < self.limits.window_bytes() {
            return Err(TooSlow {
                min_rate: self.limits.min_rate,
                window: self.limits.window,
            });
        }
        self.bytes = 0;
        self.waited = Duration::ZERO;
        Ok(())
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        let polled = Pin::new(inner).poll_frame(cx);
        let verdict = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.arrived(frame.data_ref().map_or(0, |d| d.len() as u64))
            }
            Poll::Ready(None) => {
                // Read to the end: nothing to hand back.
                this.inner = None;
                this.back = None;
                Ok(())
            }
            Poll::Ready(Some(Err(_))) => {
                this.broken = true;
                Ok(())
            }
            Poll::Pending => this.waiting(cx),
        };
        match verdict {
            Ok(()) => polled,
            Err(slow) => {
                this.broken = true;
                Poll::Ready(Some(Err(axum::Error::new(slow))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(back) = self.back.take() else {
            return;
        };
        let leftover = match self.inner.take() {
            Some(_) if self.broken => Leftover::Broken,
            Some(body) => Leftover::Unread {
                body,
                polled: self.polled,
            },
            None => return,
        };
        let _ = back.send(leftover);
    }
}
