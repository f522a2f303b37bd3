//! Three-node clusters of real `berth serve` processes: a kill -9 of the
//! leader in the middle of a stream of writes, a killed node catching up on
//! restart, `berth cluster status`, and the answers of a node that has lost
//! its quorum.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::cluster::status::StatusReport;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde_json::json;
use tempfile::TempDir;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const REPO: &str = "proc/app";
/// Longest wait for a cluster to form, elect or catch up.
const SETTLE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// Client timeout of every registry request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the nodes find each other.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Formation {
    /// Every node lists every peer and `--bootstrap-expect N` (Swarm,
    /// Kubernetes): the lowest node id initializes the cluster.
    Expect,
    /// The first node forms a one-node cluster; the others join it.
    Seed,
}

/// One `berth serve` child process and how to start it again.
struct ProcNode {
    api: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ProcNode {
    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log file");
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .env("BERTH_LOG", "info")
            .env("BERTH_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the child dies with the test
        // even when the test process is killed before Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("berth serve starts"));
    }

    /// SIGKILL, then reap. Nothing happens if the node is not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Why the node stopped on its own, if it did.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!(
            "{} exited with {status}:\n{}",
            self.api,
            log_tail(&self.log, 30)
        ))
    }

    fn base(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Where the log ends now: later lines are the node's from here on.
    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log written since `from`.
    fn log_since(&self, from: u64) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = (from as usize).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Waits until a line containing `text` is logged after `from`.
    async fn wait_logged(&mut self, from: u64, text: &str) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        while !self.log_since(from).contains(text) {
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!("{} logged no {text:?} within {SETTLE:?}", self.api));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// N `berth serve` processes on loopback sharing a cluster secret, each with
/// its data directory and log in one temporary directory. Every child is
/// killed on drop; the logs are printed when a test fails.
pub(crate) struct ProcessCluster {
    nodes: Vec<ProcNode>,
    pub(crate) http: reqwest::Client,
    _dir: TempDir,
}

impl ProcessCluster {
    /// Starts `n` nodes and waits until they agree on a leader and `n`
    /// voters. Ports are picked free; a start that loses a port race is
    /// retried on new ones.
    pub(crate) async fn start(
        n: usize,
        formation: Formation,
        write_timeout: u64,
    ) -> ProcessCluster {
        ProcessCluster::start_with(n, formation, write_timeout, &[]).await
    }

    /// [`ProcessCluster::start`] with extra `serve` flags for every node.
    async fn start_with(
        n: usize,
        formation: Formation,
        write_timeout: u64,
        extra: &[&str],
    ) -> ProcessCluster {
        for attempt in 1..=3 {
            let mut cluster = ProcessCluster::spawn(n, formation, write_timeout, extra);
            match cluster.wait_leader().await {
                Ok(_) => return cluster,
                Err(e) if attempt < 3 && e.contains("cannot listen") => continue,
                Err(e) => panic!("{n}-node cluster ({formation:?}) did not form: {e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(n: usize, formation: Formation, write_timeout: u64, extra: &[&str]) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "process-cluster-secret-0123456789").expect("secret file");
        let ports = free_ports(2 * n);
        let (apis, peers) = ports.split_at(n);
        let all_peers = peers.iter().map(ToString::to_string).collect::<Vec<_>>();
        let nodes = (0..n)
            .map(|i| {
                let mut args = vec![
                    "serve".to_owned(),
                    "--plain-http".to_owned(),
                    format!(
                        "--data-dir={}",
                        dir.path().join(format!("node{i}")).display()
                    ),
                    format!("--listen={}", apis[i]),
                    format!("--peer-listen={}", peers[i]),
                    format!("--cluster-secret-file={}", secret.display()),
                    format!("--write-timeout={write_timeout}"),
                ];
                args.extend(extra.iter().map(|a| a.to_string()));
                match formation {
                    Formation::Expect => args.extend([
                        format!("--peers={}", all_peers.join(",")),
                        format!("--bootstrap-expect={n}"),
                    ]),
                    Formation::Seed if i > 0 => args.push(format!("--peers={}", peers[0])),
                    Formation::Seed => {}
                }
                let mut node = ProcNode {
                    api: apis[i],
                    args,
                    log: dir.path().join(format!("node{i}.log")),
                    child: None,
                };
                node.spawn();
                node
            })
            .collect();
        ProcessCluster {
            nodes,
            // Idle connections are dropped well before the server's limit.
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            _dir: dir,
        }
    }

    pub(crate) fn base(&self, i: usize) -> String {
        self.nodes[i].base()
    }

    pub(crate) fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    async fn status(&self, i: usize) -> Option<StatusReport> {
        let url = format!("{}/_berth/cluster/status", self.base(i));
        let resp = self.http.get(url).timeout(Duration::from_secs(2)).send();
        resp.await.ok()?.json().await.ok()
    }

    async fn get(&self, i: usize, reference: &str) -> reqwest::Result<Response> {
        let url = format!("{}/v2/{REPO}/manifests/{reference}", self.base(i));
        self.http
            .get(url)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
    }

    /// What tag `t<n>` resolves to on node `i`: `Some(digest)` (checked
    /// against the body), `None` for 404, `Err` for anything else.
    async fn tagged(&self, i: usize, n: usize) -> Result<Option<String>, String> {
        self.resolve(i, &format!("t{n}")).await
    }

    /// What `reference` resolves to on node `i`, as [`Self::tagged`].
    async fn resolve(&self, i: usize, reference: &str) -> Result<Option<String>, String> {
        let resp = self.get(i, reference).await.map_err(|e| e.to_string())?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let digest = header(&resp, "docker-content-digest");
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if sha256(&body) != digest {
                    return Err(format!("the body is not {digest}"));
                }
                Ok(Some(digest))
            }
            other => Err(format!("status {other}")),
        }
    }

    /// Polls the status of every running node until `done` accepts the
    /// answers, a node exits on its own, or [`SETTLE`] passes.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        done: impl Fn(&[(usize, StatusReport)]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(e) = self.nodes.iter_mut().find_map(ProcNode::exited) {
                return Err(e);
            }
            let mut seen = Vec::new();
            for i in self.running() {
                if let Some(s) = self.status(i).await {
                    seen.push((i, s));
                }
            }
            if let Some(t) = done(&seen) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(format!("no {what} within {SETTLE:?}; last seen {seen:#?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The index of the leader all running nodes agree on, with every
    /// member a voter.
    async fn wait_leader(&mut self) -> Result<usize, String> {
        let (running, n) = (self.running().len(), self.nodes.len());
        self.wait_for("agreed leader", |seen| agreed_leader(seen, running, n))
            .await
    }

    pub(crate) async fn leader(&mut self) -> usize {
        self.wait_leader().await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn kill9(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with the same data directory, ports and flags,
    /// and waits until it answers.
    pub(crate) async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.wait_for("answer from the restarted node", |seen| {
            seen.iter().any(|(j, _)| *j == i).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("node {i} did not come back: {e}"));
    }

    /// Starts one more node, with the flags of the others, that finds the
    /// cluster through their peer addresses and asks to join; returns its
    /// index. [`ProcessCluster::leader`] then waits until it is a voter.
    pub(crate) fn join_node(&mut self) -> usize {
        let i = self.nodes.len();
        let dir = self._dir.path();
        let ports = free_ports(2);
        let flag = |a: &String, name: &str| a.starts_with(&format!("--{name}="));
        let peers: Vec<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.args.iter())
            .filter_map(|a| a.strip_prefix("--peer-listen="))
            .collect();
        let own = [
            "peers",
            "bootstrap-expect",
            "data-dir",
            "listen",
            "peer-listen",
        ];
        let mut args: Vec<String> = self.nodes[0]
            .args
            .iter()
            .filter(|a| !own.iter().any(|name| flag(a, name)))
            .cloned()
            .collect();
        args.extend([
            format!("--data-dir={}", dir.join(format!("node{i}")).display()),
            format!("--listen={}", ports[0]),
            format!("--peer-listen={}", ports[1]),
            format!("--peers={}", peers.join(",")),
        ]);
        let mut node = ProcNode {
            api: ports[0],
            args,
            log: dir.join(format!("node{i}.log")),
            child: None,
        };
        node.spawn();
        self.nodes.push(node);
        i
    }

    /// Node `i`'s log since it was first started.
    pub(crate) fn log(&self, i: usize) -> String {
        self.nodes[i].log_since(0)
    }

    /// Returns once node `i` passes `/readyz`, polled every 10 ms for at
    /// most [`SETTLE`].
    pub(crate) async fn until_ready(&mut self, i: usize) {
        let started = Instant::now();
        let url = format!("{}/readyz", self.base(i));
        loop {
            let ready = self.http.get(&url).timeout(Duration::from_secs(2)).send();
            if ready.await.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            if let Some(e) = self.nodes[i].exited() {
                panic!("{e}");
            }
            assert!(
                started.elapsed() < SETTLE,
                "node {i} not ready within {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pushes the config blob every test manifest refers to, through node `i`.
    async fn push_config(&self, i: usize) -> Blob {
        self.push_config_to(i, REPO).await
    }

    /// [`ProcessCluster::push_config`] into `repo`.
    pub(crate) async fn push_config_to(&self, i: usize, repo: &str) -> Blob {
        let bytes = b"{}".to_vec();
        let digest = sha256(&bytes);
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base(i));
        let resp = send(self.http.post(url)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST uploads/");
        let location = header(&resp, LOCATION.as_str());
        let url = with_digest(&format!("{}{location}", self.base(i)), &digest);
        let resp = send(self.http.put(url).body(bytes.clone())).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT config blob");
        Blob::new(OCI_CONFIG, digest, bytes.len())
    }

    /// Writes manifests `range` as tags `t<i>`, round-robin over `through`;
    /// every one must be acknowledged.
    async fn write_all(&self, config: &Blob, through: &[usize], range: std::ops::Range<usize>) {
        for i in range {
            let node = through[i % through.len()];
            let sent = put_manifest(&self.http, &self.base(node), config, i).await;
            let status = sent.map(|r| r.status()).map_err(|e| e.to_string());
            assert_eq!(status, Ok(StatusCode::CREATED), "PUT t{i} on node {node}");
        }
    }
}

impl ProcessCluster {
    fn blob_path(&self, i: usize, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self._dir
            .path()
            .join(format!("node{i}/blobs/sha256"))
            .join(&hex[..2])
            .join(hex)
    }

    /// Whether node `i` stores the blob's bytes.
    fn holds(&self, i: usize, digest: &str) -> bool {
        self.blob_path(i, digest).exists()
    }

    /// Whether node `i`'s process has the blob's file open: a holder keeps
    /// it open while it streams the blob to a peer.
    fn reading(&self, i: usize, digest: &str) -> bool {
        let (Some(child), Ok(blob)) = (
            &self.nodes[i].child,
            self.blob_path(i, digest).canonicalize(),
        ) else {
            return false;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", child.id())) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == blob))
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.kill();
            if std::thread::panicking() {
                eprintln!(
                    "--- node {i} ({}) log ---\n{}",
                    node.api,
                    log_tail(&node.log, 60)
                );
            }
        }
    }
}

/// `Some(index of the leader)` when `answering` nodes answered, all name the
/// same leader, which is one of them, and each sees `voters` voters.
fn agreed_leader(seen: &[(usize, StatusReport)], answering: usize, voters: usize) -> Option<usize> {
    let leader = seen.first()?.1.leader_id?;
    let agree = seen.iter().all(|(_, s)| {
        s.leader_id == Some(leader) && s.members.iter().filter(|m| m.voter).count() == voters
    });
    if seen.len() != answering || !agree {
        return None;
    }
    seen.iter()
        .find(|(_, s)| s.node_id == leader)
        .map(|(i, _)| *i)
}

/// Loopback addresses free at the time of the call, all distinct.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound address"))
        .collect()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A manifest made unique by `i`, over the config blob alone.
fn manifest(config: &Blob, i: usize) -> Vec<u8> {
    image_manifest(
        config,
        &[],
        json!({ "annotations": { "n": i.to_string() } }),
    )
}

/// PUT of manifest `n` as tag `t<n>` on the node at `base`.
async fn put_manifest(
    http: &reqwest::Client,
    base: &str,
    config: &Blob,
    n: usize,
) -> reqwest::Result<Response> {
    http.put(format!("{base}/v2/{REPO}/manifests/t{n}"))
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest(config, n))
        .send()
        .await
}

/// Runs `berth ARGS` to completion (bounded); returns its standard output.
async fn cli(args: &[&str]) -> String {
    let run = tokio::process::Command::new(BIN).args(args).output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("berth finishes")
        .expect("berth runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "berth {args:?}: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A 503 with the OCI code UNAVAILABLE, a message and Retry-After.
async fn assert_unavailable(resp: Response, what: &str) {
    assert!(
        resp.headers().contains_key(RETRY_AFTER),
        "{what}: no Retry-After on {} {:?}",
        resp.status(),
        resp.headers()
    );
    assert_oci_error(resp, 503, "UNAVAILABLE").await;
}

/// One write of the stream and how it ended.
struct Write {
    i: usize,
    node: usize,
    started: Instant,
    finished: Instant,
    /// The status and whether Retry-After came with it, or the transport error.
    outcome: Result<(StatusCode, bool), String>,
}

impl Write {
    fn acknowledged(&self) -> bool {
        matches!(self.outcome, Ok((StatusCode::CREATED, _)))
    }
}

/// Writers sharing a counter: each takes the next write number `i` below
/// `total` and sends it to node `i % bases.len()`.
#[derive(Clone)]
struct WriteStream {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    config: Blob,
    total: usize,
    next: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl WriteStream {
    async fn run(self) -> Vec<Write> {
        let mut writes = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= self.total {
                return writes;
            }
            let node = i % self.bases.len();
            let started = Instant::now();
            let sent = put_manifest(&self.http, &self.bases[node], &self.config, i).await;
            let outcome = match sent {
                Ok(r) => Ok((r.status(), r.headers().contains_key(RETRY_AFTER))),
                Err(e) => Err(e.to_string()),
            };
            let finished = Instant::now();
            writes.push(Write {
                i,
                node,
                started,
                finished,
                outcome,
            });
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The write timeout of the kill -9 test's nodes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_leader_mid_stream_loses_no_acknowledged_write() {
    const TOTAL: usize = 300;
    let mut cluster = ProcessCluster::start(3, Formation::Expect, WRITE_TIMEOUT.as_secs()).await;
    let config = cluster.push_config(0).await;
    let victim = cluster.leader().await;
    let stream = WriteStream {
        http: cluster.http.clone(),
        bases: Arc::new((0..3).map(|i| cluster.base(i)).collect()),
        config: config.clone(),
        total: TOTAL,
        next: Arc::default(),
        done: Arc::default(),
    };
    let done = stream.done.clone();
    let writers: Vec<_> = (0..3).map(|_| tokio::spawn(stream.clone().run())).collect();
    let deadline = Instant::now() + SETTLE;
    while done.load(Ordering::SeqCst) < TOTAL / 3 {
        assert!(
            Instant::now() < deadline,
            "a third of the writes took over {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    cluster.kill9(victim);
    let mut writes = Vec::new();
    for w in writers {
        let joined = tokio::time::timeout(Duration::from_secs(180), w).await;
        writes.extend(joined.expect("writers finish").expect("writer task"));
    }
    writes.sort_by_key(|w| w.i);
    assert_eq!(writes.len(), TOTAL);

    let after: Vec<&Write> = writes.iter().filter(|w| w.started >= killed_at).collect();
    let acked_after: Vec<Duration> = after
        .iter()
        .filter(|w| w.acknowledged())
        .map(|w| w.finished - killed_at)
        .collect();
    let failed = writes.iter().filter(|w| !w.acknowledged()).count();
    eprintln!(
        "leader kill -9: {} acknowledged, {failed} failed; {} of {} started after the kill \
         acknowledged, the first {:?} after it",
        TOTAL - failed,
        acked_after.len(),
        after.len(),
        acked_after.iter().min()
    );
    assert!(!acked_after.is_empty(), "no write succeeded after the kill");

    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    cluster.leader().await;
    let (mut violations, mut committed_anyway) = (Vec::new(), 0);
    for w in &writes {
        let mut seen = Vec::new();
        for &s in &survivors {
            seen.push(cluster.tagged(s, w.i).await);
        }
        violations.extend(judge(w, &seen, &config, victim, killed_at));
        committed_anyway += usize::from(!w.acknowledged() && matches!(seen[0], Ok(Some(_))));
    }
    assert!(violations.is_empty(), "{violations:#?}");
    eprintln!("{committed_anyway} failed writes were committed all the same");
}

/// What is wrong with write `w`, given what each survivor now resolves
/// its tag to.
fn judge(
    w: &Write,
    seen: &[Result<Option<String>, String>],
    config: &Blob,
    victim: usize,
    killed_at: Instant,
) -> Vec<String> {
    let want = Ok(Some(sha256(&manifest(config, w.i))));
    // A failed write may or may not have been committed, but it is the same
    // on every survivor and never another manifest.
    let durable = if w.acknowledged() {
        seen.iter().all(|g| g == &want)
    } else {
        seen.iter().all(|g| g == &seen[0]) && (seen[0] == want || seen[0] == Ok(None))
    };
    let answered_well = match &w.outcome {
        Ok((StatusCode::CREATED, _)) | Ok((StatusCode::SERVICE_UNAVAILABLE, true)) => true,
        Ok(_) => false,
        Err(_) => w.node == victim,
    };
    let mut wrong = Vec::new();
    let what = format!("t{} on node {} ({:?})", w.i, w.node, w.outcome);
    if !durable {
        wrong.push(format!("{what}: survivors resolve it to {seen:?}"));
    }
    if !answered_well {
        wrong.push(format!("{what}: not a 503 with Retry-After"));
    }
    if w.finished < killed_at && !w.acknowledged() {
        wrong.push(format!("{what}: failed before the kill"));
    }
    // A survivor holds a write through the election: it fails only once
    // the write timeout has passed.
    let took = w.finished - w.started;
    if w.node != victim && !w.acknowledged() && took < WRITE_TIMEOUT {
        wrong.push(format!(
            "{what}: failed after {took:?}, within the write timeout"
        ));
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_restarts_and_catches_up() {
    let mut cluster = ProcessCluster::start(3, Formation::Seed, 5).await;
    let leader = cluster.leader().await;
    let config = cluster.push_config(leader).await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    cluster.write_all(&config, &[0, 1, 2], 0..10).await;
    cluster.kill9(follower);
    cluster.write_all(&config, &[leader, other], 10..60).await;
    let leader_status = cluster.status(leader).await.expect("leader status");
    let committed = leader_status.committed_index.expect("a committed index");

    let started = Instant::now();
    cluster.restart(follower).await;
    let want = sha256(&manifest(&config, 59));
    let deadline = started + SETTLE;
    loop {
        match cluster.tagged(follower, 59).await {
            Ok(Some(got)) => {
                assert_eq!(got, want, "t59 on the restarted node");
                break;
            }
            Ok(None) => panic!("the restarted node answered 404 for t59: a stale read"),
            Err(e) => assert!(Instant::now() < deadline, "no catch-up in {SETTLE:?}: {e}"),
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "restarted node served t59 {:?} after its restart",
        started.elapsed()
    );
    let status = cluster
        .status(follower)
        .await
        .expect("restarted node status");
    assert_eq!(status.leader_id, Some(leader_status.node_id), "{status:?}");
    assert!(
        status.applied_index >= Some(committed),
        "applied {:?} < committed {committed}",
        status.applied_index
    );
}

/// A manifest just under the 4 MiB cap, made unique by `i`.
fn big_manifest(config: &Blob, i: usize) -> Vec<u8> {
    let pad = hex::encode(random_blob(7 << 18));
    let annotations = json!({ "annotations": { "n": i.to_string(), "pad": pad } });
    image_manifest(config, &[], annotations)
}

impl ProcessCluster {
    /// Every tag of [`REPO`] as node `i` lists it.
    async fn tags(&self, i: usize) -> Vec<String> {
        let url = format!("{}/v2/{REPO}/tags/list?n=10000", self.base(i));
        let body = json_body(send(self.http.get(url)).await).await;
        serde_json::from_value(body["tags"].clone()).expect("a tag list")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_installing_a_snapshot_comes_back_and_converges() {
    const BIG: usize = 24;
    const SMALL: usize = 5100;
    let mut cluster = ProcessCluster::start(3, Formation::Expect, 10).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let others = [leader, (leader + 2) % 3];
    let config = cluster.push_config(leader).await;
    cluster.kill9(follower);

    // Near the size cap, these make the snapshot hundreds of MB that take
    // seconds to load, so the kill below lands inside the install.
    let test_started = Instant::now();
    let mut big = Vec::new();
    for i in 0..BIG {
        let body = big_manifest(&config, i);
        let url = format!("{}/v2/{REPO}/manifests/b{i}", cluster.base(leader));
        let put = cluster.http.put(url).header(CONTENT_TYPE, OCI_MANIFEST);
        let resp = send(put.body(body.clone())).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT b{i}");
        big.push(sha256(&body));
    }
    let phase = Instant::now();
    // Past the 5000 entries that make the leader snapshot and drop the log
    // the stopped node would need, keeping the last 1000. One writer: writes
    // that wait together would share entries.
    let stream = WriteStream {
        http: cluster.http.clone(),
        bases: Arc::new(others.iter().map(|&i| cluster.base(i)).collect()),
        config: config.clone(),
        total: SMALL,
        next: Arc::default(),
        done: Arc::default(),
    };
    let writers = vec![tokio::spawn(stream.run())];
    for w in writers {
        let writes = w.await.expect("writer task");
        assert!(writes.iter().all(Write::acknowledged), "a write failed");
    }
    eprintln!(
        "{BIG} large manifests took {:?}, {SMALL} small ones {:?}",
        phase - test_started,
        phase.elapsed()
    );
    let leader_node = &mut cluster.nodes[leader];
    let built = leader_node.wait_logged(0, "built a state-machine snapshot");
    built.await.unwrap_or_else(|e| panic!("{e}"));

    let node = &mut cluster.nodes[follower];
    let from = node.log_len();
    let phase = Instant::now();
    node.spawn();
    let loading = node.wait_logged(from, "loading a snapshot from the leader");
    loading.await.unwrap_or_else(|e| panic!("{e}"));
    cluster.kill9(follower);
    let killed = cluster.nodes[follower].log_since(from);
    eprintln!(
        "killed the installing node {:?} after its first restart",
        phase.elapsed()
    );
    assert!(
        !killed.contains("installed a snapshot"),
        "the install finished before the kill:\n{killed}"
    );

    let from = cluster.nodes[follower].log_len();
    let started = Instant::now();
    cluster.restart(follower).await;
    let want = Ok(Some(sha256(&manifest(&config, SMALL - 1))));
    while cluster.tagged(follower, SMALL - 1).await != want {
        assert!(started.elapsed() < SETTLE, "no catch-up within {SETTLE:?}");
        if let Some(e) = cluster.nodes[follower].exited() {
            panic!("{e}");
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "node killed while installing served the last tag {:?} after its restart",
        started.elapsed()
    );
    let restarted = cluster.nodes[follower].log_since(from);
    assert!(
        restarted.contains("a snapshot install was interrupted"),
        "the restart did not find the interrupted install:\n{restarted}"
    );
    let tags = cluster.tags(follower).await;
    assert_eq!(tags.len(), BIG + SMALL);
    assert_eq!(tags, cluster.tags(leader).await);
    for (i, digest) in big.iter().enumerate() {
        let got = cluster.resolve(follower, &format!("b{i}")).await;
        assert_eq!(got, Ok(Some(digest.clone())), "b{i} on the restarted node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_status_cli_shows_every_member() {
    let mut cluster = ProcessCluster::start(3, Formation::Expect, 5).await;
    let leader = cluster.leader().await;
    let node = cluster.base((leader + 1) % 3);
    let report: StatusReport =
        serde_json::from_str(&cli(&["cluster", "status", "--node", &node, "--json"]).await)
            .expect("status JSON");
    assert_eq!(report.members.len(), 3, "{report:#?}");
    assert_eq!(report.members.iter().filter(|m| m.leader).count(), 1);
    assert!(report.members.iter().all(|m| m.voter), "{report:#?}");
    assert!(
        report.term > 0 && report.applied_index.is_some(),
        "{report:#?}"
    );

    let table = cli(&["cluster", "status", "--node", &node]).await;
    for m in &report.members {
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.first() == Some(&m.node_id.to_string().as_str()))
            .collect();
        assert_eq!(rows.len(), 1, "member {} in\n{table}", m.node_id);
        assert_eq!(rows[0][1], "voter", "{table}");
        assert_eq!(rows[0][2] == "*", m.leader, "{table}");
    }
    assert_eq!(table.lines().count(), 2 + report.members.len(), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_answer_writes_without_quorum_with_503() {
    const WRITE_TIMEOUT: u64 = 3;
    let mut cluster = ProcessCluster::start(3, Formation::Expect, WRITE_TIMEOUT).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    let config = cluster.push_config(leader).await;
    cluster.write_all(&config, &[leader], 0..1).await;
    let digest = sha256(&manifest(&config, 0));
    let seen = cluster.tagged(survivor, 0).await;
    assert_eq!(seen, Ok(Some(digest.clone())), "t0 on the follower");
    cluster.kill9(leader);
    cluster.kill9((leader + 2) % 3);

    let started = Instant::now();
    let resp = put_manifest(&cluster.http, &cluster.base(survivor), &config, 1)
        .await
        .expect("the write is answered within the client timeout");
    let put_took = started.elapsed();
    assert_unavailable(resp, "PUT without quorum").await;

    let started = Instant::now();
    let resp = cluster.get(survivor, "t0").await.expect("GET by tag");
    assert_unavailable(resp, "GET by tag").await;
    let tag_took = started.elapsed();

    let started = Instant::now();
    let resp = cluster.get(survivor, &digest).await.expect("GET by digest");
    let digest_took = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK, "GET by digest");
    assert_eq!(sha256(&resp.bytes().await.expect("manifest body")), digest);
    eprintln!(
        "without quorum: PUT 503 after {put_took:?}, GET tag 503 after {tag_took:?}, \
         GET digest 200 after {digest_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_pull_survives_the_loss_of_its_holder() {
    let mut cluster =
        ProcessCluster::start_with(3, Formation::Expect, 10, &["--replication-factor=2"]).await;
    let data = random_blob(96 << 20);
    let digest = sha256(&data);
    let url = format!("{}/v2/{REPO}/blobs/uploads/", cluster.base(0));
    let resp = send(cluster.http.post(url)).await;
    let location = header(&resp, LOCATION.as_str());
    let url = with_digest(&format!("{}{location}", cluster.base(0)), &digest);
    let resp = send(cluster.http.put(url).body(data.clone())).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let holders: Vec<usize> = (0..3).filter(|&i| cluster.holds(i, &digest)).collect();
    assert_eq!(holders.len(), 2, "factor 2 keeps two copies");
    let reader = (0..3).find(|i| !holders.contains(i)).unwrap();

    let mut resp = cluster
        .http
        .get(format!("{}/v2/{REPO}/blobs/{digest}", cluster.base(reader)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = Vec::new();
    body.extend_from_slice(&resp.chunk().await.unwrap().expect("a first chunk"));
    // The relay picks a holder at random; the one it reads from dies
    // mid-stream, and the relay must carry on from the other.
    let source = holders
        .iter()
        .copied()
        .find(|&h| cluster.reading(h, &digest));
    let source = source.expect("the holder streaming the blob has it open");
    assert!(
        holders
            .iter()
            .all(|&h| h == source || !cluster.reading(h, &digest)),
        "only one holder streams the blob"
    );
    cluster.kill9(source);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!("the relay failed although a holder survived: {e}"),
        }
    }
    assert_eq!(body.len(), data.len());
    assert_eq!(
        sha256(&body),
        digest,
        "a completed relay must carry the blob's bytes"
    );
}

/// kill -9 in the middle of sweeping collected blobs: the restarted node
/// finishes the sweep by itself, and reports nothing left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_killed_midway_finishes_after_restart() {
    const BLOBS: usize = 4000;
    let mut cluster =
        ProcessCluster::start_with(1, Formation::Seed, 10, &["--gc-interval=0"]).await;
    let base = cluster.base(0);
    let uploads = (0..BLOBS).map(|i| {
        let bytes = format!("sweep me {i}").into_bytes();
        let url = format!("{base}/v2/{REPO}/blobs/uploads/?digest={}", sha256(&bytes));
        let req = cluster.http.post(url).body(bytes);
        async move { send(req).await.status() }
    });
    let mut pending = uploads.collect::<Vec<_>>();
    while !pending.is_empty() {
        let batch: Vec<_> = pending.drain(..pending.len().min(16)).collect();
        for status in futures_util::future::join_all(batch).await {
            assert_eq!(status, StatusCode::CREATED);
        }
    }
    // A restart forgets the pins of files that just arrived.
    cluster.kill9(0);
    cluster.restart(0).await;
    let blobs = cluster._dir.path().join("node0/blobs");
    assert_eq!(files_under(&blobs).len(), BLOBS);

    let gc = send(
        cluster
            .http
            .post(format!("{base}/_berth/gc"))
            .json(&json!({"grace": 0})),
    )
    .await;
    assert_eq!(gc.status(), StatusCode::OK);
    let started = Instant::now();
    let mut left = files_under(&blobs).len();
    while left == BLOBS && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        left = files_under(&blobs).len();
    }
    cluster.kill9(0);
    let at_kill = files_under(&blobs).len();
    eprintln!("killed with {at_kill} of {BLOBS} files left");
    assert!(at_kill < BLOBS, "the sweep never started");
    cluster.restart(0).await;
    let mut report = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let resp = send(cluster.http.get(format!("{base}/_berth/gc"))).await;
        report = resp.json().await.unwrap_or_default();
        let done = report["nodes"][0]["pending"] == 0 && files_under(&blobs).is_empty();
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        files_under(&blobs).is_empty(),
        "files left after the restarted sweep"
    );
    assert_eq!(report["nodes"][0]["pending"], 0, "{report}");
    assert_eq!(report["last_run"]["blobs"], BLOBS, "{report}");
    // Nothing of them is left in the metadata either.
    let head = format!("{base}/v2/{REPO}/blobs/{}", sha256(b"sweep me 0"));
    assert_eq!(
        send(cluster.http.head(head)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_pull_through_survives_the_kill_of_the_fetching_node() {
    use crate::upstream::{Auth, FakeUpstream};
    // 16 MiB in 64 KiB pieces, 20 ms apart: about five seconds upstream.
    let upstream = FakeUpstream::start(Auth::None, Duration::from_millis(20)).await;
    let image = upstream.add_image("big/app", "v1", vec![random_blob(16 << 20)]);
    let (layer, bytes) = image.layers[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.yaml");
    let yaml = format!(
        "mirrors:\n  - name: up\n    url: {}\n    anonymous: true\n",
        upstream.url()
    );
    std::fs::write(&config, yaml).unwrap();
    let flag = format!("--config={}", config.display());
    let mut cluster = ProcessCluster::start_with(3, Formation::Expect, 5, &[&flag]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let bases: Vec<String> = (0..3).map(|i| cluster.base(i)).collect();
    let pull = |i: usize| {
        let url = format!("{}/v2/up/big/app/blobs/{layer}", bases[i]);
        let http = http.clone();
        async move {
            let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
            match resp.status() {
                StatusCode::OK => resp.bytes().await.map_err(|e| e.to_string()),
                s => Err(format!("status {s}")),
            }
        }
    };
    let waiting: Vec<_> = (0..3).map(|i| tokio::spawn(pull(i))).collect();

    // The fetcher is the node with upstream bytes; kill it mid-blob.
    let deadline = Instant::now() + SETTLE;
    let fetcher = loop {
        let mut found = None;
        for i in 0..3 {
            let url = format!("{}/_berth/mirrors", cluster.base(i));
            let Ok(resp) = cluster.http.get(url).send().await else {
                continue;
            };
            let Ok(report) = resp.json::<serde_json::Value>().await else {
                continue;
            };
            if report[0]["upstream_bytes"].as_u64().unwrap_or(0) > 0 {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no node started fetching");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[fetcher].kill();

    // Each waiting client elsewhere completes, or fails cleanly and
    // succeeds on retry; none gets wrong bytes.
    for (i, waiter) in waiting.into_iter().enumerate() {
        let got = waiter.await.unwrap();
        if i == fetcher {
            continue;
        }
        let got = match got {
            Ok(b) => b,
            Err(e) => {
                eprintln!("node {i}'s first pull failed ({e}); retrying");
                pull(i).await.expect("the retry succeeds")
            }
        };
        assert!(got == bytes[..], "node {i} served the wrong bytes");
    }
    // The blob came from upstream once before the kill and once after.
    assert_eq!(upstream.count("GET", &format!("/blobs/{layer}")), 2);
}
