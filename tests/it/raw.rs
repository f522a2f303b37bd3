//! A minimal HTTP/1.1 client over a plain TCP socket, for requests a normal
//! client will not send as written: paths with `..`, malformed framing,
//! arbitrary header values.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one raw exchange, so a server that never answers fails the test
/// instead of hanging it.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(60);

pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends one request with `Connection: close` and reads the response to the
/// end. `Content-Length` is added for a non-empty body unless `headers`
/// already frame the body. The body is written while the response is read,
/// so a server that answers early (413) is still heard.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<RawResponse, String> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut payload = head.into_bytes();
    payload.extend_from_slice(body);
    exchange(addr, payload, method == "HEAD").await
}

/// Sends `payload` exactly as given (a whole request, or several) and reads
/// until the server closes; parses the first response.
pub async fn exchange(
    addr: SocketAddr,
    payload: Vec<u8>,
    head_request: bool,
) -> Result<RawResponse, String> {
    let exchange = async move {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            // The server may answer and close before taking the whole body.
            let _ = wr.write_all(&payload).await;
            let _ = wr.flush().await;
            wr
        });
        let mut raw = Vec::new();
        let read = rd.read_to_end(&mut raw).await;
        let _ = writer.await;
        if let Err(e) = read {
            if raw.is_empty() {
                return Err(format!("read: {e}"));
            }
        }
        parse(&raw, head_request)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .map_err(|_| format!("no complete response within {EXCHANGE_LIMIT:?}"))?
}

fn parse(raw: &[u8], head_request: bool) -> Result<RawResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let text = std::str::from_utf8(&raw[..end]).map_err(|e| format!("header bytes: {e}"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(v.trim()).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    let rest = &raw[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if head_request {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line unterminated")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err("chunk truncated".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
