//! One daemon per data directory: an exclusive advisory lock on `<data>/lock`, held for
//! the daemon's life and released by the kernel even after `kill -9`.

use std::fs::OpenOptions;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: Flock<std::fs::File>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error(
        "another lattice daemon is already using {dir} (stop it first, or use another --data-dir)"
    )]
    InUse { dir: String },
    #[error("cannot lock {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let shown = dir.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|source| LockError::Io {
                dir: shown.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DataDirLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::InUse { dir: shown }),
            Err((_, e)) => Err(LockError::Io {
                dir: shown,
                source: e.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(err.to_string().contains("already using"), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
