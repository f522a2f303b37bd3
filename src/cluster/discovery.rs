//! Finding the other members and forming or joining the cluster.
//!
//! Peers come from a static list (`host:port`) or from DNS (`dns:NAME:PORT`,
//! resolved again every round: Swarm's `tasks.<service>` or a Kubernetes
//! headless Service). Each round asks every peer who it is. Once a peer
//! belongs to an initialized cluster, this node asks it to be added; if none
//! does and `bootstrap_expect` nodes see each other, the one with the lowest
//! id initializes the cluster with all of them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::peer::{PeerPool, DEFAULT_RPC_TIMEOUT};
use super::types::{NodeAddr, NodeId};
use super::{pb, Cluster};

const ROUND: Duration = Duration::from_secs(2);
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to look for peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// A `host:port` to call directly.
    Addr(String),
    /// Every address `name` resolves to, at `port`.
    Dns { name: String, port: u16 },
}

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PeerSpec, String> {
        let s = s.trim();
        let split = |t: &str| -> Result<(String, u16), String> {
            let (host, port) = t
                .rsplit_once(':')
                .ok_or_else(|| format!("peer {s:?} must be HOST:PORT or dns:NAME:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("peer {s:?} has a bad port"))?;
            if host.is_empty() {
                return Err(format!("peer {s:?} has no host"));
            }
            Ok((host.to_owned(), port))
        };
        match s.strip_prefix("dns:") {
            Some(rest) => split(rest).map(|(name, port)| PeerSpec::Dns { name, port }),
            None => split(s).map(|_| PeerSpec::Addr(s.to_owned())),
        }
    }
}

/// Parses a comma-separated peer list.
pub fn parse_peers(list: &str) -> Result<Vec<PeerSpec>, String> {
    list.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

async fn resolve(specs: &[PeerSpec]) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        match spec {
            PeerSpec::Addr(a) => out.push(a.clone()),
            PeerSpec::Dns { name, port } => match tokio::net::lookup_host((name.as_str(), *port))
                .await
            {
                Ok(addrs) => out.extend(addrs.map(|a| a.to_string())),
                Err(e) => tracing::debug!(%name, error = %e, "peer name does not resolve (yet)"),
            },
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The local address this host uses to reach the peers that resolve now:
/// the one to advertise when none is configured (in a container, its
/// address on the network the peers share).
pub async fn address_towards(specs: &[PeerSpec]) -> Option<IpAddr> {
    for addr in resolve(specs).await {
        let Ok(targets) = tokio::net::lookup_host(addr.as_str()).await else {
            continue;
        };
        for target in targets {
            let bind: SocketAddr = match target {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            // Connecting a UDP socket sends nothing; it only picks the route.
            let Ok(socket) = std::net::UdpSocket::bind(bind) else {
                continue;
            };
            if socket.connect(target).is_ok() {
                if let Ok(local) = socket.local_addr() {
                    return Some(local.ip());
                }
            }
        }
    }
    None
}

pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    if cluster.config.peers.is_empty() {
        initialize(
            &cluster,
            BTreeMap::from([(cluster.id, cluster.addr.clone())]),
        )
        .await;
        // A node restored or recovered elsewhere may be listed at an address
        // it no longer has; alone, it corrects its own entry once it leads.
        loop {
            let (settled, leads) = standing(&cluster);
            if settled {
                return;
            }
            if leads {
                if let Err(e) = cluster.join(cluster.id, cluster.addr.clone(), 0).await {
                    tracing::warn!(error = %e, "could not correct this node's own address");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(ROUND) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
    loop {
        if let Err(e) = round(&cluster).await {
            tracing::info!("cluster forming: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn initialize(cluster: &Cluster, members: BTreeMap<NodeId, NodeAddr>) {
    match cluster.raft.is_initialized().await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot tell whether this node belongs to a cluster; not forming one");
            return;
        }
    }
    let ids: Vec<NodeId> = members.keys().copied().collect();
    match cluster.raft.initialize(members).await {
        Ok(()) => tracing::info!(members = ?ids, "initialized a new cluster"),
        Err(e) => tracing::warn!(error = %e, "could not initialize the cluster"),
    }
}

/// What the peers said in one round.
#[derive(Default)]
struct Answers {
    hellos: Vec<pb::NodeHello>,
    /// Peers that answered but could not tell whether they belong to a
    /// cluster: they may, so no new one is formed while any does.
    unknown: Vec<String>,
}

/// Whether this node is settled (a voter at the address it advertises, with
/// a leader known), and whether it leads.
fn standing(cluster: &Cluster) -> (bool, bool) {
    let metrics = cluster.raft.metrics().borrow().clone();
    let m = metrics.membership_config.membership();
    let settled = m.voter_ids().any(|v| v == cluster.id)
        && m.get_node(&cluster.id) == Some(&cluster.addr)
        && metrics.current_leader.is_some();
    (settled, metrics.current_leader == Some(cluster.id))
}

/// One discovery round. Nothing to do while this node is a voter at the
/// address it advertises and a leader is known. Without a leader it may have
/// been removed while it was away (its own log still lists it), so it asks
/// to join again; for a member that is a no-op.
async fn round(cluster: &Cluster) -> Result<(), String> {
    let (settled, leads) = standing(cluster);
    if settled {
        return Ok(());
    }
    // A leader listed at an address it no longer has (a container that came
    // back elsewhere) corrects its own entry: no other node can reach it to
    // ask for it.
    if leads {
        return cluster
            .join(cluster.id, cluster.addr.clone(), 0)
            .await
            .map_err(|e| e.to_string());
    }
    let answers = ask_peers(cluster).await;
    if let Some(member) = answers.hellos.iter().find(|h| h.initialized) {
        return join_via(cluster, member).await;
    }
    let members = bootstrap_members(
        cluster.id,
        &cluster.addr,
        &answers,
        cluster.config.bootstrap_expect,
    )?;
    initialize(cluster, members).await;
    Ok(())
}

async fn ask_peers(cluster: &Cluster) -> Answers {
    let mut answers = Answers::default();
    for addr in resolve(&cluster.config.peers).await {
        if addr == cluster.addr.peer {
            continue;
        }
        match hello_at(&cluster.pool, &addr).await {
            Ok(h) if h.node_id != cluster.id => answers.hellos.push(h),
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::Internal => {
                tracing::warn!(%addr, error = %s.message(), "a peer cannot tell whether it belongs to a cluster");
                answers.unknown.push(format!("{addr} ({})", s.message()));
            }
            Err(s) => tracing::debug!(%addr, error = %s.message(), "peer did not answer"),
        }
    }
    answers
}

/// The members of a new cluster this node should initialize now, or why
/// not: no `--bootstrap-expect`, a peer whose state is unknown, too few
/// nodes, or another node has the lowest id.
fn bootstrap_members(
    me: NodeId,
    addr: &NodeAddr,
    answers: &Answers,
    expect: Option<usize>,
) -> Result<BTreeMap<NodeId, NodeAddr>, String> {
    let seen = answers.hellos.len();
    let Some(expect) = expect else {
        return Err(format!(
            "waiting for an initialized cluster ({seen} peers seen, none initialized; no --bootstrap-expect)"
        ));
    };
    if !answers.unknown.is_empty() {
        return Err(format!(
            "not forming a cluster while peers cannot tell whether they belong to one: {}",
            answers.unknown.join(", ")
        ));
    }
    let mut members: BTreeMap<NodeId, NodeAddr> = answers
        .hellos
        .iter()
        .map(|h| {
            let addr = NodeAddr {
                peer: h.peer_addr.clone(),
                api: h.api_addr.clone(),
            };
            (h.node_id, addr)
        })
        .collect();
    members.insert(me, addr.clone());
    if members.len() < expect {
        return Err(format!(
            "{} of {expect} expected nodes see each other",
            members.len()
        ));
    }
    match members.keys().next() {
        Some(&lowest) if lowest != me => Err(format!(
            "waiting for node {lowest} (lowest id) to initialize"
        )),
        _ => Ok(members),
    }
}

/// Asks the node at `addr` who it is.
pub async fn hello_at(pool: &PeerPool, addr: &str) -> Result<pb::NodeHello, tonic::Status> {
    let client = pool
        .client(addr)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let req = client.request(pb::Empty {}, HELLO_TIMEOUT);
    Ok(client.cluster().hello(req).await?.into_inner())
}

async fn join_via(cluster: &Cluster, member: &pb::NodeHello) -> Result<(), String> {
    tracing::info!(via = member.node_id, "asking the cluster to add this node");
    let client = cluster
        .pool
        .client(&member.peer_addr)
        .map_err(|e| e.to_string())?;
    let req = client.request(
        pb::JoinRequest {
            node_id: cluster.id,
            peer_addr: cluster.addr.peer.clone(),
            api_addr: cluster.addr.api.clone(),
            hops: 0,
        },
        Duration::from_secs(180) + DEFAULT_RPC_TIMEOUT,
    );
    client
        .cluster()
        .join(req)
        .await
        .map(|_| ())
        .map_err(|s| format!("join refused: {}", s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs() {
        assert_eq!(
            parse_peers("a:5001, dns:tasks.registry:5001,").unwrap(),
            vec![
                PeerSpec::Addr("a:5001".into()),
                PeerSpec::Dns {
                    name: "tasks.registry".into(),
                    port: 5001
                }
            ]
        );
        assert_eq!(
            parse_peers("[::1]:5001").unwrap(),
            vec![PeerSpec::Addr("[::1]:5001".into())]
        );
        for bad in ["a", "a:b", ":5001", "dns:x", "dns::1"] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    fn hello(id: NodeId) -> pb::NodeHello {
        pb::NodeHello {
            node_id: id,
            peer_addr: format!("n{id}:5001"),
            api_addr: format!("n{id}:5000"),
            ..Default::default()
        }
    }

    #[test]
    fn a_peer_of_unknown_state_holds_off_a_bootstrap() {
        let me = NodeAddr {
            peer: "n1:5001".into(),
            api: "n1:5000".into(),
        };
        let mut answers = Answers {
            hellos: vec![hello(2), hello(3)],
            unknown: vec![],
        };
        let members = bootstrap_members(1, &me, &answers, Some(3)).unwrap();
        assert_eq!(members.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);

        // Enough nodes, but one more cannot tell whether it is in a cluster.
        answers.unknown.push("n4:5001 (storage error)".into());
        let why = bootstrap_members(1, &me, &answers, Some(3)).unwrap_err();
        assert!(why.contains("n4:5001"), "{why}");

        answers.unknown.clear();
        answers.hellos[0] = hello(0);
        let why = bootstrap_members(1, &me, &answers, Some(3)).unwrap_err();
        assert!(why.contains("node 0"), "{why}");
        assert!(bootstrap_members(1, &me, &answers, Some(4)).is_err());
        assert!(bootstrap_members(1, &me, &answers, None).is_err());
    }
}
