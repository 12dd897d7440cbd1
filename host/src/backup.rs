//! `broker backup`: a consistent, compacted copy of the database, taken while Broker may be running
//! and serving inserts (LMDB lets a second process read the same environment).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::store::Store;

/// The file LMDB keeps its data in; a backup restores by taking this name in the database directory.
const DATA_FILE: &str = "data.mdb";

/// Copies the database in `db` to `to` (a file, or a directory to hold `data.mdb`, made 0700 when
/// missing); returns the file written, 0600.
pub fn backup(db: &Path, max_size_mb: usize, to: &Path) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        db.join(DATA_FILE).is_file(),
        "no database at {} (set --db)",
        db.display()
    );
    let target = if to.is_dir() || to.extension().is_none() {
        // Readable by its owner only: the copy holds every password hash and secret.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(to)
            .with_context(|| format!("creating {}", to.display()))?;
        to.join(DATA_FILE)
    } else {
        to.to_path_buf()
    };
    let store =
        Store::open(db, max_size_mb).with_context(|| format!("opening the database at {}", db.display()))?;
    store
        .backup_to(&target)
        .with_context(|| format!("writing the backup to {}", target.display()))?;
    Ok(target)
}
