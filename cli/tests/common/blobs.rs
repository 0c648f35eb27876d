//! Helpers of the blob tests: random files, adds, fetches, and checks of what they leave.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_testnet::daemon::Daemon;
use serde_json::Value;

use super::{run_ok, wait_for_ok};

pub const MIB: usize = 1 << 20;

/// A file of `len` pseudo-random bytes (BLAKE3's output stream seeded by `seed`).
pub fn random_file(dir: &Path, seed: u8, len: usize) -> (PathBuf, String) {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut bytes);
    let path = dir.join(format!("file-{seed}"));
    std::fs::write(&path, &bytes).unwrap();
    (path, blake3::hash(&bytes).to_hex().to_string())
}

pub fn add(d: &Daemon, path: &Path) -> String {
    let v = run_ok(d, &["blob", "add", path.to_str().unwrap()]);
    v["hash"].as_str().unwrap().to_owned()
}

pub fn connected_to(d: &Daemon, peer: &str) -> bool {
    run_ok(d, &["peers"])
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["peer_id"] == peer && p["connected"] == true)
}

/// Waits until `d` finds at least `n` providers of `hash` in the DHT.
pub fn wait_providers(d: &Daemon, hash: &str, n: usize) {
    wait_for_ok("providers in the DHT", || {
        let ps = d.json(&["blob", "providers", hash])?;
        Ok((ps.as_array().is_some_and(|a| a.len() >= n)).then_some(()))
    });
}

/// Starts `blob get` on `d` through the control socket; its progress events arrive on the
/// receiver until the fetch ends or the daemon goes away.
/// Fails if a temporary output file (`.NAME.lattice-…`) was left in `dir`.
pub fn no_strays(dir: &Path) {
    let strays: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".lattice-"))
        .collect();
    assert!(strays.is_empty(), "temporary files left behind: {strays:?}");
}

pub fn fetch_in_background(
    d: &Daemon,
    hash: &str,
    out: Option<&Path>,
) -> (
    std::thread::JoinHandle<()>,
    std_mpsc::Receiver<api::FetchEvent>,
) {
    let (tx, rx) = std_mpsc::channel();
    let socket = d.socket.clone();
    let params = api::FetchParams {
        hash: hash.to_owned(),
        out: out.map(|o| o.to_str().unwrap().to_owned()),
    };
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Client::connect(&socket).await.unwrap();
            let id = c.stream::<method::BlobGet>(&params).await.unwrap();
            while let Ok(Some(p)) = c.next_event(&id).await {
                if tx.send(p).is_err() {
                    return;
                }
            }
        });
    });
    (thread, rx)
}

/// `blob get` through the CLI; returns the final `done` report.
pub fn get(d: &Daemon, hash: &str, out: &Path) -> Value {
    let v = run_ok(d, &["blob", "get", hash, "-o", out.to_str().unwrap()]);
    v["done"].clone()
}

pub fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// Overwrites `path` in place, as a user who first makes a read-only file writable again
/// (root need not: tests run either way).
pub fn write_anyway(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
