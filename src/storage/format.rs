//! The data directory's format version, in the file `format`: a node never
//! opens a directory a newer berth wrote (its RocksDB families or file
//! layout may mean something this one does not know), and knows which
//! older formats it can migrate.

use std::io::{self, Write as _};
use std::path::Path;

use super::layout::Layout;

/// The format this berth writes.
pub const CURRENT: u32 = 1;
/// What the file says before the number.
const MAGIC: &str = "berth-data";

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "it was written by a newer berth (data format {found}; this berth reads formats up to \
         {CURRENT}). Run the berth version that wrote it, or restore a backup taken with this \
         version into an empty directory"
    )]
    Newer { found: u32 },
    #[error("its format file {path} is not a berth format file ({content:?}); if this is not a berth data directory, choose another --data-dir")]
    Unreadable { path: String, content: String },
    #[error("cannot read or write its format file: {0}")]
    Io(#[from] io::Error),
}

/// Checks the directory's format before anything in it is opened or
/// created, and writes the current one into a new directory. A directory from before
/// the file existed is format 1.
pub fn check(layout: &Layout) -> Result<u32, FormatError> {
    let path = layout.format_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = parse(&text).ok_or_else(|| FormatError::Unreadable {
                path: path.display().to_string(),
                content: text.chars().take(40).collect(),
            })?;
            if found > CURRENT {
                return Err(FormatError::Newer { found });
            }
            // Older formats would be migrated here; format 1 is the first.
            Ok(found)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write(layout, &path)?;
            Ok(CURRENT)
        }
        Err(e) => Err(e.into()),
    }
}

fn parse(text: &str) -> Option<u32> {
    let (magic, version) = text.trim().split_once(' ')?;
    (magic == MAGIC).then_some(())?;
    version.parse().ok()
}

/// Written before anything else in the directory, so its own temporary
/// file sits beside it.
fn write(layout: &Layout, path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(layout.root())?;
    let tmp = path.with_extension("new");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{MAGIC} {CURRENT}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    #[test]
    fn a_new_directory_gets_the_current_format_and_keeps_it() {
        let (_dir, layout) = layout();
        assert_eq!(check(&layout).unwrap(), CURRENT);
        let text = std::fs::read_to_string(layout.format_file()).unwrap();
        assert_eq!(text, format!("berth-data {CURRENT}\n"));
        assert_eq!(check(&layout).unwrap(), CURRENT);
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let (_dir, layout) = layout();
        std::fs::create_dir_all(layout.root()).unwrap();
        std::fs::write(layout.format_file(), "berth-data 99\n").unwrap();
        let e = check(&layout).unwrap_err();
        assert!(matches!(e, FormatError::Newer { found: 99 }));
        let text = e.to_string();
        assert!(
            text.contains("data format 99") && text.contains("up to 1"),
            "{text}"
        );
        // Refused, not rewritten.
        assert_eq!(
            std::fs::read_to_string(layout.format_file()).unwrap(),
            "berth-data 99\n"
        );
    }

    #[test]
    fn a_file_that_is_not_a_format_is_refused() {
        let (_dir, layout) = layout();
        std::fs::create_dir_all(layout.root()).unwrap();
        for bad in ["", "berth-data", "berth-data x", "other 1"] {
            std::fs::write(layout.format_file(), bad).unwrap();
            assert!(
                matches!(check(&layout), Err(FormatError::Unreadable { .. })),
                "{bad:?}"
            );
        }
    }
}
