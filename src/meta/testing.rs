//! What the state machine's unit tests share: a fresh state and the
//! commands they build most.

use super::{Command, PutManifest, StateMachine};
use crate::db::Db;
use crate::oci::Digest;

/// A state machine over a new database; keep the directory while it runs.
pub fn state() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    (dir, StateMachine::new(db))
}

/// Applies a command that must be accepted.
pub fn ok(sm: &StateMachine, cmd: Command) {
    assert_eq!(sm.apply(&cmd).unwrap(), Ok(()), "{cmd:?}");
}

/// Links `data` into `repo` as a blob stored on two nodes.
pub fn link(sm: &StateMachine, repo: &str, data: &[u8], at: u64) -> Digest {
    let digest = Digest::sha256(data);
    let cmd = Command::LinkBlob {
        repo: repo.parse().unwrap(),
        digest: digest.clone(),
        size: data.len() as u64,
        at,
        holders: vec![1, 2],
    };
    ok(sm, cmd);
    digest
}

/// A manifest of `repo` with body `body` naming `blobs`, tagged `tag`.
pub fn put(repo: &str, body: &str, tag: Option<&str>, blobs: &[&Digest], at: u64) -> Command {
    Command::PutManifest(PutManifest {
        repo: repo.parse().unwrap(),
        digest: Digest::sha256(body.as_bytes()),
        tag: tag.map(|t| t.parse().unwrap()),
        media_type: crate::oci::media::OCI_MANIFEST.into(),
        body: body.as_bytes().to_vec(),
        blobs: blobs.iter().map(|d| (*d).clone()).collect(),
        manifests: vec![],
        subject: None,
        artifact_type: None,
        annotations: None,
        at,
    })
}

/// An OCI image manifest whose config is the first of `blobs` and whose
/// layers are the rest, as (digest, size): a body a rebuild can parse.
pub fn image_body(blobs: &[(&Digest, u64)]) -> String {
    let descriptor = |media: &str, (digest, size): &(&Digest, u64)| serde_json::json!({ "mediaType": media, "digest": digest.as_str(), "size": size });
    let layers: Vec<_> = blobs[1..]
        .iter()
        .map(|b| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", b))
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &blobs[0]),
        "layers": layers,
    })
    .to_string()
}
