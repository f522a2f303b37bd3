//! Webhooks on in-process nodes: events reach a receiver in commit order,
//! signed; one dead endpoint does not hold up another; parked events can
//! be delivered again; internal addresses need an administrator; a moved
//! base tag names exactly the images built on it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "a-signing-secret-of-some-length";

/// What a receiver got: the request headers and body.
#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

struct Shared {
    got: Mutex<Vec<Received>>,
}

/// An HTTP receiver written for the tests: it records every request and
/// answers 200.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    shared.got.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::bind("127.0.0.1:0").await
    }

    pub async fn bind(addr: &str) -> Receiver {
        let shared = Arc::new(Shared {
            got: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            addr,
            shared,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops listening, waits until the last request in flight was
    /// answered, and returns everything received: a request answered while
    /// shutting down counts.
    pub async fn stop(mut self) -> Vec<Received> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), served).await;
        }
        self.got()
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn got(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Every event of every request, in arrival order (Distribution's
    /// envelope: an `events` array per request).
    pub fn events(&self) -> Vec<Value> {
        self.got()
            .iter()
            .flat_map(|r| {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                v["events"].as_array().cloned().unwrap_or_default()
            })
            .collect()
    }

    /// Waits (bounded) until `done` holds for the events received.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Adds an endpoint through the admin API; returns the response.
async fn add(node: &TestNode, spec: Value) -> reqwest::Response {
    send(node.post("/_berth/webhooks").json(&spec)).await
}

async fn add_ok(node: &TestNode, spec: Value) {
    let resp = add(node, spec.clone()).await;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "add {spec}: {text}");
}

fn actions(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"]["repository"].as_str().unwrap().to_owned(),
                e["target"]["tag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn events_arrive_in_commit_order_signed_with_ids() {
    let node = TestNode::start().await;
    let receiver = Receiver::start().await;
    add_ok(
        &node,
        json!({"id": "ci", "url": receiver.url(), "secret": SECRET,
               "events": "push,tag.moved,delete", "allow_internal": true}),
    )
    .await;
    let first = node.push_image("acme/app", "v1").await;
    let second = node.push_image("acme/app", "v1").await;
    node.push_image("acme/lib", "latest").await;
    let resp = send(node.delete("/v2/acme/app/manifests/v1")).await;
    assert_eq!(resp.status(), 202);
    let events = receiver.wait_for("five events", |e| e.len() >= 5).await;
    assert_eq!(
        actions(&events),
        [
            ("push", "acme/app", "v1"),
            ("push", "acme/app", "v1"),
            ("tag.moved", "acme/app", "v1"),
            ("push", "acme/lib", "latest"),
            ("delete", "acme/app", "v1"),
        ]
        .map(|(a, r, t)| (a.to_owned(), r.to_owned(), t.to_owned()))
    );
    assert_eq!(events[0]["target"]["digest"], first.digest);
    assert_eq!(events[1]["target"]["digest"], second.digest);
    assert_eq!(events[2]["berth"]["previous"], first.digest);
    assert_eq!(events[0]["request"]["method"], "PUT");
    // A single image's platform comes from its configuration.
    assert_eq!(events[0]["berth"]["platforms"], json!(["linux/amd64"]));
    // Ids are ordered and unique.
    let ids: Vec<(u64, u64)> = events
        .iter()
        .map(|e| {
            let (i, p) = e["id"].as_str().unwrap().split_once('-').unwrap();
            (i.parse().unwrap(), p.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // The node counts what it delivered.
    let metrics = send(node.get("/metrics")).await.text().await.unwrap();
    let delivered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_webhook_events_delivered_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(delivered.is_some_and(|d| d >= 5.0), "{metrics}");
    // Every request is signed over its exact body, and a changed body or
    // key is caught by the receiver's check.
    let now = berth::storage::now_secs();
    for r in receiver.got() {
        let header = r.headers["berth-signature"].to_str().unwrap().to_owned();
        assert_eq!(
            berth::events::sign::verify(SECRET, &header, &r.body, now),
            Ok(())
        );
        let mut forged = r.body.clone();
        forged[0] = b' ';
        assert!(berth::events::sign::verify(SECRET, &header, &forged, now).is_err());
        assert!(
            berth::events::sign::verify("another-secret-entirely", &header, &r.body, now).is_err()
        );
        assert_eq!(
            r.headers["content-type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
    }
}

#[tokio::test]
async fn a_dead_endpoint_delays_no_other_and_parked_events_can_be_redelivered() {
    let node = TestNode::start().await;
    let live = Receiver::start().await;
    // A port nobody listens on, until later.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    add_ok(
        &node,
        json!({"id": "dead", "url": format!("http://127.0.0.1:{dead_port}/hook"),
               "attempts": 3, "backoff_ms": 200, "allow_internal": true}),
    )
    .await;
    add_ok(
        &node,
        json!({"id": "live", "url": live.url(), "allow_internal": true}),
    )
    .await;
    for i in 0..5 {
        let started = Instant::now();
        node.push_image("iso/app", &format!("t{i}")).await;
        live.wait_for("the push", |e| e.len() > i).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the live endpoint waited on the dead one: {:?}",
            started.elapsed()
        );
    }
    // The dead endpoint gives up on each push after three attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let d = json_body(send(node.get("/_berth/webhooks/dead/deliveries")).await).await;
        if d["parked"].as_array().map_or(0, Vec::len) == 5 {
            break d;
        }
        assert!(Instant::now() < deadline, "not parked: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Three attempts for each request (events that waited are sent
    // together), every one refused, and each parked event names the last.
    let attempts = parked["attempts"].as_array().unwrap();
    assert!(
        attempts.len() >= 6 && attempts.len() % 3 == 0,
        "{attempts:?}"
    );
    assert!(attempts
        .iter()
        .all(|a| a["status"].is_null() && a["error"].is_string()));
    for p in parked["parked"].as_array().unwrap() {
        let error = p["last"]["error"].as_str().unwrap_or("");
        assert!(error.contains("Connection refused"), "{p}");
    }
    // Redelivery, once the receiver is up.
    let revived = Receiver::bind(&format!("127.0.0.1:{dead_port}")).await;
    let resp = send(
        node.post("/_berth/webhooks/dead/redeliver")
            .json(&json!({})),
    )
    .await;
    assert_eq!(json_body(resp).await["queued"], 5);
    let got = revived
        .wait_for("the parked events", |e| e.len() >= 5)
        .await;
    let mut tags: Vec<&str> = got
        .iter()
        .map(|e| e["target"]["tag"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = json_body(send(node.get("/_berth/webhooks/dead/deliveries")).await).await;
        if d["parked"].as_array().map_or(0, Vec::len) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still parked: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pulls_reach_only_endpoints_that_ask_for_them() {
    let node = TestNode::start().await;
    let pulls = Receiver::start().await;
    let pushes = Receiver::start().await;
    add_ok(
        &node,
        json!({"id": "pulls", "url": pulls.url(), "events": "pull", "allow_internal": true}),
    )
    .await;
    add_ok(
        &node,
        json!({"id": "pushes", "url": pushes.url(), "allow_internal": true}),
    )
    .await;
    let image = node.push_image("pull/app", "v1").await;
    // The node notices the subscription within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let head = send(
        node.head("/v2/pull/app/manifests/v1")
            .header("accept", OCI_MANIFEST),
    )
    .await;
    assert_eq!(head.status(), 200);
    let get = send(
        node.get("/v2/pull/app/manifests/v1")
            .header("accept", OCI_MANIFEST),
    )
    .await;
    assert_eq!(get.status(), 200);
    let got = pulls.wait_for("the pull", |e| !e.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if pulls.events().len() > got.len() {
        pulls.events()
    } else {
        got
    };
    assert_eq!(got.len(), 1, "a HEAD is no pull: {got:#?}");
    let e = &got[0];
    assert_eq!(e["action"], "pull");
    assert_eq!(e["target"]["digest"], image.digest);
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(e["request"]["method"], "GET");
    assert!(e["id"].as_str().unwrap().starts_with("pull-"), "{e}");
    assert_eq!(e["berth"]["platforms"], json!(["linux/amd64"]));
    // The other endpoint got the push, and no pull.
    let other = pushes.wait_for("the push", |e| !e.is_empty()).await;
    assert!(other.iter().all(|e| e["action"] != "pull"), "{other:#?}");
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let node = TestNode::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
    ] {
        let resp = add(&node, json!({"id": "x", "url": url})).await;
        let body = assert_oci_error(resp, 400, "UNSUPPORTED").await;
        let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("allow-internal"), "{url}: {message}");
    }
    let listed = json_body(send(node.get("/_berth/webhooks")).await).await;
    assert_eq!(listed, json!([]));
    add_ok(
        &node,
        json!({"id": "x", "url": "http://127.0.0.1:9/hook", "allow_internal": true}),
    )
    .await;
}

#[tokio::test]
async fn a_moved_base_names_exactly_the_images_built_on_it() {
    let node = TestNode::start().await;
    let receiver = Receiver::start().await;
    add_ok(
        &node,
        json!({"id": "rebuild", "url": receiver.url(), "events": "base.updated", "allow_internal": true}),
    )
    .await;
    // The base: config and two layers.
    let base = node.push_image("base/os", "stable").await;
    let base_layers: Vec<Blob> = base.layers.iter().map(|(b, _)| b.clone()).collect();
    // Built on it by layers: the base's layers, then its own.
    let extra = random_blob(900);
    let mut on_layers = base_layers.clone();
    for (_, bytes) in &base.layers {
        node.push_blob("acme/web", bytes).await;
    }
    on_layers.push(Blob::new(
        OCI_LAYER,
        node.push_blob("acme/web", &extra).await,
        extra.len(),
    ));
    let web = push_with_config(&node, "acme/web", "v1", &on_layers, json!({})).await;
    // Built on it by annotation, with unrelated layers.
    let own = random_blob(700);
    let own_layers = vec![Blob::new(
        OCI_LAYER,
        node.push_blob("acme/api", &own).await,
        own.len(),
    )];
    let api = push_with_config(
        &node,
        "acme/api",
        "v1",
        &own_layers,
        json!({"annotations": {
            "org.opencontainers.image.base.name": "base/os:stable",
            "org.opencontainers.image.base.digest": base.digest,
        }}),
    )
    .await;
    // Unrelated: shares only the base's first layer.
    let other = random_blob(600);
    node.push_blob("acme/other", &base.layers[0].1).await;
    let other_layers = vec![
        base_layers[0].clone(),
        Blob::new(
            OCI_LAYER,
            node.push_blob("acme/other", &other).await,
            other.len(),
        ),
    ];
    push_with_config(&node, "acme/other", "v1", &other_layers, json!({})).await;

    let listed =
        json_body(send(node.get("/_berth/dependents?repository=base/os&reference=stable")).await)
            .await;
    let mut names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}@{} {}",
                d["repository"].as_str().unwrap(),
                d["digest"].as_str().unwrap(),
                d["matched"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("acme/api@{api} annotation"),
            format!("acme/web@{web} layers")
        ]
    );
    // The base moves: exactly the two get base.updated.
    let moved = node.push_image("base/os", "stable").await;
    let events = receiver.wait_for("two triggers", |e| e.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = if receiver.events().len() > events.len() {
        receiver.events()
    } else {
        events
    };
    assert_eq!(events.len(), 2, "{events:#?}");
    let mut got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let b = &e["berth"]["base"];
            assert_eq!(b["repository"], "base/os");
            assert_eq!(b["tag"], "stable");
            assert_eq!(b["previous"], base.digest);
            assert_eq!(b["current"], moved.digest);
            (
                e["target"]["repository"].as_str().unwrap().to_owned(),
                e["target"]["digest"].as_str().unwrap().to_owned(),
                e["target"]["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("acme/api".to_owned(), api, "v1".to_owned()),
            ("acme/web".to_owned(), web, "v1".to_owned()),
        ]
    );
}

/// Pushes an image with a fresh config and `layers` (already uploaded),
/// `extra` merged into the manifest; returns its digest.
async fn push_with_config(
    node: &TestNode,
    repo: &str,
    tag: &str,
    layers: &[Blob],
    extra: Value,
) -> String {
    let config_bytes =
        format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#).into_bytes();
    let config = Blob::new(
        OCI_CONFIG,
        node.push_blob(repo, &config_bytes).await,
        config_bytes.len(),
    );
    let manifest = image_manifest(&config, layers, extra);
    node.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    sha256(&manifest)
}
