//! Blob content across nodes: quorum copies on upload, any node serving any
//! blob, verified relays.

use std::time::{Duration, Instant};

use berth::replication::ReplicationFactor;
use reqwest::StatusCode;

use crate::cluster::TestCluster;
use crate::common::*;
use crate::metrics::{sample, scrape};

/// Whether `node` comes to store the blob within a few seconds: a reader gets
/// the last byte once the copy is verified, before the node has kept it.
async fn comes_to_hold(node: &TestNode, digest: &str) -> bool {
    eventually(Duration::from_secs(10), || holds(node, digest)).await
}

/// Whether `node` stores the blob's bytes in its own data directory.
fn holds(node: &TestNode, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    node.data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

async fn get_bytes(node: &TestNode, path: &str) -> (StatusCode, Result<Vec<u8>, reqwest::Error>) {
    let resp = node.get(path).send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.map(|b| b.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_is_acknowledged_once_a_quorum_holds_it_and_all_copies_follow() {
    let cluster = TestCluster::start(3).await;
    let data = random_blob(3 << 20);
    let digest = cluster.nodes[1].push_blob("q/app", &data).await;
    let holding = cluster.nodes.iter().filter(|n| holds(n, &digest)).count();
    assert!(holding >= 2, "201 came back with {holding} copies stored");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes.iter().any(|n| !holds(n, &digest)) {
        assert!(Instant::now() < deadline, "the third copy never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in &cluster.nodes {
        let (status, body) = get_bytes(node, &format!("/v2/q/app/blobs/{digest}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sha256(&body.unwrap()), digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_the_blob_relays_it_and_keeps_a_verified_copy() {
    let cluster = TestCluster::with_factor(3, ReplicationFactor::Copies(1)).await;
    let data = random_blob(5 << 20);
    let digest = cluster.nodes[0].push_blob("r/app", &data).await;
    assert!(holds(&cluster.nodes[0], &digest));
    let reader = &cluster.nodes[2];
    assert!(!holds(reader, &digest), "factor 1 keeps one copy");
    let head = reader
        .head(&format!("/v2/r/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        (5u64 << 20).to_string().as_str()
    );
    // A range is relayed without keeping a copy.
    let ranged = reader
        .get(&format!("/v2/r/app/blobs/{digest}"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[1000..2000]);
    let (status, body) = get_bytes(reader, &format!("/v2/r/app/blobs/{digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap(), data);
    assert!(
        comes_to_hold(reader, &digest).await,
        "the relaying node keeps the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_past_the_readers_size_cap_is_relayed_but_not_kept() {
    let mut cluster = TestCluster::with_factor(2, ReplicationFactor::Copies(1)).await;
    let data = random_blob(64 << 10);
    let digest = cluster.nodes[0].push_blob("big/app", &data).await;
    let reader = &mut cluster.nodes[1];
    reader.config_mut().max_blob_size = 1000;
    reader.restart().await;
    let (status, body) = get_bytes(reader, &format!("/v2/big/app/blobs/{digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap(), data);
    assert!(!holds(reader, &digest), "a blob past the cap was kept");
    assert!(files_under(&reader.data_dir().join("tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_bytes_from_a_holder_are_never_served_as_the_blob() {
    let cluster = TestCluster::with_factor(2, ReplicationFactor::Copies(1)).await;
    let data = random_blob(2 << 20);
    let digest = cluster.nodes[0].push_blob("l/app", &data).await;
    // The holder's disk now lies about the content.
    let hex = digest.trim_start_matches("sha256:");
    let path = cluster.nodes[0]
        .data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    let mut corrupt = std::fs::read(&path).unwrap();
    corrupt[12345] ^= 0xff;
    std::fs::write(&path, &corrupt).unwrap();

    let reader = &cluster.nodes[1];
    let (status, body) = get_bytes(reader, &format!("/v2/l/app/blobs/{digest}")).await;
    // The status went out before the last bytes; the body must not complete.
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.is_err(),
        "a corrupted relay completed as if it were the blob"
    );
    assert!(
        !holds(reader, &digest),
        "a copy that failed verification was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_without_a_write_quorum_gets_503() {
    let mut cluster = TestCluster::start(3).await;
    cluster.nodes[1].stop().await;
    cluster.nodes[2].stop().await;
    let data = random_blob(1 << 16);
    let digest = sha256(&data);
    let location = cluster.nodes[0].start_upload("n/app").await;
    let resp = cluster.nodes[0]
        .put(&with_digest(&location, &digest))
        .body(data)
        .send()
        .await
        .unwrap();
    let body = assert_oci_error(resp, 503, "UNAVAILABLE").await;
    let message = body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("1 of 3"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunked_upload_whose_requests_land_on_three_nodes_succeeds() {
    let cluster = TestCluster::start(3).await;
    let data = random_blob(3 << 20);
    let digest = sha256(&data);
    let location = cluster.nodes[0].start_upload("c/app").await;
    let third = data.len() / 3;
    let chunks = [&data[..third], &data[third..2 * third], &data[2 * third..]];
    let mut offset = 0;
    for (i, chunk) in chunks.iter().take(2).enumerate() {
        let node = &cluster.nodes[(i + 1) % 3];
        let end = offset + chunk.len() - 1;
        let resp = node
            .patch(&location)
            .header("content-range", format!("{offset}-{end}"))
            .header("content-length", chunk.len().to_string())
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "chunk {i} through node {}",
            (i + 1) % 3
        );
        assert_eq!(resp.headers()["range"], format!("0-{end}").as_str());
        offset = end + 1;
    }
    // Status and an out-of-order chunk, asked of a node that does not own it.
    let status = cluster.nodes[1].get(&location).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", offset - 1).as_str()
    );
    let stale = cluster.nodes[2]
        .patch(&location)
        .header("content-range", "0-9")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_oci_error(stale, 416, "BLOB_UPLOAD_INVALID").await;
    // The last chunk goes with the closing PUT, through yet another node.
    let resp = cluster.nodes[2]
        .put(&with_digest(&location, &digest))
        .body(chunks[2].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for node in &cluster.nodes {
        let (status, body) = get_bytes(node, &format!("/v2/c/app/blobs/{digest}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), data);
    }
    // Cancelling through a non-owner reaches the owner too.
    let other = cluster.nodes[1].start_upload("c/app").await;
    let resp = cluster.nodes[0].delete(&other).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let gone = cluster.nodes[2].get(&other).send().await.unwrap();
    assert_oci_error(gone, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_node_receives_every_blob_through_repair() {
    let mut cluster = TestCluster::start(3).await;
    let mut digests = Vec::new();
    for i in 0..5 {
        let data = random_blob((i + 1) << 18);
        digests.push(cluster.nodes[i % 3].push_blob("p/app", &data).await);
    }
    // Lose a node for good: stop it and take it out of the cluster.
    cluster.lose(2).await;
    // A new, empty node joins and pulls the copies it should hold.
    cluster.add_node().await;
    cluster.wait_voters(3).await;
    let newcomer = cluster.nodes.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = digests.iter().filter(|d| !holds(newcomer, d)).count();
        let report = newcomer.server().registry.cluster_status().repair;
        let settled = report.as_ref().is_some_and(|r| r.under_replicated == 0);
        if missing == 0 && settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} blobs still missing, repair: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = reqwest::get(newcomer.url("/_berth/cluster/status"))
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.bytes().await.unwrap()).unwrap();
    assert_eq!(status["repair"]["under_replicated"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_whose_only_holder_left_is_reported_unavailable() {
    let mut cluster = TestCluster::with_factor(3, ReplicationFactor::Copies(1)).await;
    let digest = cluster.nodes[2]
        .push_blob("u/app", &random_blob(1 << 16))
        .await;
    cluster.lose(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = cluster.nodes[0].server().registry.cluster_status().repair;
        if report
            .as_ref()
            .is_some_and(|r| r.unavailable == 1 && r.under_replicated == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{digest} not reported unavailable: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes sitting in `node`'s `tmp/`: blobs it is receiving.
fn receiving(node: &TestNode) -> u64 {
    std::fs::read_dir(node.data_dir().join("tmp"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_stream_while_a_patch_arrives_and_are_discarded_when_it_fails() {
    let cluster = TestCluster::start(3).await;
    let location = cluster.nodes[0].start_upload("s/app").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let patch = tokio::spawn(cluster.nodes[0].patch(&location).body(body).send());
    for _ in 0..4 {
        tx.send(Ok(random_blob(1 << 20))).await.unwrap();
    }
    // The PATCH is still open, yet both peers are already writing the blob.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.nodes[1..].iter().any(|n| receiving(n) < 2 << 20) {
        assert!(
            Instant::now() < deadline,
            "peers hold {:?} bytes while the upload is under way",
            cluster.nodes.iter().map(receiving).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client's body fails: the chunk is rolled back, and the peers throw
    // their partial copies away.
    tx.send(Err(std::io::Error::other("client went away")))
        .await
        .unwrap();
    drop(tx);
    let _ = patch.await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.nodes[1..].iter().any(|n| receiving(n) > 0) {
        assert!(Instant::now() < deadline, "peers kept a partial copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = cluster.nodes[0].get(&location).send().await.unwrap();
    assert_eq!(
        status.headers()["range"],
        "0-0",
        "the failed chunk was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_copy_is_kept_only_if_its_last_chunk_names_the_right_digest() {
    use berth::cluster::pb::BlobChunk;
    use berth::cluster::peer::{PeerPool, Secret};
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let pool = PeerPool::new(Secret::new(crate::cluster::SECRET).unwrap());
    let client = pool
        .client(&node.server().peer_addr.unwrap().to_string())
        .unwrap();
    let data = random_blob(3 << 20);
    let digest = sha256(&data);
    let push = |last: Option<String>| {
        let chunk = |digest: String, data: Vec<u8>| BlobChunk {
            digest,
            size: 0,
            data: data.into(),
        };
        let mut chunks = vec![chunk(String::new(), Vec::new())];
        chunks.extend(
            data.chunks(1 << 20)
                .map(|c| chunk(String::new(), c.to_vec())),
        );
        chunks.extend(last.map(|d| chunk(d, Vec::new())));
        let request = client.request(futures_util::stream::iter(chunks), Duration::from_secs(30));
        let mut blobs = client.blobs();
        async move { blobs.push(request).await }
    };
    let wrong = sha256(b"something else");
    let refused = push(Some(wrong)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");
    let unnamed = push(None).await.unwrap_err();
    assert_eq!(unnamed.code(), tonic::Code::Aborted, "{unnamed:?}");
    assert!(!holds(node, &digest), "a copy without its digest was kept");
    assert_eq!(receiving(node), 0, "a refused copy left its file");
    push(Some(digest.clone())).await.unwrap();
    assert!(holds(node, &digest));
}

/// A node recorded as holding a blob that has lost its copy (quarantined,
/// then restarted before a good copy came back) fetches it again through
/// repair, although every node counts it as a holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_a_recorded_copy_fetches_it_back() {
    let mut cluster = TestCluster::start(3).await;
    let data = random_blob(1 << 20);
    let digest = cluster.nodes[0].push_blob("q/app", &data).await;
    let lost = 2;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holds(&cluster.nodes[lost], &digest) {
        assert!(Instant::now() < deadline, "node {lost} never held the blob");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.nodes[lost].stop().await;
    // As a quarantine leaves it: no local index entry, no file in blobs/.
    {
        let layout = berth::storage::Layout::new(cluster.nodes[lost].data_dir());
        let db = berth::db::Db::open(&layout.db()).unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(db.cf(berth::db::Cf::LocalBlobs), digest.as_bytes());
        db.write_durable(batch).unwrap();
        let digest: berth::oci::Digest = digest.parse().unwrap();
        std::fs::remove_file(layout.blob(&digest)).unwrap();
    }
    cluster.nodes[lost].restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !holds(&cluster.nodes[lost], &digest) {
        assert!(
            Instant::now() < deadline,
            "node {lost} did not fetch its copy back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hex = digest.trim_start_matches("sha256:");
    let path = cluster.nodes[lost]
        .data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert_eq!(sha256(&std::fs::read(path).unwrap()), digest);
}

/// Blob bytes `node` has sent to peers that fetched them.
async fn fetch_sent(node: &TestNode) -> f64 {
    let text = scrape(node).await;
    ["store", "flight"]
        .iter()
        .map(|from| {
            let name = format!(r#"berth_replication_fetch_sent_bytes_total{{from="{from}"}}"#);
            sample(&text, &name).expect("both series are exposed")
        })
        .sum()
}

/// The digest of a GET's body, hashed as it streams: 20 bodies of 256 MiB
/// are never held whole.
async fn streamed_digest(node: &TestNode, path: &str) -> Result<String, String> {
    use futures_util::StreamExt;
    use sha2::Digest as _;
    let resp = node.get(path).send().await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let mut hasher = sha2::Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.map_err(|e| e.to_string())?);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_reads_on_a_node_without_the_blob_fetch_it_from_peers_once() {
    const SIZE: usize = 256 << 20;
    const READERS: usize = 20;
    let cluster = TestCluster::with_factor(3, ReplicationFactor::Copies(1)).await;
    let digest = cluster.nodes[0]
        .push_blob("fan/app", &random_blob(SIZE))
        .await;
    let reader = cluster
        .nodes
        .iter()
        .find(|n| !holds(n, &digest))
        .expect("factor 1 leaves a node without the blob");
    let mut sent_before = 0.0;
    for node in &cluster.nodes {
        sent_before += fetch_sent(node).await;
    }
    let path = format!("/v2/fan/app/blobs/{digest}");
    let reads = (0..READERS).map(|_| streamed_digest(reader, &path));
    let digests = futures_util::future::join_all(reads).await;
    for (i, got) in digests.iter().enumerate() {
        assert_eq!(got.as_deref(), Ok(digest.as_str()), "read {i}");
    }
    let mut sent = -sent_before;
    for node in &cluster.nodes {
        sent += fetch_sent(node).await;
    }
    assert_eq!(
        sent, SIZE as f64,
        "peers sent {sent} bytes for {READERS} reads of a {SIZE}-byte blob"
    );
    let relayed = sample(
        &scrape(reader).await,
        "berth_replication_relayed_bytes_total",
    );
    assert_eq!(relayed, Some(SIZE as f64), "the reader's relay counter");
    assert!(
        comes_to_hold(reader, &digest).await,
        "the fetched copy was kept"
    );
}
