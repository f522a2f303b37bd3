//! Removing members that have been gone too long (`--remove-after`): a
//! scaled-down replica or a drained node never comes back, and while it
//! stays a voter it counts against the quorum. The leader removes it; its
//! blobs are then copied elsewhere by repair. A removed node that does come
//! back asks to join again like a new one, with its data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How often the leader looks for members gone too long.
const CHECK: Duration = Duration::from_secs(5);

pub async fn run(cluster: Arc<Cluster>, after: Duration, stop: CancellationToken) {
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK) => {}
            _ = stop.cancelled() => return,
        }
        let leader = cluster.raft.metrics().borrow().current_leader;
        if leader != Some(cluster.id) {
            leading_since = None;
            continue;
        }
        // A member never heard from has been silent at least as long as
        // this node has led.
        let leading = leading_since.get_or_insert_with(Instant::now).elapsed();
        for (id, addr) in cluster.members() {
            if id == cluster.id {
                continue;
            }
            let silent = cluster.pool.last_heard(id).unwrap_or(leading);
            if silent < after {
                continue;
            }
            tracing::warn!(node_id = id, %addr, silent_secs = silent.as_secs(), "removing a member that has not answered for longer than --remove-after");
            if let Err(e) = cluster.remove(id, 0).await {
                tracing::warn!(node_id = id, error = %e, "could not remove a silent member");
            }
        }
    }
}
