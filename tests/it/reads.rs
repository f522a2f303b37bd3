//! Reads by digest in a cluster: every node sees a delete that completed
//! before the read, even a node whose log is behind; and a node cut off from
//! the quorum still serves what it holds, promptly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cluster::TestCluster;
use crate::common::*;

/// Where a [`Proxy`] sends what it receives, and whether it does now.
#[derive(Clone, Copy)]
struct Route {
    to: Option<SocketAddr>,
    open: bool,
}

/// A TCP forwarder in front of a node's peer port. The node advertises the
/// proxy, so everything its peers send it (appends, heartbeats) passes here
/// and can be held back, while the node still reaches its peers directly.
struct Proxy {
    addr: SocketAddr,
    route: watch::Sender<Route>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let route = watch::Sender::new(Route {
            to: None,
            open: true,
        });
        let routes = route.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, routes.subscribe()));
            }
        });
        Proxy { addr, route, task }
    }

    fn point_at(&self, to: SocketAddr) {
        self.route.send_modify(|r| r.to = Some(to));
    }

    /// Drops every connection through the proxy; new ones wait for `heal`.
    fn cut(&self) {
        self.route.send_modify(|r| r.open = false);
    }

    fn heal(&self) {
        self.route.send_modify(|r| r.open = true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut inbound: TcpStream, mut route: watch::Receiver<Route>) {
    let to = match route.wait_for(|r| r.open && r.to.is_some()).await {
        Ok(r) => r.to,
        Err(_) => return,
    };
    let Some(to) = to else { return };
    let Ok(mut outbound) = TcpStream::connect(to).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = route.wait_for(|r| !r.open) => {}
    }
}

/// A cluster of `n` whose nodes each advertise a [`Proxy`] in front of them.
async fn proxied_cluster(n: usize) -> (TestCluster, Vec<Proxy>) {
    let mut cluster = TestCluster::empty(|_| {});
    let mut proxies = Vec::new();
    for _ in 0..n {
        let proxy = Proxy::start().await;
        let addr = proxy.addr.to_string();
        cluster.add_node_with(|c| c.advertise = Some(addr)).await;
        let node = cluster.nodes.last().unwrap();
        proxy.point_at(node.server().peer_addr.unwrap());
        proxies.push(proxy);
    }
    cluster.wait_voters(n).await;
    (cluster, proxies)
}

/// The last log index node `i` has applied.
fn applied(cluster: &TestCluster, i: usize) -> u64 {
    let raft = cluster.nodes[i].server().cluster().raft();
    let metrics = raft.metrics();
    let applied = metrics.borrow().last_applied;
    applied.map_or(0, |l| l.index)
}

/// A read by digest: HEAD or GET of a blob or a manifest.
fn digest_read(node: &TestNode, method: Method, path: &str) -> reqwest::RequestBuilder {
    node.req(method, path).header("accept", OCI_MANIFEST)
}

/// The four reads by digest of a pushed image's first layer and manifest.
fn reads_of(repo: &str, image: &PushedImage) -> Vec<(Method, String)> {
    let blob = format!("/v2/{repo}/blobs/{}", image.layers[0].0.digest);
    let manifest = format!("/v2/{repo}/manifests/{}", image.digest);
    [blob, manifest]
        .into_iter()
        .flat_map(|p| [(Method::HEAD, p.clone()), (Method::GET, p)])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_is_seen_at_once_by_reads_on_every_node_even_one_behind() {
    let (cluster, proxies) = proxied_cluster(3).await;
    let leader = cluster.leader_index().expect("a leader");
    let behind = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    let image = cluster.nodes[writer].push_image("d/app", "v1").await;
    let reads = reads_of("d/app", &image);
    // The node that falls behind holds the image in its own state first.
    let raft = cluster.nodes[behind].server().cluster().raft().clone();
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(applied(&cluster, writer)), "the push")
        .await
        .unwrap();
    for (method, path) in &reads {
        let resp = send(digest_read(&cluster.nodes[behind], method.clone(), path)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{method} {path} before");
    }

    // It hears nothing from the leader now; without elections of its own it
    // keeps following it, as a node that is merely slow does.
    raft.runtime_config().elect(false);
    proxies[behind].cut();
    let manifest = format!("/v2/d/app/manifests/{}", image.digest);
    let blob = format!("/v2/d/app/blobs/{}", image.layers[0].0.digest);
    for path in [&manifest, &blob] {
        let resp = send(cluster.nodes[writer].delete(path)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "DELETE {path}");
    }

    for i in [writer, leader] {
        for (method, path) in &reads {
            let resp = send(digest_read(&cluster.nodes[i], method.clone(), path)).await;
            assert_eq!(
                resp.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} on node {i}"
            );
        }
    }
    // The node behind may answer only once it has caught up.
    let pending: Vec<_> = reads
        .iter()
        .map(|(method, path)| {
            let req = digest_read(&cluster.nodes[behind], method.clone(), path);
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        applied(&cluster, behind) < applied(&cluster, writer),
        "the node has not applied the deletes while cut off"
    );
    proxies[behind].heal();
    for ((method, path), read) in reads.iter().zip(pending) {
        let status = read.await.unwrap().expect("the node answers");
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} on the node behind"
        );
    }
    raft.runtime_config().elect(true);
}

/// With the other two nodes stopped, `survivor` serves the image it holds by
/// digest, each read within a bound, for longer than a failed read index is
/// remembered.
async fn a_node_without_quorum_serves_by_digest(survivor_leads: bool) {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader_index().expect("a leader");
    let survivor = if survivor_leads {
        leader
    } else {
        (leader + 1) % 3
    };
    let image = cluster.nodes[survivor].push_image("q/app", "v1").await;
    let reads = reads_of("q/app", &image);
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.nodes[i].stop().await;
    }
    let node = &cluster.nodes[survivor];
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for (method, path) in &reads {
            let started = Instant::now();
            let resp = send(digest_read(node, method.clone(), path)).await;
            let took = started.elapsed();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{method} {path} without quorum"
            );
            assert!(
                took < Duration::from_secs(3),
                "{method} {path} took {took:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let layer = &image.layers[0];
    let body = send(node.get(&format!("/v2/q/app/blobs/{}", layer.0.digest)))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), layer.1.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_without_quorum_serves_what_it_holds_by_digest_promptly() {
    a_node_without_quorum_serves_by_digest(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_quorum_serves_what_it_holds_by_digest_promptly() {
    a_node_without_quorum_serves_by_digest(true).await;
}
