//! Lingering close: a connection the server ends keeps reading (and
//! discarding) for a short while after it has sent its last byte.
//!
//! Closing a TCP socket whose receive queue still holds data, or that
//! receives data afterwards, makes the kernel answer with a reset. A reset
//! can reach the client before it has read the response the server just
//! sent, and the client then reports a broken connection instead of the
//! answer (a 413 or 401 to an upload still streaming its body, say). So
//! when the server closes first, it half-closes (FIN) and reads until the
//! client closes too, or until the linger time runs out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most bytes a closing connection reads before giving up on a clean close.
const LINGER_BYTES: u64 = 64 << 20;

/// A stream that lingers when dropped before its peer closed.
pub struct Linger<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<T>,
    /// The peer closed its side: nothing more can arrive, so no reset.
    peer_closed: bool,
    linger: Duration,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<T> {
    pub fn new(inner: T, linger: Duration) -> Linger<T> {
        Linger {
            inner: Some(inner),
            peer_closed: false,
            linger,
        }
    }

    pub fn get_ref(&self) -> &T {
        self.inner.as_ref().expect("present until drop")
    }

    fn io(&mut self) -> &mut T {
        self.inner.as_mut().expect("present until drop")
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(this.io()).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                this.peer_closed = true;
            }
            Poll::Ready(Err(_)) => this.peer_closed = true,
            _ => {}
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<T> {
    fn drop(&mut self) {
        let Some(mut io) = self.inner.take() else {
            return;
        };
        if self.peer_closed || self.linger.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let linger = self.linger;
        runtime.spawn(async move {
            let drain = async {
                // A second shutdown after the server's own is harmless.
                let _ = io.shutdown().await;
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut (&mut io).take(LINGER_BYTES), &mut sink).await;
            };
            let _ = tokio::time::timeout(linger, drain).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// The server answers and closes while the client is still sending.
    /// The client's writes keep succeeding (a reset would fail them, and
    /// curl and proxies give up on a failed write), and it then reads the
    /// whole answer.
    #[tokio::test]
    async fn a_closing_server_lets_the_client_finish_and_read_its_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = Linger::new(tcp, Duration::from_secs(5));
            let mut first = [0u8; 16];
            conn.read_exact(&mut first).await.unwrap();
            conn.write_all(b"refused").await.unwrap();
            conn.shutdown().await.unwrap();
            // Dropped with unread bytes queued and more on the way.
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let chunk = vec![7u8; 64 << 10];
        for i in 0..256 {
            let sent = client.write_all(&chunk).await;
            assert!(sent.is_ok(), "write {i} failed: {sent:?}");
        }
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"refused");
        server.await.unwrap();
    }
}
