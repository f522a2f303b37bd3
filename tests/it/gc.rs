//! Garbage collection on a running cluster: collected blobs answer 404 at
//! once on every node and leave every node's disk, repair does not bring
//! them back, a manifest that names one is refused, and what kept images
//! lead to (layers, signatures, an index's children) survives.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::cluster::TestCluster;
use crate::common::*;

/// Runs a collection on `node` and returns its outcome.
async fn collect(node: &TestNode, request: Value) -> Value {
    let resp = send(node.post("/_berth/gc").json(&request)).await;
    assert_eq!(resp.status(), StatusCode::OK, "POST /_berth/gc");
    json_body(resp).await
}

/// Whether a blob's file is anywhere under a node's data directory.
fn stored(dir: &Path, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    files_under(&dir.join("blobs"))
        .iter()
        .any(|f| f.file_name().is_some_and(|n| n == hex))
}

fn blobs_of(image: &PushedImage) -> Vec<String> {
    std::iter::once(image.config.digest.clone())
        .chain(image.layers.iter().map(|(b, _)| b.digest.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collected_blobs_leave_every_node_and_the_image_can_be_pushed_again() {
    let cluster = TestCluster::start(3).await;
    let first = &cluster.nodes[0];
    let kept = first.push_image("acme/kept", "v1").await;
    // Its own tag gives it its own config blob.
    let gone = first.push_image("acme/gone", "old").await;
    let loose = first.push_blob("acme/gone", &random_blob(4000)).await;
    let resp = send(first.delete(&format!("/v2/acme/gone/manifests/{}", gone.digest))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut doomed = blobs_of(&gone);
    doomed.push(loose);
    // Every node holds a copy of everything before the collection.
    let dirs: Vec<&Path> = cluster.nodes.iter().map(|n| n.data_dir()).collect();
    assert!(
        eventually(Duration::from_secs(20), || dirs
            .iter()
            .all(|d| doomed.iter().all(|b| stored(d, b))))
        .await
    );

    // A dry run lists them and removes nothing.
    let preview = collect(&cluster.nodes[1], json!({"dry_run": true, "grace": 0})).await;
    let listed: Vec<&str> = preview["preview"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    for digest in &doomed {
        assert!(listed.contains(&digest.as_str()), "{digest} not previewed");
    }
    assert_eq!(
        listed.len(),
        doomed.len(),
        "kept blobs previewed: {listed:?}"
    );
    let head = |n: &TestNode, d: &str| n.head(&format!("/v2/acme/gone/blobs/{d}"));
    assert_eq!(send(head(first, &doomed[0])).await.status(), StatusCode::OK);

    let outcome = collect(&cluster.nodes[1], json!({"grace": 0})).await;
    assert_eq!(outcome["collected"]["blobs"], doomed.len());
    // At once, on every node: no stale "exists".
    for node in &cluster.nodes {
        for digest in &doomed {
            assert_eq!(
                send(head(node, digest)).await.status(),
                StatusCode::NOT_FOUND
            );
        }
        let resp = send(node.get("/v2/acme/kept/manifests/v1")).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // The old manifest cannot come back without its layers.
    let resp = send(
        first
            .put("/v2/acme/gone/manifests/old")
            .header("content-type", OCI_MANIFEST)
            .body(gone.manifest.clone()),
    )
    .await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Every node's files go (copies that arrived within the last 30 s are
    // spared that long: their link may still be on its way); the kept
    // image's stay.
    assert!(
        eventually(Duration::from_secs(60), || dirs
            .iter()
            .all(|d| doomed.iter().all(|b| !stored(d, b))))
        .await,
        "collected blob files left on disk"
    );
    for dir in &dirs {
        for digest in blobs_of(&kept) {
            assert!(stored(dir, &digest), "kept blob {digest} removed");
        }
    }
    // Every node reports its sweep (a report sent before its last files
    // went may be the latest for a moment).
    let expected = (4000 + gone.config.size + 1500 + 70_000) as u64;
    let mut swept = Vec::new();
    for _ in 0..100 {
        let status = json_body(send(first.get("/_berth/gc")).await).await;
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        swept = nodes.iter().map(|n| n["bytes"].as_u64().unwrap()).collect();
        if swept == [expected; 3] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        swept, [expected; 3],
        "bytes swept by each of the three nodes"
    );
    // Repair (every second here) does not copy collected blobs back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(dirs.iter().all(|d| doomed.iter().all(|b| !stored(d, b))));

    // The same image pushed again pulls whole from every node.
    for (blob, bytes) in &gone.layers {
        assert_eq!(
            cluster.nodes[2].push_blob("acme/gone", bytes).await,
            blob.digest
        );
    }
    let config = r#"{"architecture":"amd64","os":"linux","tag":"old"}"#;
    assert_eq!(
        cluster.nodes[2]
            .push_blob("acme/gone", config.as_bytes())
            .await,
        gone.config.digest
    );
    cluster.nodes[2]
        .push_manifest("acme/gone", "old", OCI_MANIFEST, &gone.manifest)
        .await;
    for node in &cluster.nodes {
        for (blob, bytes) in &gone.layers {
            let resp = send(node.get(&format!("/v2/acme/gone/blobs/{}", blob.digest))).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.bytes().await.unwrap(), bytes.as_slice());
        }
    }
}

#[tokio::test]
async fn untagged_manifests_go_but_signatures_and_index_children_of_kept_ones_stay() {
    let node = TestNode::start().await;
    let repo = "acme/app";
    let image = node.push_image(repo, "v1").await;
    let image_desc = Blob::new(OCI_MANIFEST, image.digest.clone(), image.manifest.len());
    // A signature of the tagged image, pushed by digest.
    let sig_config = node.push_blob(repo, b"{}").await;
    let signature = image_manifest(
        &Blob::new("application/vnd.example.sig", sig_config.clone(), 2),
        &[],
        json!({"artifactType": "application/vnd.example.sig", "subject": image_desc.descriptor()}),
    );
    let sig_digest = sha256(&signature);
    node.push_manifest(repo, &sig_digest, OCI_MANIFEST, &signature)
        .await;
    // A tagged index over a child pushed by digest only.
    let child = node.push_image(repo, "child").await;
    send(node.delete(&format!("/v2/{repo}/manifests/child"))).await;
    let child_desc = Blob::new(OCI_MANIFEST, child.digest.clone(), child.manifest.len());
    let index = index_manifest(&[child_desc], json!({}));
    node.push_manifest(repo, "multi", OCI_INDEX, &index).await;
    // An untagged image nothing keeps.
    let stray = node.push_image(repo, "stray").await;
    let resp = send(node.delete(&format!("/v2/{repo}/manifests/stray"))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // Without --gc-untagged, untagged manifests stay.
    collect(&node, json!({"grace": 0})).await;
    let get = |d: &str| node.get(&format!("/v2/{repo}/manifests/{d}"));
    assert_eq!(send(get(&stray.digest)).await.status(), StatusCode::OK);

    let outcome = collect(&node, json!({"grace": 0, "untagged": true})).await;
    assert_eq!(outcome["collected"]["manifests"], 1, "{outcome}");
    assert_eq!(
        send(get(&stray.digest)).await.status(),
        StatusCode::NOT_FOUND
    );
    for kept in [&image.digest, &sig_digest, &child.digest] {
        assert_eq!(
            send(get(kept)).await.status(),
            StatusCode::OK,
            "{kept} removed"
        );
    }
    // The stray image's blobs went in the same run; the kept ones' stayed.
    let blob = |d: &str| node.head(&format!("/v2/{repo}/blobs/{d}"));
    for gone in blobs_of(&stray).iter().skip(1) {
        assert_eq!(send(blob(gone)).await.status(), StatusCode::NOT_FOUND);
    }
    for kept in blobs_of(&image).iter().chain(blobs_of(&child).iter()) {
        assert_eq!(send(blob(kept)).await.status(), StatusCode::OK);
    }
    assert_eq!(send(blob(&sig_config)).await.status(), StatusCode::OK);
    let referrers =
        json_body(send(node.get(&format!("/v2/{repo}/referrers/{}", image.digest))).await).await;
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);
}

/// One image of the race: what a client pushed and got 201 for.
struct Acked {
    repo: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

/// Pushes an image as docker does: a blob the repository already has is
/// not uploaded again. Returns it if the manifest got 201; `None` if the
/// manifest was refused because a collection took a blob meanwhile.
async fn push_like_docker(node: &TestNode, repo: &str, blobs: Vec<Vec<u8>>) -> Option<Acked> {
    let mut pushed = Vec::new();
    for bytes in blobs {
        let digest = sha256(&bytes);
        let head = send(node.head(&format!("/v2/{repo}/blobs/{digest}"))).await;
        if head.status() != StatusCode::OK {
            assert_eq!(node.push_blob(repo, &bytes).await, digest);
        }
        pushed.push((digest, bytes));
    }
    let descs: Vec<Blob> = pushed
        .iter()
        .map(|(d, b)| Blob::new(OCI_LAYER, d.clone(), b.len()))
        .collect();
    let manifest = image_manifest(&descs[0], &descs[1..], json!({}));
    let digest = sha256(&manifest);
    let resp = send(
        node.put(&format!("/v2/{repo}/manifests/{digest}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone()),
    )
    .await;
    match resp.status() {
        StatusCode::CREATED => Some(Acked {
            repo: repo.to_owned(),
            digest,
            manifest,
            blobs: pushed,
        }),
        _ => {
            assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_deletes_and_collections_racing_never_break_an_acknowledged_image() {
    const ROUNDS: usize = 200;
    let cluster = TestCluster::start(3).await;
    let nodes = &cluster.nodes;
    let shared: Vec<Vec<u8>> = (0..4).map(|_| random_blob(3000)).collect();
    // Most images are deleted the round after they were pushed, so the
    // shared layers keep going unreferenced just as the next pushes find
    // them present and skip them; every tenth round's images stay.
    let mut kept: Vec<Acked> = Vec::new();
    let mut recent: Vec<Acked> = Vec::new();
    let (mut acked, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let image = |k: usize| {
            let mut blobs = vec![format!("config {round} {k}").into_bytes()];
            blobs.push(shared[(round + k) % 4].clone());
            blobs.push(shared[(round + k + 1) % 4].clone());
            blobs.push(random_blob(500));
            blobs
        };
        let pushes = (0..3).map(|k| {
            let repo = ["race/a", "race/b", "race/c"][k];
            push_like_docker(&nodes[(round + k) % 3], repo, image(k))
        });
        let victims = std::mem::take(&mut recent);
        let deletes = victims.iter().enumerate().map(|(i, v)| async move {
            let path = format!("/v2/{}/manifests/{}", v.repo, v.digest);
            let resp = send(nodes[(round + i) % 3].delete(&path)).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "{path}");
        });
        let gcs = (0..2).map(|i| collect(&nodes[(round + i + 2) % 3], json!({"grace": 0})));
        let (pushed, _, _) = tokio::join!(
            futures_util::future::join_all(pushes),
            futures_util::future::join_all(deletes),
            futures_util::future::join_all(gcs)
        );
        for outcome in pushed {
            let Some(image) = outcome else {
                refused += 1;
                continue;
            };
            acked += 1;
            match round % 10 {
                0 => kept.push(image),
                _ => recent.push(image),
            }
        }
    }
    kept.append(&mut recent);
    assert!(acked > 0, "no push got through in {ROUNDS} rounds");
    eprintln!("{acked} pushes acknowledged, {refused} refused with MANIFEST_BLOB_UNKNOWN");
    // Once more with everything settled, then every node's disk holds
    // exactly the kept images' blobs.
    collect(&nodes[0], json!({"grace": 0})).await;
    let wanted: std::collections::BTreeSet<String> = kept
        .iter()
        .flat_map(|i| {
            i.blobs
                .iter()
                .map(|(d, _)| d.trim_start_matches("sha256:").to_owned())
        })
        .collect();
    let on_disk = |dir: &Path| -> std::collections::BTreeSet<String> {
        files_under(&dir.join("blobs"))
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
            .collect()
    };
    let dirs: Vec<&Path> = nodes.iter().map(|n| n.data_dir()).collect();
    // Every node holds every kept blob (three copies on three nodes): a
    // sweep never took a replica whose link was still on its way.
    let settled = eventually(Duration::from_secs(90), || {
        dirs.iter().all(|d| on_disk(d) == wanted)
    })
    .await;
    for dir in &dirs {
        let held = on_disk(dir);
        let extra: Vec<_> = held.difference(&wanted).cloned().collect();
        let missing: Vec<_> = wanted.difference(&held).cloned().collect();
        assert!(
            settled,
            "on {}: unreferenced files left {extra:?}, kept blobs missing {missing:?}",
            dir.display()
        );
    }
    for image in &kept {
        for node in nodes {
            let path = format!("/v2/{}/manifests/{}", image.repo, image.digest);
            let resp = send(node.get(&path).header("accept", OCI_MANIFEST)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.bytes().await.unwrap(), image.manifest.as_slice());
            for (digest, bytes) in &image.blobs {
                let path = format!("/v2/{}/blobs/{digest}", image.repo);
                let resp = send(node.get(&path)).await;
                assert_eq!(
                    resp.status(),
                    StatusCode::OK,
                    "{path} of an acknowledged image"
                );
                assert_eq!(resp.bytes().await.unwrap(), bytes.as_slice(), "{path}");
            }
        }
    }
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_and_collecting_a_gibibyte_gives_the_space_back_on_every_node() {
    const IMAGES: usize = 8;
    const LAYER: usize = 128 << 20;
    let cluster = TestCluster::start(3).await;
    let nodes = &cluster.nodes;
    let before: Vec<u64> = nodes.iter().map(|n| disk_usage(n.data_dir())).collect();
    let mut pushed = Vec::new();
    for i in 0..IMAGES {
        let node = &nodes[i % 3];
        let layer = random_blob(LAYER);
        let layer = Blob::new(OCI_LAYER, node.push_blob("space/app", &layer).await, LAYER);
        let config_bytes = format!(r#"{{"image":{i}}}"#).into_bytes();
        let config = Blob::new(
            OCI_CONFIG,
            node.push_blob("space/app", &config_bytes).await,
            config_bytes.len(),
        );
        let manifest = image_manifest(&config, &[layer], json!({}));
        let tag = format!("v{i}");
        node.push_manifest("space/app", &tag, OCI_MANIFEST, &manifest)
            .await;
        pushed.push(sha256(&manifest));
    }
    let full: Vec<u64> = nodes.iter().map(|n| disk_usage(n.data_dir())).collect();
    for (i, used) in full.iter().enumerate() {
        assert!(
            *used >= (IMAGES * LAYER) as u64,
            "node {i} holds only {used} bytes"
        );
    }
    for digest in &pushed {
        let resp = send(nodes[0].delete(&format!("/v2/space/app/manifests/{digest}"))).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let outcome = collect(&nodes[1], json!({"grace": 0})).await;
    assert!(outcome["collected"]["bytes"].as_u64().unwrap() >= (IMAGES * LAYER) as u64);
    // Copies that arrived within the last 30 s are spared that long.
    let allowed = |i: usize| before[i] + before[i] / 100 + (16 << 20);
    let back = eventually(Duration::from_secs(90), || {
        nodes
            .iter()
            .enumerate()
            .all(|(i, n)| disk_usage(n.data_dir()) <= allowed(i))
    })
    .await;
    for (i, n) in nodes.iter().enumerate() {
        let now = disk_usage(n.data_dir());
        eprintln!(
            "node {i}: {} bytes before, {} full, {now} after",
            before[i], full[i]
        );
        assert!(
            back,
            "node {i} uses {now} bytes, more than {} allowed",
            allowed(i)
        );
    }
}
