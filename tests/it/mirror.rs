//! Pull-through mirrors, against a stand-in upstream that counts requests:
//! every way of addressing a mirror, each blob fetched once and then served
//! from the cache (also for 20 pulls over three nodes), tag TTLs and
//! stale-if-error, a lying upstream, permissions, size budgets evicting
//! the least recently pulled images, and the private registry beside it (a
//! mirror's namespace takes no pushes; other repositories do, also new ones
//! beside a default mirror). The mirrors come from the configuration file.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::upstream::{Auth, FakeUpstream};

#[tokio::test]
async fn a_mirror_namespace_refuses_pushes_and_the_rest_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        "mirrors:\n  - name: docker.io\n    url: https://registry-1.docker.io\n    default: true\n    tag-ttl: 60\n",
    )
    .unwrap();
    let args = berth::config::ServeArgs {
        config: Some(file),
        data_dir: Some(data),
        plain_http: Some(true),
        ..Default::default()
    };
    let resolved = args.resolve().unwrap();
    assert_eq!(resolved.mirrors[0].tag_ttl, Duration::from_secs(60));
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.mirrors = resolved.mirrors;
    let node = TestNode::start_with(dir, config).await;

    let resp = send(node.post("/v2/docker.io/library/alpine/blobs/uploads/")).await;
    let body = assert_oci_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("pull-through mirror docker.io of https://registry-1.docker.io/"),
        "{message}"
    );
    let resp = send(
        node.put("/v2/docker.io/library/alpine/manifests/latest")
            .header("content-type", OCI_MANIFEST)
            .body("{}"),
    )
    .await;
    assert_oci_error(resp, 403, "DENIED").await;
    // A name that only starts like the mirror is no part of it.
    node.push_image("docker.iox/app", "v1").await;
    node.push_image("acme/app", "v1").await;
}

/// The mirror list of a configuration file, resolved as `berth serve`
/// resolves it.
fn mirrors_from(yaml: &str) -> Vec<berth::config::MirrorConfig> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yaml");
    std::fs::write(&file, yaml).unwrap();
    let args = berth::config::ServeArgs {
        config: Some(file),
        data_dir: Some(dir.path().join("data")),
        plain_http: Some(true),
        ..Default::default()
    };
    args.resolve().unwrap().mirrors
}

/// One upstream named `up`, the default, anonymous pulls allowed.
fn mirror_of(upstream: &FakeUpstream, ttl: u64) -> Vec<berth::config::MirrorConfig> {
    mirrors_from(&format!(
        "mirrors:\n  - name: up\n    url: {}\n    default: true\n    anonymous: true\n    tag-ttl: {ttl}\n",
        upstream.url()
    ))
}

async fn mirror_node(mirrors: Vec<berth::config::MirrorConfig>) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.mirrors = mirrors;
    TestNode::start_with(dir, config).await
}

/// The digest a manifest read answers with, or its status.
async fn manifest_digest(node: &TestNode, path: &str) -> Result<String, u16> {
    let resp = send(node.get(path).header("accept", OCI_MANIFEST)).await;
    match resp.status().as_u16() {
        200 => {
            let digest = header(&resp, "docker-content-digest");
            let body = resp.bytes().await.unwrap();
            assert_eq!(sha256(&body), digest);
            Ok(digest)
        }
        s => Err(s),
    }
}

/// A whole blob's bytes through `node`, or why it failed.
async fn blob_bytes(node: &TestNode, path: &str) -> Result<Vec<u8>, String> {
    let resp = node.get(path).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

fn upstream_get(upstream: &FakeUpstream, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(format!("{}{path}", upstream.url()))
}

async fn status_of(node: &TestNode) -> Value {
    json_body(send(node.get("/_berth/mirrors")).await).await[0].clone()
}

#[tokio::test]
async fn pulls_come_through_every_address_once_and_then_from_the_cache() {
    let upstream = FakeUpstream::start(Auth::Bearer, Duration::ZERO).await;
    let image = upstream.add_image(
        "team/app",
        "v1",
        vec![random_blob(300_000), random_blob(1000)],
    );
    let node = mirror_node(mirror_of(&upstream, 300)).await;

    // By prefix, through the upstream's token flow.
    let by_prefix = manifest_digest(&node, "/v2/up/team/app/manifests/v1").await;
    assert_eq!(by_prefix, Ok(image.digest.clone()));
    for (digest, bytes) in image.layers.iter().chain([&image.config]) {
        let got = blob_bytes(&node, &format!("/v2/up/team/app/blobs/{digest}")).await;
        assert_eq!(got.as_deref(), Ok(&bytes[..]), "{digest}");
    }
    // Docker Engine's registry-mirrors (no prefix, the default mirror) and
    // containerd's ns, by the upstream's host and port.
    assert_eq!(
        manifest_digest(&node, "/v2/team/app/manifests/v1").await,
        by_prefix
    );
    let ns = format!(
        "/v2/team/app/manifests/{}?ns={}",
        image.digest, upstream.addr
    );
    assert_eq!(manifest_digest(&node, &ns).await, by_prefix);
    for (digest, bytes) in &image.layers {
        let got = blob_bytes(&node, &format!("/v2/team/app/blobs/{digest}")).await;
        assert_eq!(got.as_deref(), Ok(&bytes[..]));
        let head = send(node.head(&format!("/v2/team/app/blobs/{digest}?ns=up"))).await;
        assert_eq!(header(&head, "content-length"), bytes.len().to_string());
    }
    // Every blob and the tag came from upstream once; the token was fetched
    // once and then reused.
    for (digest, _) in image.layers.iter().chain([&image.config]) {
        assert_eq!(
            upstream.count("GET", &format!("/blobs/{digest}")),
            1,
            "{digest}"
        );
    }
    assert_eq!(upstream.count("GET", "/manifests/v1"), 1);
    assert_eq!(upstream.count("GET", "/token"), 1, "{:?}", upstream.hits());

    // A fetched blob is linked once its landing completes, which may be
    // just after the client had the last byte.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = status_of(&node).await;
        if status["cached_blobs"] == 3 || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["name"], "up");
    assert_eq!(status["cached_blobs"], 3, "{status}");
    assert_eq!(status["cached_repositories"], 1);
    assert!(status["hits"].as_u64().unwrap() >= 4, "{status}");
    assert_eq!(status["misses"], 1 + 3, "{status}");
    assert_eq!(
        status["upstream_bytes"],
        image
            .layers
            .iter()
            .chain([&image.config])
            .map(|(_, b)| b.len())
            .sum::<usize>()
    );
    // The cache is a repository like any other for reads.
    let tags = json_body(send(node.get("/v2/up/team/app/tags/list")).await).await;
    assert_eq!(tags["tags"], json!(["v1"]));
    // What the upstream does not have is 404, as from any registry.
    assert_eq!(
        manifest_digest(&node, "/v2/up/team/app/manifests/nope").await,
        Err(404)
    );
    let missing = format!("/v2/up/team/app/blobs/{}", sha256(b"missing"));
    assert_oci_error(send(node.get(&missing)).await, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn a_moved_tag_is_seen_after_its_ttl_and_a_dead_upstream_serves_the_cache() {
    let mut upstream = FakeUpstream::start(Auth::Basic, Duration::ZERO).await;
    let first = upstream.add_image("app", "v1", vec![random_blob(1000)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("creds"), "mirror:secret\n").unwrap();
    let mirrors = mirrors_from(&format!(
        "mirrors:\n  - name: up\n    url: {}\n    anonymous: true\n    tag-ttl: 1\n    credentials-file: {}\n",
        upstream.url(),
        dir.path().join("creds").display()
    ));
    let node = mirror_node(mirrors).await;
    assert_eq!(
        manifest_digest(&node, "/v2/up/app/manifests/v1").await,
        Ok(first.digest.clone())
    );
    let layer = &first.layers[0].0;
    blob_bytes(&node, &format!("/v2/up/app/blobs/{layer}"))
        .await
        .unwrap();

    let moved = upstream.add_image("app", "v1", vec![random_blob(1000)]);
    // Within the TTL the cached digest stands, without asking upstream.
    assert_eq!(
        manifest_digest(&node, "/v2/up/app/manifests/v1").await,
        Ok(first.digest.clone())
    );
    assert_eq!(upstream.count("HEAD", "/manifests/v1"), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        manifest_digest(&node, "/v2/up/app/manifests/v1").await,
        Ok(moved.digest.clone())
    );
    // An unmoved tag past its TTL costs a HEAD, not a fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        manifest_digest(&node, "/v2/up/app/manifests/v1").await,
        Ok(moved.digest.clone())
    );
    assert_eq!(upstream.count("HEAD", "/manifests/v1"), 2);
    assert_eq!(upstream.count("GET", "/manifests/v1"), 2);

    // The upstream goes away: what is cached still pulls, at once.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        manifest_digest(&node, "/v2/up/app/manifests/v1").await,
        Ok(moved.digest.clone())
    );
    assert_eq!(
        manifest_digest(&node, &format!("/v2/up/app/manifests/{}", first.digest)).await,
        Ok(first.digest.clone())
    );
    let got = blob_bytes(&node, &format!("/v2/up/app/blobs/{layer}")).await;
    assert_eq!(got.as_deref(), Ok(&first.layers[0].1[..]));
    // What is not cached fails with a clear error, not a hang.
    let resp = send(node.get("/v2/up/app/manifests/v2")).await;
    let body = assert_oci_error(resp, 502, "UNAVAILABLE").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("upstream up cannot be reached"),
        "{message}"
    );
    let uncached = format!("/v2/up/app/blobs/{}", moved.layers[0].0);
    assert_oci_error(send(node.get(&uncached)).await, 502, "UNAVAILABLE").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let status = status_of(&node).await;
    assert!(
        status["last_error"][1]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{status}"
    );
}

#[tokio::test]
async fn a_lying_upstream_gets_nothing_cached_and_the_client_no_wrong_bytes() {
    let upstream = FakeUpstream::start(Auth::None, Duration::ZERO).await;
    let image = upstream.add_image("app", "v1", vec![random_blob(500_000)]);
    let layer = image.layers[0].0.clone();
    upstream.lie_about(&layer);
    let node = mirror_node(mirror_of(&upstream, 300)).await;
    let path = format!("/v2/up/app/blobs/{layer}");
    for _ in 0..2 {
        let got = blob_bytes(&node, &path).await;
        assert!(got.is_err(), "the forged bytes were served whole");
    }
    // Each attempt was a new fetch: the forged blob was never kept.
    assert_eq!(upstream.count("GET", &format!("/blobs/{layer}")), 2);
    assert_eq!(status_of(&node).await["cached_blobs"], 0);
    let blobs = files_under(&node.data_dir().join("blobs"));
    assert!(
        blobs
            .iter()
            .all(|p| !p.to_string_lossy().contains(&layer[7..])),
        "{blobs:?}"
    );
    assert!(files_under(&node.data_dir().join("tmp")).is_empty());
    // A manifest whose bytes are not what its digest says is refused too,
    // and not cached.
    let claimed = sha256(b"not that manifest");
    let other = upstream.add_image("app", "other", vec![random_blob(10)]);
    let body = send(upstream_get(
        &upstream,
        &format!("/v2/app/manifests/{}", other.digest),
    ))
    .await
    .bytes()
    .await
    .unwrap();
    upstream.serve_manifest("app", &claimed, body.to_vec());
    let wrong = format!("/v2/up/app/manifests/{claimed}");
    for _ in 0..2 {
        let resp = send(node.get(&wrong).header("accept", OCI_MANIFEST)).await;
        let error = assert_oci_error(resp, 502, "UNAVAILABLE").await;
        let message = error["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("whose bytes hash to"), "{message}");
    }
    assert_eq!(upstream.count("GET", &format!("/manifests/{claimed}")), 2);
}

#[tokio::test]
async fn permissions_follow_the_mirror_namespace_unless_it_is_anonymous() {
    let upstream = FakeUpstream::start(Auth::None, Duration::ZERO).await;
    let image = upstream.add_image("app", "v1", vec![random_blob(100)]);
    let mirrors = mirrors_from(&format!(
        "mirrors:\n  - name: up\n    url: {u}\n  - name: open\n    url: {u}\n    anonymous: true\n",
        u = upstream.url()
    ));
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        format!("root:{hash}\nann:{hash}\n"),
    )
    .unwrap();
    let mut config = berth::config::ServeConfig::for_test(&dir.path().join("data"));
    config.htpasswd = Some(dir.path().join("htpasswd"));
    config.admins.insert("root".into());
    config.mirrors = mirrors;
    let node = TestNode::start_with(dir, config).await;
    let get = |path: &str| node.get(path).header("accept", OCI_MANIFEST);
    // Anonymous callers: asked to sign in on `up`, let through on `open`.
    assert_eq!(send(get("/v2/up/app/manifests/v1")).await.status(), 401);
    assert_eq!(send(get("/v2/app/manifests/v1?ns=up")).await.status(), 401);
    let resp = send(get("/v2/open/app/manifests/v1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), image.digest);
    // A user without read on the `up` namespace is refused; an
    // administrator reads it.
    let resp = send(get("/v2/up/app/manifests/v1").basic_auth("ann", Some("pw"))).await;
    assert_oci_error(resp, 403, "DENIED").await;
    let resp = send(get("/v2/up/app/manifests/v1").basic_auth("root", Some("pw"))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn twenty_pulls_over_three_nodes_fetch_each_blob_once() {
    // Three 2 MiB layers, each about half a second upstream: the pulls
    // overlap the fetches.
    let upstream = FakeUpstream::start(Auth::Bearer, Duration::from_millis(15)).await;
    let layers = (0..3).map(|_| random_blob(2 << 20)).collect();
    let image = upstream.add_image("team/big", "v1", layers);
    let mirrors = mirror_of(&upstream, 300);
    let cluster =
        crate::cluster::TestCluster::with_config(3, move |c| c.mirrors = mirrors.clone()).await;
    let pulls = (0..20).map(|i| {
        let node = &cluster.nodes[i % 3];
        let image = &image;
        async move {
            let digest = manifest_digest(node, "/v2/up/team/big/manifests/v1").await?;
            let mut got = Vec::new();
            for (d, _) in image.layers.iter().chain([&image.config]) {
                let bytes = blob_bytes(node, &format!("/v2/up/team/big/blobs/{d}"))
                    .await
                    .map_err(|_| 0u16)?;
                got.push(sha256(&bytes));
            }
            Ok::<_, u16>((digest, got))
        }
    });
    let results = futures_util::future::join_all(pulls).await;
    let expected: Vec<String> = image
        .layers
        .iter()
        .chain([&image.config])
        .map(|(d, _)| d.clone())
        .collect();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r, Ok((image.digest.clone(), expected.clone())), "pull {i}");
    }
    for d in &expected {
        assert_eq!(upstream.count("GET", &format!("/blobs/{d}")), 1, "{d}");
    }
    // Each blob is linked into the mirror's repository once a write quorum
    // holds it, just after its last byte went out.
    for node in &cluster.nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = status_of(node).await;
            if status["cached_blobs"] == 4 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_size_budget_evicts_the_least_recently_pulled_images_through_gc() {
    let upstream = FakeUpstream::start(Auth::None, Duration::ZERO).await;
    let images: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|t| upstream.add_image("app", t, vec![random_blob(100_000)]))
        .collect();
    // Room for two of the three images.
    let mirrors = mirrors_from(&format!(
        "mirrors:\n  - name: up\n    url: {}\n    anonymous: true\n    size-budget: 250000\n",
        upstream.url()
    ));
    let node = mirror_node(mirrors).await;
    let pull = |tag: &'static str| {
        let node = &node;
        let images = &images;
        async move {
            let i = ["a", "b", "c"].iter().position(|t| *t == tag).unwrap();
            let path = format!("/v2/up/app/manifests/{tag}");
            assert_eq!(
                manifest_digest(node, &path).await,
                Ok(images[i].digest.clone())
            );
            for (d, bytes) in images[i].layers.iter().chain([&images[i].config]) {
                let got = blob_bytes(node, &format!("/v2/up/app/blobs/{d}")).await;
                assert_eq!(got.as_deref(), Ok(&bytes[..]));
            }
        }
    };
    pull("a").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull("b").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull("c").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // a is pulled again: b is now the least recently pulled.
    pull("a").await;

    let preview = json_body(
        send(
            node.post("/_berth/gc")
                .json(&json!({"dry_run": true, "grace": 0})),
        )
        .await,
    )
    .await;
    let plan = &preview["preview"]["evictions"][0];
    assert_eq!(plan["namespace"], "up", "{preview}");
    assert_eq!(
        plan["evict"][0]["digest"],
        images[1].digest.as_str(),
        "{preview}"
    );
    assert_eq!(plan["evict"].as_array().unwrap().len(), 1, "{preview}");

    let resp = send(node.post("/_berth/gc").json(&json!({"grace": 0}))).await;
    assert_eq!(resp.status(), 200);
    let resp = send(node.post("/_berth/gc").json(&json!({"grace": 0}))).await;
    assert_eq!(resp.status(), 200);
    let status = status_of(&node).await;
    assert!(
        status["cached_bytes"].as_u64().unwrap() <= 250_000,
        "{status}"
    );
    // b comes from upstream again; a and c are still cached.
    pull("a").await;
    pull("c").await;
    pull("b").await;
    assert_eq!(upstream.count("GET", &format!("/manifests/{}", "a")), 1);
    assert_eq!(upstream.count("GET", &format!("/manifests/{}", "c")), 1);
    assert_eq!(upstream.count("GET", &format!("/manifests/{}", "b")), 2);
    let layer_b = &images[1].layers[0].0;
    assert_eq!(upstream.count("GET", &format!("/blobs/{layer_b}")), 2);
}

#[tokio::test]
async fn a_default_mirror_neither_shows_private_blobs_nor_breaks_pushes_to_new_repositories() {
    let upstream = FakeUpstream::start(Auth::None, Duration::ZERO).await;
    let image = upstream.add_image("library/base", "v1", vec![random_blob(1000)]);
    let node = mirror_node(mirror_of(&upstream, 300)).await;
    // A pull through the default mirror caches the base image's blobs.
    assert_eq!(
        manifest_digest(&node, "/v2/library/base/manifests/v1").await,
        Ok(image.digest.clone())
    );
    let (layer, bytes) = &image.layers[0];
    assert_eq!(
        blob_bytes(&node, &format!("/v2/library/base/blobs/{layer}"))
            .await
            .as_deref(),
        Ok(&bytes[..])
    );
    // A push to a new local repository asks HEAD of that blob: it is not in
    // the repository, whatever the mirror holds, so the client uploads it
    // and the manifest then finds it.
    let head = send(node.head(&format!("/v2/acme/new/blobs/{layer}"))).await;
    assert_eq!(head.status(), 404);
    assert_eq!(
        upstream.count("HEAD", "/acme/new/blobs/"),
        0,
        "the push's check reached the upstream"
    );
    node.push_blob("acme/new", bytes).await;
    let config = node.push_blob("acme/new", &image.config.1).await;
    let manifest = image_manifest(
        &Blob::new(OCI_CONFIG, config, image.config.1.len()),
        &[Blob::new(OCI_LAYER, layer.clone(), bytes.len())],
        json!({}),
    );
    let resp = send(
        node.put("/v2/acme/new/manifests/v1")
            .header("content-type", OCI_MANIFEST)
            .body(manifest),
    )
    .await;
    assert_eq!(resp.status(), 201);
    // A blob of a local repository is not served through a mirror: the
    // upstream, which lacks it, decides.
    let private = node.push_blob("acme/secret", b"private bytes").await;
    for path in [
        format!("/v2/up/acme/secret/blobs/{private}"),
        format!("/v2/other/blobs/{private}"),
    ] {
        assert_oci_error(send(node.get(&path)).await, 404, "BLOB_UNKNOWN").await;
        assert_eq!(send(node.head(&path)).await.status(), 404, "{path}");
    }
}
