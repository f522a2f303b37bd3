//! Snapshot files: the replicated column families written out record by
//! record from a consistent RocksDB view, and read back record by record.
//! Neither side ever holds a whole snapshot in memory.
//!
//! ```text
//! file   := MAGIC record* END
//! record := cf:u8 key_len:u32be key val_len:u32be val
//! ```

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

use crate::db::{Cf, Db};

const MAGIC: &[u8; 8] = b"BERTHSN1";
const END: u8 = 0xff;
/// Records per write batch when loading a snapshot.
const LOAD_BATCH: usize = 1024;
/// Bytes per write batch when loading a snapshot: manifests of a few MiB
/// would otherwise make a batch of records hold gigabytes.
const LOAD_BATCH_BYTES: usize = 8 << 20;

fn cf_code(cf: Cf) -> u8 {
    Cf::REPLICATED
        .iter()
        .position(|c| *c == cf)
        .expect("only replicated families are snapshotted") as u8
}

/// Writes every replicated family, as seen by `snapshot`, to `path`.
pub fn write(db: &Db, snapshot: &rocksdb::Snapshot<'_>, path: &Path) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(MAGIC)?;
    let mut records = 0;
    for cf in Cf::REPLICATED {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(snapshot);
        for item in db
            .raw()
            .iterator_cf_opt(db.cf(cf), opts, IteratorMode::Start)
        {
            let (k, v) = item.map_err(io::Error::other)?;
            out.write_all(&[cf_code(cf)])?;
            for part in [&k, &v] {
                out.write_all(&(part.len() as u32).to_be_bytes())?;
                out.write_all(part)?;
            }
            records += 1;
        }
    }
    out.write_all(&[END])?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(records)
}

/// Replaces every replicated family with the records in `path`.
pub fn load(db: &Db, path: &Path) -> io::Result<u64> {
    // Opened first: a file that is not a snapshot leaves the state alone.
    let records = Records::open(path)?;
    let mut clear = WriteBatch::default();
    for cf in Cf::REPLICATED {
        // Every key of these families starts with an ASCII character.
        clear.delete_range_cf(db.cf(cf), [0u8].as_slice(), [0xffu8; 4].as_slice());
    }
    db.raw().write(clear).map_err(io::Error::other)?;
    let mut batch = WriteBatch::default();
    let mut count = 0u64;
    for record in records {
        let (cf, key, value) = record?;
        batch.put_cf(db.cf(cf), key, value);
        count += 1;
        if batch.len() >= LOAD_BATCH || batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            db.raw()
                .write(std::mem::take(&mut batch))
                .map_err(io::Error::other)?;
        }
    }
    db.raw().write(batch).map_err(io::Error::other)?;
    Ok(count)
}

/// One record of a snapshot: its family, key and value.
pub type Record = (Cf, Vec<u8>, Vec<u8>);

/// The records of a snapshot file in file order, read one at a time: a
/// backup lists the blobs a snapshot names without a database. A file cut
/// short ends in an error, never quietly.
pub struct Records {
    input: BufReader<File>,
    done: bool,
}

impl Records {
    pub fn open(path: &Path) -> io::Result<Records> {
        let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a berth snapshot",
            ));
        }
        Ok(Records { input, done: false })
    }

    fn next_record(&mut self) -> io::Result<Option<Record>> {
        let mut code = [0u8];
        self.input.read_exact(&mut code)?;
        if code[0] == END {
            return Ok(None);
        }
        let cf = *Cf::REPLICATED.get(code[0] as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown column family in snapshot",
            )
        })?;
        let key = read_part(&mut self.input)?;
        let value = read_part(&mut self.input)?;
        Ok(Some((cf, key, value)))
    }
}

impl Iterator for Records {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        self.done = !matches!(next, Ok(Some(_)));
        next.transpose()
    }
}

/// Where a snapshot streamed from the leader is received, under `dir`: a
/// name of its own, so receivers never share a file.
pub fn incoming_path(dir: &Path) -> PathBuf {
    dir.join(format!("incoming-{:016x}.part", rand::random::<u64>()))
}

/// Writes `bytes` to `path` so that after a crash or a power cut `path`
/// holds either its old content or all of `bytes`: a temporary file is
/// fsynced and renamed into place, then the directory is fsynced so the
/// rename (and any earlier one in that directory) is on disk too.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    sync_dir(dir)
}

/// Makes the renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Largest key or value a snapshot may carry: a manifest is capped well below.
const MAX_PART: usize = 64 << 20;

fn read_part(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PART {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot record too large",
        ));
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_replaces_replicated_state() {
        let dir = tempfile::tempdir().unwrap();
        let a = Db::open(&dir.path().join("a")).unwrap();
        let b = Db::open(&dir.path().join("b")).unwrap();
        for (cf, k, v) in [
            (Cf::Repos, "r1", "x"),
            (Cf::Tags, "r1\0t", "d"),
            (Cf::Blobs, "sha256:1", "8"),
        ] {
            a.raw().put_cf(a.cf(cf), k, v).unwrap();
        }
        a.raw()
            .put_cf(a.cf(Cf::LocalBlobs), "local", "only")
            .unwrap();
        b.raw().put_cf(b.cf(Cf::Repos), "stale", "y").unwrap();
        b.raw()
            .put_cf(b.cf(Cf::LocalBlobs), "mine", "kept")
            .unwrap();

        let path = dir.path().join("s.snap");
        let snap = a.raw().snapshot();
        assert_eq!(write(&a, &snap, &path).unwrap(), 3);
        assert_eq!(load(&b, &path).unwrap(), 3);
        assert_eq!(b.get(Cf::Repos, b"r1").unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(b.get(Cf::Repos, b"stale").unwrap(), None);
        assert_eq!(
            b.get(Cf::Tags, b"r1\0t").unwrap().as_deref(),
            Some(&b"d"[..])
        );
        assert_eq!(
            b.get(Cf::LocalBlobs, b"mine").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(b.get(Cf::LocalBlobs, b"local").unwrap(), None);

        let blobs: Vec<Vec<u8>> = Records::open(&path)
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|(cf, _, _)| *cf == Cf::Blobs)
            .map(|(_, k, _)| k)
            .collect();
        assert_eq!(blobs, [b"sha256:1".to_vec()]);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        assert!(Records::open(&path).unwrap().any(|r| r.is_err()));

        std::fs::write(&path, b"garbage!").unwrap();
        assert!(load(&b, &path).is_err());
        assert_eq!(b.get(Cf::Repos, b"r1").unwrap().as_deref(), Some(&b"x"[..]));
    }
}
