//! The state machine store: batched entries, interrupted installs and
//! snapshot files.

use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::CommittedLeaderId;

use super::*;
use crate::cluster::log_store::LogStore;
use crate::cluster::network::Network;
use crate::cluster::peer::{PeerPool, Secret};
use crate::cluster::types::{Raft, Vote};

struct Node {
    db: Db,
    layout: Layout,
    _dir: tempfile::TempDir,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    layout.create().unwrap();
    let db = Db::open(&layout.db()).unwrap();
    Node {
        db,
        layout,
        _dir: dir,
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn store(n: &Node) -> StateMachineStore {
    StateMachineStore {
        sm: meta::StateMachine::new(n.db.clone()),
        changes: BlobChanges::default(),
        db: n.db.clone(),
        layout: n.layout.clone(),
        whole: Arc::default(),
        due: SnapshotDue::default(),
    }
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn link(repo: &str, data: &[u8]) -> Command {
    Command::LinkBlob {
        repo: repo.parse().unwrap(),
        digest: crate::oci::Digest::sha256(data),
        size: data.len() as u64,
        at: 1,
        holders: vec![1],
    }
}

#[test]
fn a_batched_entry_applies_its_commands_in_order_each_with_its_own_result() {
    let n = node();
    let sm = store(&n);
    let hook = crate::events::endpoint::EndpointSpec {
        id: "ci".into(),
        url: "https://ci.example.com/hook".into(),
        ..Default::default()
    }
    .build(crate::meta::webhooks::Source::Api { by: "a".into() }, 1)
    .unwrap();
    let add = Command::Webhook(crate::meta::webhooks::WebhookChange::Put(Box::new(hook)));
    assert_eq!(sm.apply_one(&entry(1, add)).unwrap(), vec![Ok(())]);
    let config = crate::oci::Digest::sha256(b"config");
    let body = crate::meta::testing::image_body(&[(&config, 6)]);
    let put = crate::meta::testing::put("acme/app", &body, Some("v1"), &[&config], 2);
    let unknown = crate::oci::Digest::sha256(b"elsewhere");
    let other = crate::meta::testing::image_body(&[(&unknown, 9)]);
    let refused = crate::meta::testing::put("acme/app", &other, Some("v2"), &[&unknown], 2);
    let again = crate::meta::testing::put("acme/app", &body, Some("latest"), &[&config], 2);
    let batch = Command::Batch(vec![link("acme/app", b"config"), put, again, refused]);
    let outcome = sm.apply_one(&entry(2, batch)).unwrap();
    // The manifest sees the blob linked before it in the same entry.
    assert_eq!(outcome.len(), 4);
    assert_eq!(outcome[..3], [Ok(()), Ok(()), Ok(())]);
    assert!(matches!(
        outcome[3],
        Err(meta::Rejection::ManifestBlobUnknown(_))
    ));
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(1, 2)));
    assert_eq!(n.db.get(Cf::SmMeta, APPLYING).unwrap(), None);
    // The events of the entry are numbered on across its commands.
    let ids: Vec<String> = sm
        .sm
        .events_after(crate::meta::events::EventId::default(), 100)
        .unwrap()
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert!(ids.len() >= 2, "{ids:?}");
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("2-")), "{ids:?}");
}

#[test]
fn a_snapshot_waits_for_the_batched_entry_being_applied() {
    let n = node();
    let sm = store(&n);
    let applying = sm.whole.lock().unwrap();
    let builder = sm.clone();
    let build = std::thread::spawn(move || builder.build().map(|s| s.meta.snapshot_id));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!build.is_finished(), "a snapshot was taken mid-entry");
    drop(applying);
    build
        .join()
        .unwrap()
        .expect("the snapshot is built once the entry is");
}

#[test]
fn a_batched_entry_replayed_after_a_crash_skips_the_commands_it_applied() {
    let n = node();
    let sm = store(&n);
    // The crash came after the first command's write.
    let mut part = WriteBatch::default();
    let marker = Applying {
        index: 7,
        next: 1,
        events: 0,
    };
    part.put_cf(n.db.cf(Cf::SmMeta), APPLYING, db::encode(&marker));
    n.db.write_durable(part).unwrap();
    let batch = Command::Batch(vec![link("first/app", b"a"), link("second/app", b"b")]);
    let outcome = sm.apply_one(&entry(7, batch)).unwrap();
    assert_eq!(outcome, vec![Ok(()), Ok(())]);
    let a = crate::oci::Digest::sha256(b"a");
    let b = crate::oci::Digest::sha256(b"b");
    assert!(sm.sm.holders(&a).unwrap().is_empty(), "applied twice");
    assert_eq!(sm.sm.holders(&b).unwrap(), vec![1]);
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(1, 7)));
    assert_eq!(n.db.get(Cf::SmMeta, APPLYING).unwrap(), None);
}

/// Starts openraft on the node's storage, as a restarted node does.
async fn start(n: &Node) -> Result<Raft, String> {
    let sm = StateMachineStore::open(n.db.clone(), n.layout.clone()).map_err(|e| e.to_string())?;
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let network = Network::new(PeerPool::new(Secret::none()));
    let log = LogStore::new(n.db.clone(), Default::default());
    Raft::new(1, config, network, log, sm)
        .await
        .map_err(|e| e.to_string())
}

/// A complete snapshot at `last`, as a build or an install leaves it.
fn snapshot_at(n: &Node, id: &str, last: LogId) -> SnapshotMeta {
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::default(),
        snapshot_id: id.into(),
    };
    let (snap, meta_path) = store(n).snapshot_paths(id);
    std::fs::write(snap, b"records").unwrap();
    std::fs::write(
        meta_path,
        db::encode(&StoredSnapshot { meta: meta.clone() }),
    )
    .unwrap();
    meta
}

fn files(n: &Node) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(n.layout.snapshots_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_node_killed_while_installing_starts_empty_and_waits_for_a_snapshot() {
    let n = node();
    let vote = Vote::new(3, 2);
    let mut log = LogStore::new(n.db.clone(), Default::default());
    log.save_vote(&vote).await.unwrap();
    // openraft purges the log up to the snapshot while it is loaded.
    log_store::restart_from(&n.db, Some(log_id(2, 6000))).unwrap();
    let mut half = WriteBatch::default();
    half.put_cf(n.db.cf(Cf::SmMeta), INSTALLING, [1u8]);
    half.put_cf(n.db.cf(Cf::Repos), b"half", b"loaded");
    n.db.write_durable(half).unwrap();
    snapshot_at(&n, "1-5000-old", log_id(1, 5000));
    std::fs::write(n.layout.snapshots_dir().join("2-6000-x.snap"), b"rec").unwrap();

    let raft = start(&n).await.expect("the node starts");
    raft.shutdown().await.unwrap();

    let sm = store(&n);
    assert_eq!(sm.last_applied().unwrap(), None);
    assert_eq!(n.db.get(Cf::Repos, b"half").unwrap(), None);
    assert!(log_store::reaches(&n.db, None).unwrap());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), None);
    assert!(files(&n).is_empty(), "{:?}", files(&n));
}

#[tokio::test]
async fn an_install_killed_midway_loads_its_file_again_and_keeps_the_log() {
    let n = node();
    let at = log_id(2, 6000);
    let mut state = WriteBatch::default();
    state.put_cf(n.db.cf(Cf::Repos), b"kept", b"1");
    state.put_cf(n.db.cf(Cf::SmMeta), LAST_APPLIED, db::encode(&Some(at)));
    n.db.write_durable(state).unwrap();
    let built = store(&n).build().unwrap();
    // Killed while loading it: half a state, the marker naming it, and
    // the log purged up to it, with entries after it acknowledged.
    let mut half = WriteBatch::default();
    half.delete_cf(n.db.cf(Cf::Repos), b"kept");
    half.put_cf(n.db.cf(Cf::Repos), b"half", b"loaded");
    half.put_cf(n.db.cf(Cf::SmMeta), INSTALLING, db::encode(&built.meta));
    half.delete_cf(n.db.cf(Cf::SmMeta), LAST_APPLIED);
    n.db.write_durable(half).unwrap();
    log_store::restart_from(&n.db, Some(at)).unwrap();

    let sm = StateMachineStore::open(n.db.clone(), n.layout.clone()).unwrap();
    assert_eq!(sm.last_applied().unwrap(), Some(at));
    assert_eq!(
        n.db.get(Cf::Repos, b"kept").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(n.db.get(Cf::Repos, b"half").unwrap(), None);
    assert_eq!(n.db.get(Cf::SmMeta, INSTALLING).unwrap(), None);
    let mut log = LogStore::new(n.db.clone(), Default::default());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(at), "the log was kept");
    let current = sm.current().unwrap().expect("the snapshot is served");
    assert_eq!(current.meta.snapshot_id, built.meta.snapshot_id);
}

#[tokio::test]
async fn a_log_purged_past_the_state_machine_restarts_from_it() {
    // Killed after openraft purged the log for an install, before the
    // install began: the state machine is whole but behind the log.
    let n = node();
    let applied = log_id(1, 40);
    let mut batch = WriteBatch::default();
    batch.put_cf(
        n.db.cf(Cf::SmMeta),
        LAST_APPLIED,
        db::encode(&Some(applied)),
    );
    n.db.write_durable(batch).unwrap();
    log_store::restart_from(&n.db, Some(log_id(2, 6000))).unwrap();

    let raft = start(&n).await.expect("the node starts");
    raft.shutdown().await.unwrap();

    assert_eq!(store(&n).last_applied().unwrap(), Some(applied));
    let mut log = LogStore::new(n.db.clone(), Default::default());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(applied));
    assert_eq!(state.last_log_id, Some(applied));
    // openraft rebuilt a snapshot of what the node holds, to serve.
    let current = store(&n).current().unwrap().expect("a snapshot");
    assert_eq!(current.meta.last_log_id, Some(applied));
}

#[test]
fn a_new_snapshot_leaves_a_part_being_received() {
    let n = node();
    let sm = store(&n);
    let part = snapshot::incoming_path(&n.layout.snapshots_dir());
    std::fs::write(&part, b"half received").unwrap();
    let first = sm.build().unwrap();
    let second = sm.build().unwrap();
    assert!(part.exists(), "a part being received was removed");
    let id = &second.meta.snapshot_id;
    let mut want = vec![format!("{id}.meta"), format!("{id}.snap")];
    want.push(part.file_name().unwrap().to_string_lossy().into_owned());
    want.sort();
    assert_eq!(
        files(&n),
        want,
        "{} was not removed",
        first.meta.snapshot_id
    );
}

#[test]
fn a_crash_before_old_snapshots_go_leaves_the_newest_readable() {
    let n = node();
    let sm = store(&n);
    let old = snapshot_at(&n, "1-5000-a", log_id(1, 5000));
    let new = snapshot_at(&n, "2-10000-b", log_id(2, 10000));
    // The old `.meta` looks newer on disk (copied, or the clock moved).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let (_, old_meta) = sm.snapshot_paths(&old.snapshot_id);
    std::fs::File::options()
        .write(true)
        .open(&old_meta)
        .unwrap()
        .set_modified(later)
        .unwrap();
    // A newer `.meta` whose `.snap` is gone names nothing to send.
    let gone = snapshot_at(&n, "2-15000-c", log_id(2, 15000));
    std::fs::remove_file(sm.snapshot_paths(&gone.snapshot_id).0).unwrap();
    let current = sm.current().unwrap().expect("a snapshot");
    assert_eq!(current.meta.snapshot_id, new.snapshot_id);

    // At start, everything but the newest complete snapshot goes.
    std::fs::write(n.layout.snapshots_dir().join("2-20000-d.tmp"), b"m").unwrap();
    drop(StateMachineStore::open(n.db.clone(), n.layout.clone()).unwrap());
    let id = &new.snapshot_id;
    assert_eq!(files(&n), vec![format!("{id}.meta"), format!("{id}.snap")]);
}
