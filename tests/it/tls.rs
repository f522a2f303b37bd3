//! HTTPS on the client listener: certificates from files, reloaded when they
//! change, and upload sessions forwarded between nodes over HTTPS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use berth::cluster::peer::PeerTlsFiles;
use berth::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use reqwest::StatusCode;

use crate::cluster::TestCluster;
use crate::common::*;

/// A test certificate authority.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for 127.0.0.1 and localhost, written as `name`.pem and
    /// `name`-key.pem into `dir`; returns the files and the certificate's DER.
    pub(crate) fn issue(&self, dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, cert.der().to_vec())
    }

    /// The authority's own certificate, to trust.
    pub(crate) fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// A peer certificate (it names `berth-peer`) with the CA beside it.
    fn issue_peer(&self, dir: &Path, name: &str) -> PeerTlsFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::DnsName(
            berth::cluster::peer::PeerTls::NAME.try_into().unwrap(),
        )];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = PeerTlsFiles {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.ca, self.cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A client that trusts only this authority, on a fresh connection.
    fn client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }
}

pub(crate) async fn tls_node(files: &TlsFiles) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.tls = Some(files.clone());
    TestNode::start_with(dir, config).await
}

/// The DER of the certificate `node` serves right now.
async fn served_certificate(ca: &Ca, node: &TestNode) -> Vec<u8> {
    let resp = ca
        .client()
        .get(format!("https://127.0.0.1:{}/v2/", node.addr().port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

#[tokio::test]
async fn https_serves_the_api_and_plain_http_gets_no_registry() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (files, der) = ca.issue(certs.path(), "node");
    let node = tls_node(&files).await;
    assert_eq!(served_certificate(&ca, &node).await, der);
    let data = random_blob(100_000);
    let digest = node.push_blob("t/app", &data).await;
    let resp = ca
        .client()
        .get(format!(
            "https://localhost:{}/v2/t/app/blobs/{digest}",
            node.addr().port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
    let plain = reqwest::get(format!("http://127.0.0.1:{}/v2/", node.addr().port())).await;
    assert!(
        plain.map_or(true, |r| r.status() != StatusCode::OK),
        "the HTTPS port answered plain HTTP"
    );
    // A client that does not trust the authority is refused.
    let strict = reqwest::Client::builder().build().unwrap();
    assert!(strict.get(node.url("/v2/")).send().await.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (files, first) = ca.issue(certs.path(), "first");
    let node = tls_node(&files).await;
    assert_eq!(served_certificate(&ca, &node).await, first);
    // Renewal writes new files over the old ones.
    let (renewed, second) = ca.issue(certs.path(), "second");
    std::fs::rename(&renewed.key, &files.key).unwrap();
    std::fs::rename(&renewed.cert, &files.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while served_certificate(&ca, &node).await != second {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_cross_nodes_over_https() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = ca.issue(certs.path(), "cluster");
    let cluster = TestCluster::with_config(2, move |c| c.tls = Some(files.clone())).await;
    let data = random_blob(1 << 20);
    let digest = sha256(&data);
    let location = cluster.nodes[0].start_upload("x/app").await;
    // The session is node 0's; node 1 forwards the body to it over HTTPS.
    let resp = cluster.nodes[1]
        .put(&with_digest(&location, &digest))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let resp = cluster.nodes[1]
        .get(&format!("/v2/x/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
}

/// `berth health` as a container health check runs it: with the server's own
/// certificate settings in its environment.
fn health_check(node: &TestNode, tls: Option<&TlsFiles>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["health", "--ready"])
        .env_remove("BERTH_TLS_CERT")
        .env_remove("BERTH_TLS_KEY")
        .env(
            "BERTH_NODE",
            format!("https://127.0.0.1:{}", node.addr().port()),
        );
    if let Some(files) = tls {
        cmd.env("BERTH_TLS_CERT", &files.cert)
            .env("BERTH_TLS_KEY", &files.key);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_trusts_the_nodes_own_certificate_only() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = ca.issue(certs.path(), "node");
    let (other, _) = ca.issue(certs.path(), "other");
    let node = tls_node(&files).await;
    node.until_ready().await;
    let out = tokio::task::block_in_place(|| health_check(&node, Some(&files)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
    // Another certificate, even from the same authority, is not the node's.
    let out = tokio::task::block_in_place(|| health_check(&node, Some(&other)));
    assert!(!out.status.success());
    let out = tokio::task::block_in_place(|| health_check(&node, None));
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_talk_mutual_tls_and_strangers_get_no_answer() {
    use berth::cluster::discovery::hello_at;
    use berth::cluster::peer::{PeerPool, PeerTls, Secret};
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let files = ca.issue_peer(certs.path(), "peer");
    let node_files = files.clone();
    let cluster = TestCluster::with_config(3, move |c| c.peer_tls = Some(node_files.clone())).await;
    // Raft and blob copies run over it: a blob pushed to one node is on all.
    let data = random_blob(100_000);
    let digest = cluster.nodes[0].push_blob("m/app", &data).await;
    let resp = cluster.nodes[2]
        .get(&format!("/v2/m/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);

    let addr = cluster.nodes[1].server().peer_addr.unwrap().to_string();
    let secret = || Secret::new(crate::cluster::SECRET).unwrap();
    let member = PeerPool::with_tls(secret(), PeerTls::load(&files).unwrap());
    hello_at(&member, &addr).await.unwrap();
    // With the secret but no certificate, or one another CA signed, the
    // handshake fails: no call is ever answered, not even with a refusal.
    let plain = PeerPool::new(secret());
    // The stranger trusts the cluster CA, so only the node's check of the
    // client certificate can turn it away.
    let stranger_ca = Ca::new();
    let stranger_files = PeerTlsFiles {
        ca: files.ca.clone(),
        ..stranger_ca.issue_peer(certs.path(), "stranger")
    };
    let stranger = PeerPool::with_tls(secret(), PeerTls::load(&stranger_files).unwrap());
    for (who, pool) in [("no certificate", plain), ("another CA", stranger)] {
        let refused = hello_at(&pool, &addr).await.unwrap_err();
        assert_ne!(
            refused.code(),
            tonic::Code::Unauthenticated,
            "{who}: {refused:?}"
        );
        assert_ne!(refused.code(), tonic::Code::Ok, "{who}");
    }
}
