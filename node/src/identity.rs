//! The node's Ed25519 identity, created on first start at `<data>/identity.key` (mode
//! 0600) and reused after, so a node keeps its peer id across restarts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use lattice_overlay::Keypair;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("cannot read identity {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create identity {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("identity file {path} is corrupt ({reason}); move it away to create a new identity (a new peer id)")]
    Corrupt { path: String, reason: String },
}

/// Loads the identity at `path`, or creates one there.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let shown = path.display().to_string();
    match fs::read(path) {
        Ok(bytes) => {
            let key =
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            if key.clone().try_into_ed25519().is_err() {
                return Err(IdentityError::Corrupt {
                    path: shown,
                    reason: "not an Ed25519 key".into(),
                });
            }
            // Repair permissions that something else loosened.
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o600);
            if mode != 0o600 {
                tracing::warn!(path = %shown, mode = format!("{mode:o}"), "identity key was readable by others; setting mode 0600");
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(IdentityError::Read {
            path: shown,
            source,
        }),
    }
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let shown = path.display().to_string();
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| IdentityError::Write {
            path: shown.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    // Write to a temporary file created 0600, then rename: a crash never leaves a torn key.
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| IdentityError::Write {
        path: shown,
        source,
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        let a = load_or_create(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&p).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn a_corrupt_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        fs::write(&p, b"garbage").unwrap();
        let err = load_or_create(&p).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(
            fs::read(&p).unwrap(),
            b"garbage",
            "the file must be left alone"
        );
    }
}
