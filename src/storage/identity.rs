//! The node's stable identity, created once in the data directory.

use std::io::{self, Write};

use super::layout::Layout;

/// Reads the node id, creating a random one on first start. A restarted node
/// keeps its id; an id of 0 is never issued.
pub fn load_or_create(layout: &Layout) -> io::Result<u64> {
    let path = layout.node_id();
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a node id: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Ids stay below 2^53, so tools that read JSON numbers as
            // doubles (jq, JavaScript) keep them exact.
            let id = (rand::random::<u64>() >> 11).max(1);
            let tmp = layout.tmp_file();
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{id}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// The key a node without a cluster secret signs its tokens with: random,
/// created once, readable by its owner only, so tokens outlive a restart.
pub fn token_key(layout: &Layout) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = layout.token_key();
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a key: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let tmp = layout.tmp_file();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{}", hex::encode(key))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(key.to_vec())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let id = load_or_create(&layout).unwrap();
        assert!(id > 0 && id < 1 << 53);
        assert_eq!(load_or_create(&layout).unwrap(), id);
        std::fs::write(layout.node_id(), "junk").unwrap();
        assert!(load_or_create(&layout).is_err());
    }
}
