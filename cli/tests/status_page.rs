//! The status page (`lattice daemon --http`) in a real browser: Debian's chromium,
//! headless, driven over the DevTools protocol on a pipe, loads a testnet node's page;
//! a write on another node must appear on it within 2 s, and requests without the token
//! are refused. Skipped, and counted as skipped, where chromium is not installed
//! (`.ci/run` installs it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::testnet::Net;
use common::{skip, EVERY, WAIT};
use lattice_testnet::daemon::wait_for;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
/// One DevTools call must be answered this fast.
const CALL: Duration = Duration::from_secs(20);

/// A headless chromium in a process group of its own, killed (all of it) when dropped.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends are closed on exec (the child gets its own copies as fds 3 and 4).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors that nothing else owns.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned here only.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch() -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let (read_fd, write_fd) = (in_r.as_raw_fd(), out_w.as_raw_fd());
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The
        // pipe ends go to fds 3 (commands) and 4 (answers), where chromium expects them;
        // first above 10, so neither overwrites the other.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(read_fd, libc::F_DUPFD, 10);
                let w = libc::fcntl(write_fd, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        drop((in_r, out_w));
        let (tx, from) = mpsc::sync_channel(1_024);
        let mut reader = BufReader::new(std::fs::File::from(out_r));
        std::thread::spawn(move || loop {
            let mut msg = Vec::new();
            match reader.read_until(0, &mut msg) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    msg.pop();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(in_w),
            from,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b
    }

    /// One DevTools call (on the page's session if `session`), its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + CALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn open(&mut self, url: &str) {
        let s = self.session.clone();
        let r = self.call(Some(&s), "Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate: {r}");
    }

    /// The page's visible text.
    fn text(&mut self) -> String {
        let s = self.session.clone();
        let r = self.call(
            Some(&s),
            "Runtime.evaluate",
            json!({
                "expression": "document.body ? document.body.innerText : ''",
                "returnByValue": true,
            }),
        );
        r["result"]["value"].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: signals the process group chromium leads (its renderers included).
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The status line of a plain GET of `url` (`http://host:port/path?query`).
fn status_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(CALL)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_status_page_shows_a_write_made_elsewhere_within_two_seconds_and_needs_its_token() {
    let test = "status_page::the_status_page_shows_a_write_made_elsewhere";
    if !std::path::Path::new(CHROMIUM).exists() {
        skip(
            test,
            "chromium is not installed (.ci/run installs Debian's chromium)",
        );
        return;
    }
    let net = Net::new();
    net.run_json(&["up", "-n", "2", "--json", "--", "--http", "127.0.0.1:0"]);
    let url = net.exec_json(0, &["status", "--json"])["status_page"]
        .as_str()
        .expect("node 0 serves a status page")
        .to_owned();
    let base = url.split("/?token=").next().unwrap().to_owned();
    let token = url.split("token=").nth(1).unwrap().to_owned();

    // Without the token (or with a wrong one), no data.
    for bad in [
        format!("{base}/"),
        format!("{base}/api/state"),
        format!("{base}/events"),
        format!("{base}/events?token={}", "0".repeat(64)),
    ] {
        assert!(
            status_of(&bad).contains(" 401 "),
            "{bad}: {}",
            status_of(&bad)
        );
    }
    assert!(status_of(&format!("{base}/api/state?token={token}")).contains(" 200 "));

    // A document both nodes hold, and a first write both have: the gossip mesh is up.
    let doc = net.exec_json(0, &["doc", "create", "shown", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    net.exec_json(1, &["doc", "join", &doc, "--json"]);
    net.exec_json(1, &["doc", "set", &doc, "warm", "up", "--json"]);
    net.run_json(&["wait-converged", &doc, "--timeout", "60"]);

    let mut browser = Browser::launch();
    browser.open(&format!("{base}/"));
    let refused = wait_for("the refusal page", WAIT, EVERY, || {
        let t = browser.text();
        Ok(t.contains("token").then_some(t))
    })
    .unwrap();
    assert!(!refused.contains("Documents"), "{refused}");

    browser.open(&url);
    let peer = net.status()[0]["peer_id"].as_str().unwrap().to_owned();
    wait_for("the live page", WAIT, EVERY, || {
        let t = browser.text();
        Ok((t.contains("live") && t.contains(&peer) && t.contains("shown")).then_some(()))
    })
    .unwrap();

    // A write on node 1 shows on node 0's page (its trace id in the recent events).
    let w = net.exec_json(1, &["doc", "set", &doc, "colour", "blue", "--json"]);
    let trace = w["trace"].as_str().unwrap().to_owned();
    let written = Instant::now();
    let mut seen = None;
    while written.elapsed() < Duration::from_secs(10) {
        if browser.text().contains(&trace) {
            seen = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.expect("the write never showed on the page");
    eprintln!("the write showed on the page after {seen:?}");
    assert!(seen <= Duration::from_secs(2), "took {seen:?}");
}
