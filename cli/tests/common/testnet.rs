//! A testnet driven through `lattice testnet`, as a user drives it.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::BIN;

/// A testnet directory that is taken down (and its logs shown on failure) when dropped.
pub struct Net {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Net {
    pub fn new() -> Net {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tn");
        Net { _tmp: tmp, dir }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("testnet")
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `testnet ARGS`, which must succeed, and parses its JSON output.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "testnet {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.run_json(&all)
    }

    pub fn status(&self) -> Vec<Value> {
        self.json(&["status"]).as_array().cloned().unwrap()
    }

    /// Runs `testnet exec I -- ARGS` and parses its JSON output.
    pub fn exec_json(&self, i: usize, args: &[&str]) -> Value {
        let index = i.to_string();
        let mut all = vec!["exec", index.as_str(), "--"];
        all.extend(args);
        self.run_json(&all)
    }

    pub fn connected(&self, i: usize) -> Vec<String> {
        let out = self.exec_json(i, &["peers", "--json"]);
        out.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .map(|p| p["peer_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs"]);
            let text = String::from_utf8_lossy(&logs.stdout);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- merged logs (tail) ----\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        let _ = self.run(&["down"]);
    }
}
