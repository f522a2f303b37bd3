//! Webhook delivery under faults, on three real `berth serve` processes:
//! 500 pushes spread over the nodes, the leader killed with SIGKILL in the
//! middle, the receiver down for 30 s; then a kill -9 of the whole cluster
//! and a restart. Every acknowledged push must reach the receiver, in
//! commit order per repository, with duplicates only as resends of the
//! same id after the failover; after the full restart nothing already
//! delivered is sent again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::processes::{Formation, ProcessCluster};
use crate::webhooks::{Received, Receiver};

const PUSHES: usize = 500;
const REPOS: usize = 5;
const OUTAGE: Duration = Duration::from_secs(30);
const DELIVERED_WITHIN: Duration = Duration::from_secs(120);

fn repo(i: usize) -> String {
    format!("events/r{}", i % REPOS)
}

/// The manifest of push `i`: the shared config, made unique by `i`.
fn manifest(config: &Blob, i: usize) -> Vec<u8> {
    image_manifest(
        config,
        &[],
        json!({ "annotations": { "n": i.to_string() } }),
    )
}

/// Uploads the config blob into every repository, through node 0.
async fn push_configs(cluster: &ProcessCluster) -> Blob {
    let bytes = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let digest = sha256(&bytes);
    for r in 0..REPOS {
        let url = format!("{}/v2/{}/blobs/uploads/", cluster.base(0), repo(r));
        let resp = send(cluster.http.post(url)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let location = header(&resp, LOCATION.as_str());
        let url = with_digest(&format!("{}{location}", cluster.base(0)), &digest);
        let resp = send(cluster.http.put(url).body(bytes.clone())).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    Blob::new(OCI_CONFIG, digest, bytes.len())
}

/// Pushers sharing a counter; each push goes to node `i % 3`, or to the
/// next node while that one is down. Returns the acknowledged pushes as
/// (i, digest).
async fn pusher(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    config: Blob,
    next: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
) -> Vec<(usize, String)> {
    let mut acked = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= PUSHES {
            return acked;
        }
        let body = manifest(&config, i);
        for attempt in 0..3 {
            let base = &bases[(i + attempt) % bases.len()];
            let sent = http
                .put(format!("{base}/v2/{}/manifests/t{i}", repo(i)))
                .header(CONTENT_TYPE, OCI_MANIFEST)
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                acked.push((i, sha256(&body)));
                break;
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
}

/// An event's id as a sortable pair.
fn id_of(e: &Value) -> (u64, u64) {
    let (i, p) = e["id"].as_str().unwrap().split_once('-').unwrap();
    (i.parse().unwrap(), p.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_push_is_delivered_in_order_across_a_leader_kill_and_a_receiver_outage() {
    let mut cluster = ProcessCluster::start(3, Formation::Expect, 5).await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let spec = json!({
        "id": "durable", "url": receiver.url(), "events": "push",
        "attempts": 100, "backoff_ms": 200, "max_backoff_ms": 2000,
        "allow_internal": true,
    });
    let resp = send(
        cluster
            .http
            .post(format!("{}/_berth/webhooks", cluster.base(1)))
            .json(&spec),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let config = push_configs(&cluster).await;

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let bases = Arc::new((0..3).map(|i| cluster.base(i)).collect::<Vec<_>>());
    let pushers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(pusher(
                cluster.http.clone(),
                bases.clone(),
                config.clone(),
                next.clone(),
                done.clone(),
            ))
        })
        .collect();
    let wait_done = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            while done.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "pushes stalled before {n}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // The receiver goes down a fifth of the way in, the leader dies at
    // two fifths; the receiver is back 30 s after it went.
    wait_done(PUSHES / 5).await;
    let before_outage = receiver.stop().await;
    let down_at = Instant::now();
    wait_done(2 * PUSHES / 5).await;
    let victim = cluster.leader().await;
    cluster.kill9(victim);
    let killed_at = Instant::now();
    let mut acked = Vec::new();
    for p in pushers {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(300), p)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let receiver = Receiver::bind(&format!("127.0.0.1:{port}")).await;
    let back_at = Instant::now();
    eprintln!(
        "{} of {PUSHES} pushes acknowledged; receiver down {:?}",
        acked.len(),
        back_at - down_at
    );
    assert!(
        acked.len() > PUSHES * 9 / 10,
        "too few pushes: {}",
        acked.len()
    );

    // Everything acknowledged arrives.
    let wanted: BTreeMap<String, String> = acked
        .iter()
        .map(|(i, d)| (format!("{}:t{i}", repo(*i)), d.clone()))
        .collect();
    let deadline = Instant::now() + DELIVERED_WITHIN;
    let all = |receiver: &Receiver| {
        let mut got = before_outage.clone();
        got.extend(receiver.got());
        got
    };
    let events = loop {
        let events = events_of(&all(&receiver));
        let seen: HashMap<String, String> = events
            .iter()
            .map(|e| {
                let t = &e["target"];
                (
                    format!(
                        "{}:{}",
                        t["repository"].as_str().unwrap(),
                        t["tag"].as_str().unwrap()
                    ),
                    t["digest"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let missing: Vec<&String> = wanted
            .keys()
            .filter(|k| seen.get(*k) != wanted.get(*k))
            .collect();
        if missing.is_empty() {
            break events;
        }
        if Instant::now() >= deadline {
            // What the cluster says about the endpoint, for the report.
            let mut status = Vec::new();
            for i in cluster.running() {
                let url = format!("{}/_berth/webhooks/durable/deliveries", cluster.base(i));
                if let Ok(resp) = cluster.http.get(url).send().await {
                    status.push(resp.text().await.unwrap_or_default());
                }
            }
            panic!(
                "{} acknowledged pushes never arrived, e.g. {:?}; deliveries: {}",
                missing.len(),
                &missing[..missing.len().min(5)],
                status.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Duplicates are resends of one id with the same content, sent after
    // the failover; without them the ids rise in arrival order, so each
    // repository's events come in commit order.
    let mut first: HashMap<(u64, u64), &Value> = HashMap::new();
    let mut unique = Vec::new();
    let mut duplicates = 0;
    for (event, got) in events.iter().zip(arrivals(&all(&receiver))) {
        let id = id_of(event);
        match first.get(&id) {
            Some(original) => {
                duplicates += 1;
                assert_eq!(*original, event, "one id, two contents");
                assert!(got > killed_at, "{id:?} was sent twice before the failover");
            }
            None => {
                first.insert(id, event);
                unique.push(id);
            }
        }
    }
    assert!(
        unique.windows(2).all(|w| w[0] < w[1]),
        "events out of commit order"
    );
    eprintln!(
        "{} events, {duplicates} resent across the failover",
        unique.len()
    );

    // A full-cluster kill -9 and restart: what was delivered is not sent
    // again, and delivery goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = receiver.events().len();
    for i in cluster.running() {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.leader().await;
    let body = manifest(&config, PUSHES + 1);
    let url = format!("{}/v2/{}/manifests/after-restart", cluster.base(0), repo(0));
    let resp = send(
        cluster
            .http
            .put(url)
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let after = receiver
        .wait_for("the push after the restart", |e| e.len() > before)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = receiver
        .events()
        .get(before..)
        .map(<[Value]>::to_vec)
        .unwrap_or(after);
    let tags: Vec<&str> = after
        .iter()
        .map(|e| e["target"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["after-restart"], "resent after the restart");
}

/// Every event of `got`, in arrival order.
fn events_of(got: &[Received]) -> Vec<Value> {
    got.iter()
        .flat_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["events"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

/// When each event arrived: its request's arrival, once per event.
fn arrivals(got: &[Received]) -> Vec<Instant> {
    got.iter()
        .flat_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let n = v["events"].as_array().map_or(0, Vec::len);
            std::iter::repeat_n(r.at, n)
        })
        .collect()
}
