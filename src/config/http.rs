//! Limits on client connections and request bodies: what keeps a slow,
//! idle or stalled client from holding a connection or an upload session,
//! and how much of an unread body the node drains to keep a connection.
//! The defaults let a push over a slow link through.

use std::time::Duration;

use clap::Args;

use super::file::FileConfig;
use crate::api::body::BodyLimits;
use crate::conn::ConnLimits;

#[derive(Debug, Default, Args)]
pub struct HttpArgs {
    /// Seconds a client connection may take to send a whole request head,
    /// counted from when it opens or its previous response ends; idle
    /// keep-alive connections close after this long too. [default: 30]
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<u64>,

    /// Request bodies must bring at least --min-body-rate bytes per second
    /// over every this many seconds the node waits for them, and one that
    /// sends nothing for this long fails: 408, and an upload session keeps
    /// what it held before that request. [default: 60]
    #[arg(long, env = "BERTH_BODY_TIMEOUT", value_name = "SECONDS")]
    pub body_timeout: Option<u64>,

    /// Least bytes per second a request body must bring, measured over
    /// --body-timeout. [default: 1024]
    #[arg(long, env = "BERTH_MIN_BODY_RATE", value_name = "BYTES")]
    pub min_body_rate: Option<u64>,

    /// Most bytes of a body the node reads and discards after answering
    /// early (a refused upload, say) to keep the connection open for the
    /// client's next request; past it, or past --drain-timeout, the answer
    /// says `Connection: close`. [default: 262144]
    #[arg(long, env = "BERTH_DRAIN_LIMIT", value_name = "BYTES")]
    pub drain_limit: Option<u64>,

    /// Seconds the node spends draining an unread body (see
    /// --drain-limit). [default: 1]
    #[arg(long, env = "BERTH_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,

    /// Seconds a connection may move no byte either way while the node
    /// waits on it before it is closed: a client that stopped reading its
    /// answer, an idle HTTP/2 connection. [default: 300]
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Seconds a connection the node closes keeps reading what the client
    /// still sends, so the client reads the answer rather than a reset.
    /// [default: 2]
    #[arg(long, env = "BERTH_LINGER", value_name = "SECONDS")]
    pub linger: Option<u64>,
}

impl HttpArgs {
    pub(super) fn resolve(self, file: &FileConfig) -> (ConnLimits, BodyLimits) {
        let secs = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).map(Duration::from_secs).unwrap_or(default)
        };
        let (conn, body) = (ConnLimits::default(), BodyLimits::default());
        let conn = ConnLimits {
            header_timeout: secs(
                self.header_timeout,
                file.header_timeout,
                conn.header_timeout,
            )
            .max(Duration::from_secs(1)),
            idle_timeout: secs(self.idle_timeout, file.idle_timeout, conn.idle_timeout)
                .max(Duration::from_secs(1)),
            linger: secs(self.linger, file.linger, conn.linger),
        };
        let body = BodyLimits {
            drain_bytes: self
                .drain_limit
                .or(file.drain_limit)
                .unwrap_or(body.drain_bytes),
            drain_time: secs(self.drain_timeout, file.drain_timeout, body.drain_time),
            min_rate: self
                .min_body_rate
                .or(file.min_body_rate)
                .unwrap_or(body.min_rate),
            window: secs(self.body_timeout, file.body_timeout, body.window)
                .max(Duration::from_secs(1)),
        };
        (conn, body)
    }
}
