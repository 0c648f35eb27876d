//! Accept loops that survive a full file-descriptor table.
//!
//! When the process runs out of descriptors (EMFILE), `accept` fails at once and keeps
//! failing while the connection waits in the backlog: retrying immediately spins a core
//! and floods the log. [`Backoff`] pauses 10 ms after the first failure, doubling to 1 s,
//! until an accept succeeds (as mini-redis's server does).

use std::time::Duration;

use tracing::{debug, warn};

const FIRST: Duration = Duration::from_millis(10);
const MOST: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    /// An accept succeeded: the next failure starts a new streak.
    pub fn reset(&mut self) {
        self.delay = None;
    }

    /// An accept on `what` failed with `err`: how long to pause before the next one.
    /// Logs a warning at the start of a streak only.
    pub fn failed(&mut self, what: &str, err: &std::io::Error) -> Duration {
        let next = match self.delay {
            None => {
                warn!(listener = what, "accept failed, pausing: {err}");
                FIRST
            }
            Some(d) => {
                debug!(listener = what, "accept failed again: {err}");
                (d * 2).min(MOST)
            }
        };
        self.delay = Some(next);
        next
    }
}

/// The next connection on `listener`, pausing after failures (see [`Backoff`]); `None`
/// once `shutdown` is cancelled.
pub async fn next_tcp(
    listener: &tokio::net::TcpListener,
    backoff: &mut Backoff,
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<tokio::net::TcpStream> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((s, _)) => {
                backoff.reset();
                return Some(s);
            }
            Err(e) => {
                let pause = backoff.failed(what, &e);
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_a_second_and_reset_on_success() {
        let mut b = Backoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let d: Vec<u64> = (0..10)
            .map(|_| b.failed("t", &e).as_millis() as u64)
            .collect();
        assert_eq!(d, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed("t", &e), FIRST);
    }
}
