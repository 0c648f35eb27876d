//! A node whose disk fills up (issue #11): writes fail with "disk full", nothing it
//! acknowledged is lost, and writing resumes once space is freed. The data directory is a
//! small tmpfs this test mounts (as root); where mounting is not allowed the test says so
//! and is recorded as skipped.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_ok, skip, BIN};
use lattice_testnet::daemon::Daemon;

/// Size of the filesystem under the data directory.
const SIZE: &str = "24m";
/// Most writes tried before the disk must have filled up (redb reuses its free pages first).
const MAX_WRITES: usize = 4_000;

/// A tmpfs mounted for the test, unmounted when dropped (after the daemon on it is gone).
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "lattice-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem under `dir` with one file, to the last byte it takes.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4 << 10, 1] {
        let block = vec![0x5a_u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    path
}

#[test]
fn a_full_disk_fails_writes_clearly_loses_nothing_acknowledged_and_writing_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("n0");
    let mount = match Mount::new(&node.join("data")) {
        Ok(m) => m,
        Err(why) => {
            skip(
                "disk_full::a_full_disk_fails_writes_clearly_loses_nothing_acknowledged_and_writing_resumes",
                &why,
            );
            return;
        }
    };
    // A provider elsewhere, for a fetch into the full disk.
    let mut p = Daemon::start(Path::new(BIN), &tmp.path().join("p"), &[]).expect("provider");
    let boot = p.addr().unwrap();
    let mut d =
        Daemon::start(Path::new(BIN), &node, &["--bootstrap".into(), boot]).expect("daemon starts");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(&mut d, &p, &mount.0)
    }));
    if result.is_err() {
        eprintln!("---- daemon log ----\n{}", d.log_tail(40));
    }
    d.kill();
    p.kill();
    drop(mount);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn scenario(d: &mut Daemon, provider: &Daemon, data: &Path) {
    let doc = common::create_doc(d, "full", &[]);
    let remote = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = vec![0u8; 4 << 20];
    blake3::Hasher::new()
        .update(b"remote")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(remote.path(), &bytes).unwrap();
    let blob = run_ok(provider, &["blob", "add", remote.path().to_str().unwrap()])["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let value = "v".repeat(2_000);
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("before{i}");
        run_ok(d, &["doc", "set", &doc, &key, &value]);
        acked.push(key);
    }
    let filler = fill(data);
    // Writes may go on while redb has free pages in its file; then they fail.
    let mut failure = None;
    for i in 0..MAX_WRITES {
        let key = format!("k{i}");
        let out = d.cli(&["doc", "set", &doc, &key, &value]).unwrap();
        if out.status.success() {
            acked.push(key);
        } else {
            failure = Some((key, String::from_utf8_lossy(&out.stderr).into_owned()));
            break;
        }
    }
    let (refused, failure) = failure.expect("the disk never filled up");
    assert!(failure.contains("disk full"), "unclear error: {failure}");
    // A blob cannot be added either, and says why.
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), vec![7u8; 1 << 20]).unwrap();
    let out = d
        .cli(&["blob", "add", src.path().to_str().unwrap()])
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("disk full"),
        "{said}"
    );
    // Nor can a blob be fetched: verified pieces are kept, and it says why.
    let out = d.cli(&["blob", "get", &blob]).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("disk full"),
        "{said}"
    );
    eprintln!("blob get on the full disk: {}", said.trim());
    // What was acknowledged is still there, and reads work on a full disk; what was
    // refused is not.
    check(d, &doc, &acked, &value);
    let surely_not = failure.contains("write not committed");
    if surely_not {
        assert!(run_ok(d, &["doc", "get", &doc])[&refused].is_null());
    }

    // Space comes back: writing resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    run_ok(d, &["doc", "set", &doc, "after", "1"]);
    run_ok(d, &["blob", "add", src.path().to_str().unwrap()]);
    acked.push("after".into());
    let copy = data.with_file_name("copy.bin");
    run_ok(d, &["blob", "get", &blob, "-o", copy.to_str().unwrap()]);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes, "the fetched blob");

    // And everything acknowledged survives a crash.
    d.restart().unwrap();
    check(d, &doc, &acked[..acked.len() - 1], &value);
    assert_eq!(
        run_ok(d, &["doc", "get", &doc, "after"]),
        serde_json::json!(1)
    );
    // A write the client was told was not committed never shows, not even after a
    // restart.
    if surely_not {
        assert!(run_ok(d, &["doc", "get", &doc])[&refused].is_null());
    }
    eprintln!(
        "disk full after {} acknowledged writes; error: {}",
        acked.len() - 1,
        failure.trim()
    );
}

fn check(d: &Daemon, doc: &str, acked: &[String], value: &str) {
    let all = run_ok(d, &["doc", "get", doc]);
    for key in acked {
        assert_eq!(all[key].as_str(), Some(value), "acknowledged {key} lost");
    }
}
