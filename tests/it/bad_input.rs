//! A table of malformed requests. Each must get its 4xx status and OCI error
//! code, never a 5xx, and none may disturb the node: afterwards it still
//! serves pushes and pulls, and the upload session the table aimed at is
//! intact.

use reqwest::header::{LOCATION, RANGE};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::raw;

const REPO: &str = "good";
const ZZ: &str = "sha256:zz";
const MD5: &str = "md5:d41d8cd98f00b204e9800998ecf8427e";
const UPPER: &str = "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
/// Bytes the fixture's upload session holds.
const SESSION_LEN: usize = 10;

fn short() -> String {
    format!("sha256:{}", "a".repeat(63))
}

fn sha512_short() -> String {
    format!("sha512:{}", "b".repeat(64))
}

/// One malformed request and what it must get.
pub struct Row {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    /// The OCI error code; empty for an answer that is not an error (a
    /// range ignored, say).
    pub code: &'static str,
    /// A response header that must be present with this value.
    expect: Option<(&'static str, String)>,
    /// The request's exact bytes, for framing no client library sends.
    raw: Option<Vec<u8>>,
}

pub fn row(method: &'static str, path: impl Into<String>, status: u16, code: &'static str) -> Row {
    Row {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        status,
        code,
        expect: None,
        raw: None,
    }
}

/// A row sent as the exact request bytes `head` (then `body`).
fn raw_row(head: String, body: &str, status: u16, code: &'static str) -> Row {
    let method = head.split(' ').next().unwrap_or("GET");
    let method = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("GET");
    let mut r = row(method, head.lines().next().unwrap_or(""), status, code);
    r.raw = Some([head.as_bytes(), body.as_bytes()].concat());
    r
}

impl Row {
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Row {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Row {
        self.body = body.into();
        self
    }

    fn expect(mut self, name: &'static str, value: impl Into<String>) -> Row {
        self.expect = Some((name, value.into()));
        self
    }

    /// Whether this row's request carries a body.
    pub fn has_body(&self) -> bool {
        self.raw.is_none() && !self.body.is_empty()
    }

    /// Whether the row sets its own body framing (`Transfer-Encoding`).
    pub fn frames_body(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    }

    /// The same request with `n` bytes of body instead of its own; any 4xx
    /// answer will do (status 0).
    pub fn with_body_len(&self, n: usize) -> Row {
        Row {
            method: self.method,
            path: self.path.clone(),
            headers: self.headers.clone(),
            body: vec![b'b'; n],
            status: 0,
            code: self.code,
            expect: None,
            raw: None,
        }
    }

    pub fn describe(&self) -> String {
        let path: String = self.path.chars().take(120).collect();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.chars().take(40).collect::<String>()))
            .collect();
        format!(
            "{} {path} {headers:?} ({} body bytes)",
            self.method,
            self.body.len()
        )
    }
}

/// What the table's requests refer to: an image and an open upload session
/// in [`REPO`].
pub struct Fixture {
    image: PushedImage,
    /// Path of an upload session holding [`SESSION_LEN`] bytes.
    upload: String,
    upload_id: String,
    session_bytes: Vec<u8>,
}

impl Fixture {
    pub async fn new(node: &TestNode) -> Fixture {
        let image = node.push_image(REPO, "v1").await;
        let session_bytes = random_blob(SESSION_LEN);
        let location = node.start_upload(REPO).await;
        let resp = send(node.patch(&location).body(session_bytes.clone())).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let location = header(&resp, LOCATION.as_str());
        let upload = location
            .strip_prefix(&format!("http://{}", node.addr()))
            .unwrap_or(&location)
            .to_owned();
        let upload_id = upload_id(&upload);
        Fixture {
            image,
            upload,
            upload_id,
            session_bytes,
        }
    }

    fn blob(&self) -> &Blob {
        &self.image.layers[0].0
    }

    /// A valid manifest over the fixture's blobs.
    fn manifest(&self) -> Vec<u8> {
        self.image.manifest.clone()
    }

    /// The upload path with a query appended.
    fn upload_with(&self, query: &str) -> String {
        let sep = if self.upload.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.upload)
    }
}

fn name_rows(f: &Fixture) -> Vec<Row> {
    let blob = &f.blob().digest;
    let long = "a".repeat(256);
    let split_long = format!("{}/{}", "a".repeat(128), "b".repeat(128));
    vec![
        row("GET", "/v2/../x/tags/list", 400, "NAME_INVALID"),
        row("GET", "/v2/a/../b/manifests/latest", 400, "NAME_INVALID"),
        row("GET", "/v2/./a/tags/list", 400, "NAME_INVALID"),
        row("GET", "/v2/Upper/tags/list", 400, "NAME_INVALID"),
        row("GET", "/v2/good/Sub/manifests/v1", 400, "NAME_INVALID"),
        row("GET", format!("/v2/{long}/tags/list"), 400, "NAME_INVALID"),
        row(
            "GET",
            format!("/v2/{split_long}/manifests/v1"),
            400,
            "NAME_INVALID",
        ),
        row("GET", "/v2/a//b/tags/list", 400, "NAME_INVALID"),
        row("GET", "/v2/a-/tags/list", 400, "NAME_INVALID"),
        row("GET", "/v2/a//tags/list", 400, "NAME_INVALID"),
        row("POST", "/v2/a./blobs/uploads/", 400, "NAME_INVALID"),
        row("PUT", "/v2/_a/manifests/v1", 400, "NAME_INVALID").body(f.manifest()),
        row("GET", "/v2/a%2Fb/tags/list", 400, "NAME_INVALID"),
        row(
            "GET",
            format!("/v2/a___b/blobs/{blob}"),
            400,
            "NAME_INVALID",
        ),
        row("GET", "/v2/a%20b/tags/list", 400, "NAME_INVALID"),
        row(
            "POST",
            format!("/v2/{REPO}/blobs/uploads/?mount={blob}&from=..%2Fx"),
            400,
            "NAME_INVALID",
        ),
        row(
            "POST",
            format!("/v2/{REPO}/blobs/uploads/?mount={blob}&from=Good"),
            400,
            "NAME_INVALID",
        ),
    ]
}

fn digest_rows(f: &Fixture) -> Vec<Row> {
    let r = REPO;
    let other = sha256(b"other");
    vec![
        row("GET", format!("/v2/{r}/blobs/{ZZ}"), 400, "DIGEST_INVALID"),
        row(
            "GET",
            format!("/v2/{r}/blobs/{}", short()),
            400,
            "DIGEST_INVALID",
        ),
        row("GET", format!("/v2/{r}/blobs/{MD5}"), 400, "DIGEST_INVALID"),
        row(
            "GET",
            format!("/v2/{r}/blobs/{UPPER}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "GET",
            format!("/v2/{r}/blobs/{}", sha512_short()),
            400,
            "DIGEST_INVALID",
        ),
        row("HEAD", format!("/v2/{r}/blobs/{ZZ}"), 400, "DIGEST_INVALID"),
        row(
            "DELETE",
            format!("/v2/{r}/blobs/{}", short()),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "GET",
            format!("/v2/{r}/manifests/{ZZ}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "HEAD",
            format!("/v2/{r}/manifests/{MD5}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "PUT",
            format!("/v2/{r}/manifests/{UPPER}"),
            400,
            "DIGEST_INVALID",
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(f.manifest()),
        row(
            "DELETE",
            format!("/v2/{r}/manifests/{}", short()),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "GET",
            format!("/v2/{r}/referrers/{ZZ}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "GET",
            format!("/v2/{r}/referrers/{}", sha512_short()),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "GET",
            format!("/v2/{r}/referrers/v1"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/?digest={ZZ}"),
            400,
            "DIGEST_INVALID",
        )
        .body("x"),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/?digest={MD5}"),
            400,
            "DIGEST_INVALID",
        )
        .body("x"),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/?mount={ZZ}&from={r}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/?mount={UPPER}"),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "PUT",
            f.upload_with(&format!("digest={ZZ}")),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "PUT",
            f.upload_with(&format!("digest={UPPER}")),
            400,
            "DIGEST_INVALID",
        ),
        row("PUT", f.upload_with("digest="), 400, "DIGEST_INVALID"),
        row("PUT", f.upload.clone(), 400, "DIGEST_INVALID"),
        // Well-formed digests that do not match the content.
        row(
            "PUT",
            f.upload_with(&format!("digest={other}")),
            400,
            "DIGEST_INVALID",
        ),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/?digest={}", sha256(b"x")),
            400,
            "DIGEST_INVALID",
        )
        .body("y"),
        row(
            "PUT",
            format!("/v2/{r}/manifests/{other}"),
            400,
            "DIGEST_INVALID",
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(f.manifest()),
    ]
}

fn manifest_rows(f: &Fixture) -> Vec<Row> {
    let put = |tag: &str| format!("/v2/{REPO}/manifests/{tag}");
    let good = f.manifest();
    let config = &f.image.config;
    let mut bad_digest_config = config.descriptor();
    bad_digest_config["digest"] = json!(ZZ);
    let missing_blob = Blob::new(OCI_LAYER, sha256(b"never pushed"), 12);
    let missing_child = Blob::new(OCI_MANIFEST, sha256(b"no such manifest"), 16);
    let huge = image_manifest(
        config,
        &[],
        json!({"annotations": {"x": "x".repeat(5 << 20)}}),
    );
    let json_body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    vec![
        row("PUT", put("trunc"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(good[..good.len() / 2].to_vec()),
        row("PUT", put("notjson"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body("this is not json"),
        row("PUT", put("empty"), 400, "MANIFEST_INVALID").header("Content-Type", OCI_MANIFEST),
        row("PUT", put("array"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body("[]"),
        row("PUT", put("schema1"), 400, "MANIFEST_INVALID")
            .header("Content-Type", "application/vnd.docker.distribution.manifest.v1+json")
            .body(json_body(json!({"schemaVersion": 1, "name": REPO, "tag": "schema1", "fsLayers": []}))),
        row("PUT", put("noconfig"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(json_body(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}))),
        row("PUT", put("nochildren"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_INDEX)
            .body(json_body(json!({"schemaVersion": 2, "mediaType": OCI_INDEX}))),
        row("PUT", put("mismatch"), 400, "MANIFEST_INVALID")
            .header("Content-Type", DOCKER_MANIFEST)
            .body(good.clone()),
        row("PUT", put("texttype"), 400, "MANIFEST_INVALID").body(json_body(json!({
            "schemaVersion": 2, "mediaType": "text/plain", "config": config.descriptor(), "layers": [],
        }))),
        row("PUT", put("baddesc"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(json_body(json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": bad_digest_config, "layers": [],
            }))),
        row("PUT", put("-bad"), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(good.clone()),
        row("PUT", put(&"t".repeat(129)), 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(good.clone()),
        row("PUT", put("unknownblob"), 400, "MANIFEST_BLOB_UNKNOWN")
            .header("Content-Type", OCI_MANIFEST)
            .body(image_manifest(config, &[missing_blob], json!({}))),
        row("PUT", put("unknownchild"), 400, "MANIFEST_BLOB_UNKNOWN")
            .header("Content-Type", OCI_INDEX)
            .body(index_manifest(&[missing_child], json!({}))),
        row("PUT", put("huge"), 413, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(huge),
        row("GET", put("nope"), 404, "MANIFEST_UNKNOWN"),
        row("GET", format!("/v2/{REPO}/manifests/{}", sha256(b"nope")), 404, "MANIFEST_UNKNOWN"),
    ]
}

fn range_rows(f: &Fixture) -> Vec<Row> {
    let blob = f.blob();
    let path = format!("/v2/{REPO}/blobs/{}", blob.digest);
    let size = blob.size;
    let etag = format!("\"{}\"", blob.digest);
    let unsatisfiable = |range: String| {
        row("GET", path.clone(), 416, "SIZE_INVALID")
            .header("Range", range)
            .expect("content-range", format!("bytes */{size}"))
    };
    // RFC 9110: a Range berth does not serve is ignored, not refused.
    let whole = |range: &str| {
        row("GET", path.clone(), 200, "")
            .header("Range", range)
            .expect("content-length", size.to_string())
    };
    vec![
        unsatisfiable(format!("bytes={size}-")),
        unsatisfiable(format!("bytes={}-{}", size + 5, size + 9)),
        unsatisfiable("bytes=-0".into()),
        whole("bytes=x-y"),
        whole("bytes=0-1,3-4"),
        whole("items=0-1"),
        whole("bytes=-"),
        whole("bytes=5-2"),
        // If-Range: the blob's own tag keeps the range, another drops it.
        row("GET", path.clone(), 206, "")
            .header("Range", "bytes=0-0")
            .header("If-Range", etag)
            .expect("content-range", format!("bytes 0-0/{size}")),
        whole("bytes=0-0").header("If-Range", "\"sha256:other\""),
        whole("bytes=0-0").header("If-Range", "Fri, 04 Dec 2026 17:00:00 GMT"),
        // HEAD has no ranges.
        row("HEAD", path.clone(), 200, "").header("Range", format!("bytes={size}-")),
    ]
}

/// RFC 9112 framing: `Host`, conflicting lengths, target and header limits.
fn framing_rows(_: &Fixture) -> Vec<Row> {
    let start = format!("/v2/{REPO}/blobs/uploads/");
    vec![
        raw_row("GET /v2/ HTTP/1.1\r\n\r\n".into(), "", 400, "UNSUPPORTED")
            .expect("connection", "close"),
        raw_row(
            "GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            "",
            400,
            "UNSUPPORTED",
        ),
        raw_row(
            "GET /v2/ HTTP/1.1\r\nHost: a b\r\n\r\n".into(),
            "",
            400,
            "UNSUPPORTED",
        ),
        // HTTP/1.0 needs no Host.
        raw_row("GET /v2/ HTTP/1.0\r\n\r\n".into(), "", 200, ""),
        // Both lengths: read by the chunked framing alone, and the
        // connection ends after the answer, so nothing rides behind it.
        raw_row(
            format!(
                "POST {start} HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\
                 Transfer-Encoding: chunked\r\n\r\n"
            ),
            "0\r\n\r\nGET /v2/_catalog HTTP/1.1\r\nHost: a\r\n\r\n",
            202,
            "",
        )
        .expect("connection", "close"),
        raw_row(
            "POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\
             Content-Length: 2\r\n\r\n"
                .into(),
            "ab",
            400,
            "",
        ),
        raw_row(
            "POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"
                .into(),
            "",
            400,
            "",
        ),
        row(
            "GET",
            format!("/v2/{}/tags/list", "a".repeat(9000)),
            414,
            "UNSUPPORTED",
        ),
        // Past what the parser buffers: refused by it, still with an answer.
        raw_row(
            format!(
                "GET /v2/{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "a".repeat(600 << 10)
            ),
            "",
            431,
            "",
        ),
        raw_row(
            format!(
                "GET /v2/ HTTP/1.1\r\nHost: a\r\nX-Filler: {}\r\n\r\n",
                "f".repeat(600 << 10)
            ),
            "",
            431,
            "",
        ),
    ]
}

fn upload_rows(f: &Fixture) -> Vec<Row> {
    let up = f.upload.clone();
    let in_order = format!("0-{}", SESSION_LEN - 1);
    let unknown =
        format!("/v2/{REPO}/blobs/uploads/00000000000000010123456789abcdef0123456789abcdef");
    let elsewhere = format!("/v2/other/blobs/uploads/{}", f.upload_id);
    let digest_x = format!("digest={}", sha256(b"x"));
    let with_x = |p: &str| format!("{p}?{digest_x}");
    vec![
        // Malformed Content-Range.
        row("PATCH", up.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "5")
            .body("x"),
        row("PATCH", up.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "9-3")
            .body("x"),
        row("PATCH", up.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "abc")
            .body("x"),
        row("PATCH", up.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header(
                "Content-Range",
                format!("{SESSION_LEN}-{}", SESSION_LEN + 9),
            )
            .body("12345"),
        // Out of order: 416 with the offset to resume from.
        row("PATCH", up.clone(), 416, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "0-4")
            .body("12345")
            .expect("range", in_order.clone()),
        row("PATCH", up.clone(), 416, "BLOB_UPLOAD_INVALID")
            .header(
                "Content-Range",
                format!("{}-{}", SESSION_LEN + 10, SESSION_LEN + 14),
            )
            .body("12345")
            .expect("range", in_order.clone()),
        row("PUT", f.upload_with(&digest_x), 416, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "3-4")
            .body("12")
            .expect("range", in_order),
        // A chunked body whose framing is broken.
        row("PATCH", up.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header("Transfer-Encoding", "chunked")
            .body("zz\r\nabc\r\n0\r\n\r\n"),
        // Unknown sessions, well-formed and not.
        row("GET", unknown.clone(), 404, "BLOB_UPLOAD_UNKNOWN"),
        row("PATCH", unknown.clone(), 404, "BLOB_UPLOAD_UNKNOWN").body("x"),
        row("PUT", with_x(&unknown), 404, "BLOB_UPLOAD_UNKNOWN").body("x"),
        row("DELETE", unknown, 404, "BLOB_UPLOAD_UNKNOWN"),
        row(
            "GET",
            format!("/v2/{REPO}/blobs/uploads/not-an-id"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        row(
            "PATCH",
            format!("/v2/{REPO}/blobs/uploads/0123456789ABCDEF0123456789ABCDEF"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .body("x"),
        row(
            "PUT",
            with_x(&format!("/v2/{REPO}/blobs/uploads/{}0", f.upload_id)),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        // The real session, under another repository.
        row("GET", elsewhere.clone(), 404, "BLOB_UPLOAD_UNKNOWN"),
        row("PATCH", elsewhere.clone(), 404, "BLOB_UPLOAD_UNKNOWN").body("x"),
        row("PUT", with_x(&elsewhere), 404, "BLOB_UPLOAD_UNKNOWN"),
        row("DELETE", elsewhere, 404, "BLOB_UPLOAD_UNKNOWN"),
    ]
}

fn misc_rows(f: &Fixture) -> Vec<Row> {
    let r = REPO;
    let blob = &f.blob().digest;
    vec![
        // Pagination.
        row(
            "GET",
            format!("/v2/{r}/tags/list?n=abc"),
            400,
            "UNSUPPORTED",
        ),
        row("GET", format!("/v2/{r}/tags/list?n=-1"), 400, "UNSUPPORTED"),
        row("GET", "/v2/_catalog?n=1.5", 400, "UNSUPPORTED"),
        row("GET", "/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        // Methods an endpoint does not support.
        row("PATCH", format!("/v2/{r}/manifests/v1"), 405, "UNSUPPORTED").body("{}"),
        row("POST", format!("/v2/{r}/manifests/v1"), 405, "UNSUPPORTED"),
        row("PUT", format!("/v2/{r}/blobs/{blob}"), 405, "UNSUPPORTED").body("x"),
        row("POST", "/v2/", 405, "UNSUPPORTED"),
        row("DELETE", format!("/v2/{r}/tags/list"), 405, "UNSUPPORTED"),
        row("PUT", "/v2/_catalog", 405, "UNSUPPORTED"),
        row(
            "POST",
            format!("/v2/{r}/blobs/uploads/{}", f.upload_id),
            405,
            "UNSUPPORTED",
        ),
        // Endpoints that do not exist.
        row("GET", format!("/v2/{r}"), 404, "UNSUPPORTED"),
        row("GET", "/v3/", 404, "UNSUPPORTED"),
        row("GET", "/", 404, "UNSUPPORTED"),
        row("GET", format!("/v2/{r}/unknown/thing"), 404, "UNSUPPORTED"),
        // Oversized request headers.
        row("GET", "/v2/", 431, "SIZE_INVALID").header("X-Filler", "f".repeat(100 << 10)),
    ]
}

/// Every row of the table.
pub fn all_rows(f: &Fixture) -> Vec<Row> {
    [
        name_rows(f),
        digest_rows(f),
        manifest_rows(f),
        range_rows(f),
        framing_rows(f),
        upload_rows(f),
        misc_rows(f),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Sends a row and returns what is wrong with the answer, if anything.
async fn check(node: &TestNode, row: &Row) -> Result<(), String> {
    let resp = match &row.raw {
        Some(bytes) => raw::exchange(node.addr(), bytes.clone(), row.method == "HEAD").await?,
        None => raw::request(node.addr(), row.method, &row.path, &row.headers, &row.body).await?,
    };
    if resp.status >= 500 {
        return Err(format!(
            "server error {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    if row.method == "HEAD" || row.code.is_empty() {
        if resp.status != row.status {
            return Err(format!("status {}, want {}", resp.status, row.status));
        }
    } else {
        check_oci_error(resp.status, &resp.headers, &resp.body, row.status, row.code)?;
    }
    if let Some((name, want)) = &row.expect {
        let got = resp.headers.get(*name).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return Err(format!("header {name} is {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_oci_errors() {
    let node = TestNode::start().await;
    let f = Fixture::new(&node).await;
    let rows = all_rows(&f);
    assert!(rows.len() >= 45, "the table has {} rows", rows.len());

    let mut failures = Vec::new();
    for row in &rows {
        if let Err(e) = check(&node, row).await {
            failures.push(format!("{}\n    {e}", row.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    assert_still_healthy(&node, &f).await;
}

/// The node serves normally after the table, and nothing the table sent
/// changed the session it aimed at or created content.
async fn assert_still_healthy(node: &TestNode, f: &Fixture) {
    let resp = send(node.get("/v2/")).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = send(node.get(&f.upload)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&resp, RANGE.as_str()),
        format!("0-{}", SESSION_LEN - 1)
    );
    let digest = sha256(&f.session_bytes);
    let resp = send(node.put(&with_digest(&f.upload, &digest))).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "the session survived the table whole"
    );

    for tag in ["trunc", "huge", "unknownblob", "mismatch", "schema1"] {
        let resp = send(node.get(&format!("/v2/{REPO}/manifests/{tag}"))).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "rejected push {tag} left nothing"
        );
    }
    let catalog = json_body(send(node.get("/v2/_catalog")).await).await;
    assert_eq!(
        catalog["repositories"],
        json!([REPO]),
        "no repository was created by bad requests"
    );

    let image = node.push_image("after/table", "v1").await;
    let resp = send(node.get("/v2/after/table/manifests/v1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().as_ref() == image.manifest.as_slice());
    for (blob, bytes) in &image.layers {
        let resp = send(node.get(&format!("/v2/after/table/blobs/{}", blob.digest))).await;
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    }
}
