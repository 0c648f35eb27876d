//! Real daemons as child processes: start one in its own directory, wait until its
//! control socket answers, drive it with the `lattice` CLI, and kill it — on drop at the
//! latest, unless it is deliberately detached to outlive this process (a testnet).

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lattice_node::control::api::{method, Call, NoParams};
use lattice_node::control::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a daemon may take to answer on its socket after starting.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(25);

/// One `lattice daemon` process.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    bin: PathBuf,
    /// The node's directory: `data/`, `lattice.sock`, `daemon.log`.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Extra `lattice daemon` arguments, kept for restarts.
    args: Vec<String>,
    /// Run in a process group of its own (for daemons meant to outlive their starter).
    own_group: bool,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

impl Daemon {
    /// Starts a daemon in `dir` listening on 127.0.0.1 only, without mDNS or UPnP (so it
    /// sends nothing beyond this machine), plus `args`; returns once its socket answers.
    pub fn start(bin: &Path, dir: &Path, args: &[String]) -> Result<Daemon> {
        Self::start_with(bin, dir, args, false, None)
    }

    /// Starts a daemon like [`Daemon::start`] (inside `netns` if given), but in a process
    /// group of its own, so that a Ctrl-C meant for the command that started it does not
    /// reach it, and without waiting for it: for testnet nodes, which are stopped
    /// explicitly (`testnet down`), so their pid must be on record before anything can
    /// interrupt the starter. Then [`Daemon::wait_ready`], and usually [`Daemon::detach`].
    pub fn spawn_own_group(
        netns: Option<&str>,
        bin: &Path,
        dir: &Path,
        args: &[String],
    ) -> Result<Daemon> {
        let mut d = Self::new(bin, dir, args, true, netns.map(str::to_owned))?;
        d.spawn()?;
        Ok(d)
    }

    /// Like [`Daemon::start`], but inside network namespace `netns` (root only); the
    /// control socket, a file, is reached from anywhere.
    pub fn start_in(netns: &str, bin: &Path, dir: &Path, args: &[String]) -> Result<Daemon> {
        Self::start_with(bin, dir, args, false, Some(netns.to_owned()))
    }

    fn start_with(
        bin: &Path,
        dir: &Path,
        args: &[String],
        own_group: bool,
        netns: Option<String>,
    ) -> Result<Daemon> {
        let mut d = Self::new(bin, dir, args, own_group, netns)?;
        d.spawn()?;
        d.wait_ready(START_TIMEOUT)?;
        Ok(d)
    }

    fn new(
        bin: &Path,
        dir: &Path,
        args: &[String],
        own_group: bool,
        netns: Option<String>,
    ) -> Result<Daemon> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Daemon {
            child: None,
            bin: bin.into(),
            dir: dir.into(),
            data_dir: dir.join("data"),
            socket: dir.join("lattice.sock"),
            log: dir.join("daemon.log"),
            args: args.to_vec(),
            own_group,
            netns,
        })
    }

    /// The command line the daemon runs with.
    pub fn command_line(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "daemon".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--no-mdns".into(),
            "--no-upnp".into(),
        ];
        if !self.args.iter().any(|a| a == "--listen") {
            v.extend(["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
        }
        v.extend(self.args.iter().cloned());
        v
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut cmd = match &self.netns {
            // `ip netns exec` enters the namespace and execs the daemon: same pid.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(self.command_line())
            .env(
                "LATTICE_LOG",
                // Testnet nodes log trace lines, so `testnet logs --trace ID` can follow a
                // write; other daemons (tests) log as a user's would.
                std::env::var("LATTICE_LOG").unwrap_or_else(|_| {
                    if self.own_group {
                        "info,lattice_trace=debug".into()
                    } else {
                        "info".into()
                    }
                }),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.own_group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the control socket completes a hello, or fails with the log's tail if
    /// the daemon exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                bail!(
                    "daemon exited with {status} before it was ready; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if rt.block_on(Client::connect(&self.socket)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "daemon not ready after {timeout:?}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit_status(), Ok(None)) && self.child.is_some()
    }

    fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// Runs `lattice --socket <this daemon's socket> ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))
    }

    /// Runs a CLI command with `--json` and parses its output; fails (with stderr) on a
    /// non-zero exit.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all)?;
        if !out.status.success() {
            bail!(
                "`lattice {}` failed ({}): {}",
                all.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "`lattice {}` printed no JSON: {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> Result<String> {
        Ok(call::<method::Id>(&self.socket, &NoParams)?.peer_id)
    }

    /// A dialable address: the first listen address with `/p2p/<peer id>`.
    pub fn addr(&self) -> Result<String> {
        let id = call::<method::Id>(&self.socket, &NoParams)?;
        let a = id.listen_addrs.first().context("no listen address")?;
        Ok(format!("{a}/p2p/{}", id.peer_id))
    }

    /// Lets the daemon outlive this handle (and this process); returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; SIGKILL after that.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("daemon is not running")
        };
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("daemon ignored SIGTERM for {timeout:?}; killed it");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts the daemon again on the same directory (same data, same peer id).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready(START_TIMEOUT)
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One control call on `socket`, from synchronous code (no `lattice` process to start).
/// It runs on a thread of its own, so a caller inside a tokio runtime may use it too.
pub fn call<M: Call>(socket: &Path, params: &M::Params) -> Result<M::Result>
where
    M::Params: Sync,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut c = Client::connect(socket).await?;
                Ok(c.call::<M>(params).await?)
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the control call's thread panicked"))?
    })
}

/// Polls `check` every `every` until it returns `Ok(Some(v))`, or fails after `timeout`
/// with the last error or a note.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(every);
    }
}
