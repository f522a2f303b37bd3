//! Three-node clusters in process: metadata written on any node is read on
//! any other, leadership moves, and a stopped node catches up.

use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::metrics::{sample, scrape};

/// Nodes on loopback sharing a cluster secret: the first forms the cluster,
/// the others join it.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    secret: tempfile::TempDir,
    tweak: Tweak,
}

/// A change every node's configuration gets.
type Tweak = Box<dyn Fn(&mut berth::config::ServeConfig) + Send + Sync>;

pub const SECRET: &str = "test-cluster-secret-0123456789";

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::with_config(n, |_| {}).await
    }

    /// A cluster keeping `factor` copies of each blob.
    pub async fn with_factor(
        n: usize,
        factor: berth::replication::ReplicationFactor,
    ) -> TestCluster {
        TestCluster::with_config(n, move |c| c.replication_factor = factor).await
    }

    /// A cluster whose nodes' configuration `tweak` changes.
    pub async fn with_config(
        n: usize,
        tweak: impl Fn(&mut berth::config::ServeConfig) + Send + Sync + 'static,
    ) -> TestCluster {
        let mut cluster = TestCluster::empty(tweak);
        for _ in 0..n {
            cluster.add_node().await;
        }
        cluster.wait_voters(n).await;
        cluster
    }

    /// A cluster with no node yet, for tests that start each node their way.
    pub fn empty(
        tweak: impl Fn(&mut berth::config::ServeConfig) + Send + Sync + 'static,
    ) -> TestCluster {
        let secret = tempfile::tempdir().unwrap();
        std::fs::write(secret.path().join("secret"), SECRET).unwrap();
        TestCluster {
            nodes: Vec::new(),
            secret,
            tweak: Box::new(tweak),
        }
    }

    /// A node's configuration as a member of this cluster, before `tweak`.
    pub fn member_config(&self, dir: &std::path::Path) -> berth::config::ServeConfig {
        let mut config = berth::config::ServeConfig::for_test(dir);
        config.cluster_secret_file = Some(self.secret.path().join("secret"));
        if let Some(seed) = self.nodes.first() {
            let seed = seed.server().peer_addr.expect("seed has a peer listener");
            config.peers = vec![berth::cluster::PeerSpec::Addr(seed.to_string())];
        }
        (self.tweak)(&mut config);
        config
    }

    /// Starts one more node: the first forms the cluster, later ones join it.
    pub async fn add_node(&mut self) {
        self.add_node_with(|_| {}).await;
    }

    /// [`TestCluster::add_node`] with a change to this node's configuration.
    pub async fn add_node_with(&mut self, change: impl FnOnce(&mut berth::config::ServeConfig)) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = self.member_config(dir.path());
        change(&mut config);
        self.nodes.push(TestNode::start_with(dir, config).await);
    }

    /// Stops node `i` for good and removes it from the cluster through node 0.
    pub async fn lose(&mut self, i: usize) {
        let id = self.nodes[i].server().cluster().id();
        let voters = self.nodes.iter().filter(|n| n.is_running()).count() - 1;
        self.nodes[i].stop().await;
        let resp = self.nodes[0]
            .delete(&format!("/_berth/cluster/members/{id}"))
            .header(berth::api::admin::SECRET_HEADER, SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "removing node {i}");
        self.wait_voters(voters).await;
    }

    /// Waits until the first running node sees `n` voters and a leader.
    pub async fn wait_voters(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = self
                .nodes
                .iter()
                .find(|n| n.is_running())
                .expect("a running node");
            let status = node.server().cluster().status();
            let voters = status.members.iter().filter(|m| m.voter).count();
            if voters == n && status.leader_id.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not reach {n} voters: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn leader_index(&self) -> Option<usize> {
        let running = self.nodes.iter().find(|n| n.is_running())?;
        let leader = running.server().cluster().status().leader_id?;
        self.nodes
            .iter()
            .position(|n| n.is_running() && n.server().cluster().id() == leader)
    }
}

/// A manifest made unique by `i`, over a config blob already in `repo`.
fn manifest(config: &Blob, i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [],
        "annotations": { "n": i.to_string() },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_any_node_is_read_on_any_other() {
    let cluster = TestCluster::start(3).await;
    let config_bytes = b"{}".to_vec();
    let config = Blob::new(OCI_CONFIG, sha256(&config_bytes), config_bytes.len());
    cluster.nodes[0].push_blob("c/app", &config_bytes).await;
    let mut rng = rand::rng();
    let indexes = [0usize, 1, 2];
    let mut misses = Vec::new();
    for i in 0..1000 {
        let writer = *indexes.choose(&mut rng).unwrap();
        let reader = (writer + 1 + i % 2) % 3;
        let body = manifest(&config, i);
        let digest = sha256(&body);
        let put = cluster.nodes[writer]
            .put(&format!("/v2/c/app/manifests/t{i}"))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status(),
            StatusCode::CREATED,
            "PUT {i} on node {writer}"
        );
        let get = cluster.nodes[reader]
            .get(&format!("/v2/c/app/manifests/t{i}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        let got = get
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_owned());
        if get.status() != StatusCode::OK || got.as_deref() != Some(digest.as_str()) {
            misses.push((i, writer, reader, get.status()));
        }
    }
    assert!(
        misses.is_empty(),
        "{} misses, first: {:?}",
        misses.len(),
        misses.first()
    );
}

/// Concurrent writes share log entries on the leader, and each client still
/// gets its own answer: accepted manifests are readable everywhere, and a
/// refused one in the same rush is refused alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    const WRITES: usize = 120;
    let cluster = TestCluster::start(3).await;
    let config_bytes = b"{}".to_vec();
    let config = Blob::new(OCI_CONFIG, sha256(&config_bytes), config_bytes.len());
    cluster.nodes[0].push_blob("b/app", &config_bytes).await;
    let leader = cluster.leader_index().expect("a leader");
    let proposed = |text: &str| {
        let entries = sample(text, "berth_raft_proposed_entries_total").unwrap_or(0.0);
        let commands = sample(text, "berth_raft_proposed_commands_total").unwrap_or(0.0);
        (entries, commands)
    };
    let before = proposed(&scrape(&cluster.nodes[leader]).await);
    let missing = Blob::new(OCI_CONFIG, sha256(b"not pushed"), 10);
    let writes = (0..WRITES).map(|i| {
        let node = &cluster.nodes[i % 3];
        // Every tenth manifest names a blob the repository lacks.
        let body = match i % 10 {
            9 => manifest(&missing, i),
            _ => manifest(&config, i),
        };
        async move {
            let resp = node
                .put(&format!("/v2/b/app/manifests/t{i}"))
                .header("content-type", OCI_MANIFEST)
                .body(body)
                .send()
                .await
                .unwrap();
            (i, resp.status())
        }
    });
    for (i, status) in futures_util::future::join_all(writes).await {
        match i % 10 {
            9 => assert_eq!(status, StatusCode::BAD_REQUEST, "PUT {i}"),
            _ => assert_eq!(status, StatusCode::CREATED, "PUT {i}"),
        }
    }
    let after = proposed(&scrape(&cluster.nodes[leader]).await);
    let (entries, commands) = (after.0 - before.0, after.1 - before.1);
    assert!(commands >= WRITES as f64, "{commands} commands proposed");
    assert!(
        entries < commands,
        "{WRITES} concurrent writes took {entries} entries for {commands} commands"
    );
    for (n, node) in cluster.nodes.iter().enumerate() {
        let list = node.get("/v2/b/app/tags/list").send().await.unwrap();
        let tags = json_body(list).await["tags"].as_array().unwrap().len();
        assert_eq!(tags, WRITES - WRITES / 10, "tags on node {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_is_replaced_and_catches_up_on_restart() {
    let mut cluster = TestCluster::start(3).await;
    let config_bytes = b"{}".to_vec();
    let config = Blob::new(OCI_CONFIG, sha256(&config_bytes), config_bytes.len());
    cluster.nodes[0].push_blob("c/app", &config_bytes).await;
    let leader = cluster.leader_index().expect("a leader");
    cluster.nodes[leader].stop().await;
    let survivor = (leader + 1) % 3;
    // Writes succeed again once a new leader is elected (within seconds).
    let started = Instant::now();
    for i in 0..20 {
        let resp = cluster.nodes[survivor]
            .put(&format!("/v2/c/app/manifests/after{i}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest(&config, 5000 + i))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "write {i} after the leader stopped"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    cluster.nodes[leader].restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = cluster.nodes[leader]
            .get("/v2/c/app/manifests/after19")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node did not catch up: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joining_after_log_compaction_receives_a_snapshot() {
    let mut cluster = TestCluster::start(1).await;
    let config_bytes = b"{}".to_vec();
    let config = Blob::new(OCI_CONFIG, sha256(&config_bytes), config_bytes.len());
    let seed = &cluster.nodes[0];
    seed.push_blob("s/app", &config_bytes).await;
    for i in 0..30 {
        let resp = seed
            .put(&format!("/v2/s/app/manifests/t{i}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest(&config, i))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    // Snapshot now and drop the log it covers, so a newcomer cannot replay it.
    let raft = seed.server().cluster().raft().clone();
    raft.trigger().snapshot().await.unwrap();
    let applied = raft.metrics().borrow().last_applied.unwrap().index;
    let last = raft.metrics().borrow().last_applied.unwrap();
    raft.wait(Some(Duration::from_secs(30)))
        .snapshot(last, "snapshot built")
        .await
        .unwrap();
    raft.trigger().purge_log(applied).await.unwrap();
    raft.wait(Some(Duration::from_secs(30)))
        .purged(Some(last), "log purged")
        .await
        .unwrap();

    cluster.add_node().await;
    cluster.wait_voters(2).await;
    let newcomer = &cluster.nodes[1];
    let snapshot = newcomer
        .server()
        .cluster()
        .raft()
        .metrics()
        .borrow()
        .snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index >= applied),
        "newcomer has no snapshot: {snapshot:?}"
    );
    for i in [0, 29] {
        let resp = newcomer
            .get(&format!("/v2/s/app/manifests/t{i}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "t{i} on the newcomer");
        let digest = sha256(&manifest(&config, i));
        assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    }
}

#[tokio::test]
async fn peers_without_the_secret_are_refused() {
    let cluster = TestCluster::start(1).await;
    let addr = cluster.nodes[0].server().peer_addr.unwrap().to_string();
    use berth::cluster::discovery::hello_at;
    use berth::cluster::peer::{PeerPool, Secret};
    let wrong = PeerPool::new(Secret::new("not-the-cluster-secret").unwrap());
    let status = hello_at(&wrong, &addr).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let none = PeerPool::new(Secret::none());
    let status = hello_at(&none, &addr).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let right = PeerPool::new(Secret::new(SECRET).unwrap());
    let hello = hello_at(&right, &addr).await.unwrap();
    assert_eq!(hello.node_id, cluster.nodes[0].server().cluster().id());
    assert!(hello.initialized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_found_by_dns_join_and_can_be_removed_with_the_secret() {
    let mut cluster = TestCluster::start(2).await;
    // The third finds the seed through a name resolved by DNS (the hosts file).
    let seed_port = cluster.nodes[0].server().peer_addr.unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.cluster_secret_file = Some(cluster.secret.path().join("secret"));
    config.peers = vec![format!("dns:localhost:{seed_port}").parse().unwrap()];
    cluster.nodes.push(TestNode::start_with(dir, config).await);
    cluster.wait_voters(3).await;

    let victim = cluster.nodes[2].server().cluster().id();
    let path = format!("/_berth/cluster/members/{victim}");
    let denied = cluster.nodes[0].delete(&path).send().await.unwrap();
    assert_oci_error(denied, 403, "DENIED").await;
    let wrong = cluster.nodes[0]
        .delete(&path)
        .header(berth::api::admin::SECRET_HEADER, "not-the-cluster-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let removed = cluster.nodes[1]
        .delete(&path)
        .header(berth::api::admin::SECRET_HEADER, SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    cluster.wait_voters(2).await;
    let status = cluster.nodes[0].server().cluster().status();
    assert!(
        status.members.iter().all(|m| m.node_id != victim),
        "{status:?}"
    );
    let again = cluster.nodes[0]
        .delete(&path)
        .header(berth::api::admin::SECRET_HEADER, SECRET)
        .send()
        .await
        .unwrap();
    assert_oci_error(again, 404, "NAME_UNKNOWN").await;
}

async fn probe(node: &TestNode, path: &str) -> (StatusCode, String) {
    let resp = node.get(path).send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_is_ready_only_once_it_has_joined() {
    let mut cluster = TestCluster::start(1).await;
    assert_eq!(probe(&cluster.nodes[0], "/readyz").await.0, StatusCode::OK);
    // A node whose peers never answer is alive but not ready.
    let dir = tempfile::tempdir().unwrap();
    let mut config = cluster.member_config(dir.path());
    config.peers = vec![berth::cluster::PeerSpec::Addr("127.0.0.1:9".into())];
    let lonely = TestNode::start_with(dir, config).await;
    assert_eq!(probe(&lonely, "/healthz").await.0, StatusCode::OK);
    let (status, why) = probe(&lonely, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("not a voting member"), "{why}");
    // Swarm's check lets a node that is still joining pass, so it gets into
    // the DNS its peers find it by.
    assert_eq!(
        probe(&lonely, "/readyz?joining").await,
        (StatusCode::OK, "joining\n".to_owned())
    );
    // One that joins becomes ready.
    cluster.add_node().await;
    cluster.wait_voters(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&cluster.nodes[1], "/readyz").await.0 != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "a joined node never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_gone_longer_than_remove_after_is_removed_and_may_rejoin() {
    let mut cluster =
        TestCluster::with_config(3, |c| c.remove_after = Some(Duration::from_secs(2))).await;
    let gone = cluster.leader_index().map_or(2, |l| (l + 1) % 3);
    cluster.nodes[gone].stop().await;
    cluster.wait_voters(2).await;
    // Writes need two of two now, and both are up.
    let config = b"{}".to_vec();
    cluster.nodes[(gone + 1) % 3]
        .push_blob("e/app", &config)
        .await;
    cluster.nodes[gone].restart().await;
    cluster.wait_voters(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_returns_at_a_new_address_is_found_there() {
    let mut cluster = TestCluster::start(3).await;
    let moved = cluster.leader_index().map_or(2, |l| (l + 1) % 3);
    let id = cluster.nodes[moved].server().cluster().id();
    cluster.nodes[moved].stop().await;
    // Comes back on other ports, as a restarted container gets a new address.
    let config = cluster.nodes[moved].config_mut();
    config.listen.set_port(0);
    config.peer_listen.set_port(0);
    cluster.nodes[moved].restart().await;
    let new_peer = cluster.nodes[moved].server().peer_addr.unwrap().to_string();
    let other = (moved + 1) % 3;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.nodes[other].server().cluster().status();
        let member = status.members.iter().find(|m| m.node_id == id);
        if member.is_some_and(|m| m.voter && m.peer_addr == new_peer) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} not listed at {new_peer}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It is replicated to again: a write elsewhere is read there.
    let blob = random_blob(1000);
    let digest = cluster.nodes[other].push_blob("m/app", &blob).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = cluster.nodes[moved]
            .head(&format!("/v2/m/app/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the moved node never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node stopping at once, each with an abandoned upload still
/// streaming its copies to the others, stops within a few seconds: no node
/// waits for the others' streams to give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_stops_promptly_with_copies_in_flight() {
    let mut cluster = TestCluster::start(3).await;
    // On every node, so that each one's peers hold a stream from it.
    for node in &cluster.nodes {
        let location = node.start_upload("abandoned/app").await;
        let resp = send(node.patch(&location).body(random_blob(1 << 20))).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let started = std::time::Instant::now();
    let stops = cluster.nodes.iter_mut().map(|n| n.stop());
    let stopped = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join_all(stops),
    )
    .await;
    assert!(stopped.is_ok(), "the cluster had not stopped after 30 s");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(6),
        "the cluster took {took:?} to stop"
    );
}

/// A leader that stops hands leadership to a member holding its whole log,
/// without waiting for an election timeout, and writes go on through the
/// node that led.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_hands_leadership_to_a_caught_up_member() {
    let cluster = TestCluster::start(3).await;
    let config_bytes = b"{}".to_vec();
    let config = Blob::new(OCI_CONFIG, sha256(&config_bytes), config_bytes.len());
    cluster.nodes[0].push_blob("h/app", &config_bytes).await;
    // Voters refuse other candidates for an election timeout (2 s) after they
    // heard from a leader, the leader too after its election.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let leader = cluster.leader_index().expect("a leader");
    let old = cluster.nodes[leader].server().cluster().id();
    let to = cluster.nodes[leader]
        .server()
        .cluster()
        .hand_off_leadership()
        .await
        .expect("leadership handed over")
        .expect("the node led");
    assert_ne!(to, old);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.server().cluster().status().leader_id != Some(to) {
            assert!(
                Instant::now() < deadline,
                "node {i} does not name {to} leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let resp = cluster.nodes[leader]
        .put("/v2/h/app/manifests/after")
        .header("content-type", OCI_MANIFEST)
        .body(manifest(&config, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "a write through the old leader"
    );
    // A node that does not lead has nothing to hand over.
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.server().cluster().id() != to)
        .unwrap();
    let none = follower.server().cluster().hand_off_leadership().await;
    assert!(matches!(none, Ok(None)), "a follower handed over: {none:?}");
}

/// Polls node `i`'s last repair report every 50 ms, for at most 30 s, until
/// `done` accepts it.
async fn until_repair(
    cluster: &TestCluster,
    i: usize,
    what: &str,
    done: impl Fn(&berth::cluster::status::RepairReport) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = cluster.nodes[i].server().registry.cluster_status().repair;
        if report.as_ref().is_some_and(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within 30 s: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_repair_round_reads_no_blob_and_a_busy_one_only_those_that_changed() {
    const BLOBS: usize = 20;
    let cluster = TestCluster::start(3).await;
    for i in 0..BLOBS {
        cluster.nodes[i % 3]
            .push_blob("feed/app", &random_blob(1000 + i))
            .await;
    }
    // The first rounds read everything; once every copy is in place and
    // recorded, a round reads only what changed: nothing, when idle.
    until_repair(&cluster, 0, "idle round", |r| {
        !r.full_pass && r.examined == 0
    })
    .await;
    cluster.nodes[1]
        .push_blob("feed/app", &random_blob(5000))
        .await;
    // Its link and its third copy may land in one round or two.
    until_repair(&cluster, 0, "round over the new blob alone", |r| {
        !r.full_pass && r.examined == 1
    })
    .await;
    until_repair(&cluster, 0, "idle round", |r| {
        !r.full_pass && r.examined == 0
    })
    .await;
}
