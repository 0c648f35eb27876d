//! Large byte buffers kept for reuse. A bulk answer (a 4 MiB blob piece) is read into, or
//! encoded into, a buffer that was written before, instead of fresh memory: fresh memory
//! costs a page fault and a zeroed page per 4 KiB, and the frame reader zeroed it once more
//! before reading into it. Profiles of a blob fetch put that at 7–8 % of each daemon's CPU.
//!
//! Every kept buffer is fully initialized (its length is its capacity), so a taker can read
//! into it at once. What it held before is never shown: a taker gets it at the length it
//! asked for and overwrites it, or clears it.
//!
//! Bounded: at most [`KEEP_BYTES`] are kept, only buffers between [`MIN`] and [`MAX`]
//! bytes, and a buffer unused for [`IDLE`] is released ([`release_idle`], called by the
//! overlay's tick), so an idle node holds none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Smaller buffers are not worth keeping: fresh ones cost little.
pub const MIN: usize = 1 << 20;
/// Larger buffers are not kept (a blob answer is at most about 8 MiB).
pub const MAX: usize = 9 << 20;
/// At most this many bytes are kept at once: the buffers of 4–8 blob pieces, as many as a
/// fetch or the serving of one has in flight.
pub const KEEP_BYTES: usize = 40 << 20;
/// A kept buffer unused this long is released.
pub const IDLE: Duration = Duration::from_secs(10);

struct Kept {
    buffers: Vec<(Instant, Vec<u8>)>,
    bytes: usize,
}

/// A pool of kept buffers; the process has one, used through [`take`], [`give`] and
/// [`release_idle`].
pub struct Pool(Mutex<Kept>);

/// The process's pool: answers are read on the swarm's tasks and decoded on others.
static SHARED: Pool = Pool::new();

impl Pool {
    pub const fn new() -> Pool {
        Pool(Mutex::new(Kept {
            buffers: Vec::new(),
            bytes: 0,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // The pool holds no invariant a panic elsewhere could break.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept buffer of `len` bytes (its old contents, to be overwritten), if one of at
    /// least that capacity and at most a quarter more is kept; the smallest such. Never
    /// much larger: memory is charged by what an answer holds, and a small answer must not
    /// pin a large buffer.
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        if !(MIN..=MAX).contains(&len) {
            return None;
        }
        let most = len + len / 4;
        let mut k = self.lock();
        let (i, _) = k
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, (_, b))| (len..=most).contains(&b.len()))
            .min_by_key(|(_, (_, b))| b.len())?;
        let (_, mut buf) = k.buffers.swap_remove(i);
        k.bytes -= buf.len();
        buf.truncate(len);
        Some(buf)
    }

    /// Keeps `buf` for reuse if it is of a size worth keeping and there is room; else it
    /// is freed. Its bytes past its length are zeroed (they were written before, but a
    /// `Vec` cannot know): little, since [`Pool::take`] hands out at most a quarter more
    /// than is asked for.
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(MIN..=MAX).contains(&cap) || self.lock().bytes + cap > KEEP_BYTES {
            return;
        }
        // Initialized to its capacity, outside the lock: usually a small tail.
        buf.resize(cap, 0);
        let mut k = self.lock();
        if k.bytes + cap > KEEP_BYTES {
            return;
        }
        k.bytes += cap;
        k.buffers.push((Instant::now(), buf));
    }

    /// Frees the buffers unused since `now - IDLE`.
    pub fn release_idle(&self, now: Instant) {
        let mut k = self.lock();
        if k.buffers.is_empty() {
            return;
        }
        k.buffers
            .retain(|(since, _)| now.saturating_duration_since(*since) < IDLE);
        k.bytes = k.buffers.iter().map(|(_, b)| b.len()).sum();
    }

    /// Bytes kept now.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

/// [`Pool::take`] from the process's pool.
pub fn take(len: usize) -> Option<Vec<u8>> {
    SHARED.take(len)
}

/// [`Pool::give`] to the process's pool.
pub fn give(buf: Vec<u8>) {
    SHARED.give(buf)
}

/// [`Pool::release_idle`] of the process's pool.
pub fn release_idle(now: Instant) {
    SHARED.release_idle(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_bounded_and_released_when_idle() {
        let p = Pool::new();
        assert_eq!(p.kept_bytes(), 0);
        // Too small and too large are not kept.
        p.give(vec![1; MIN - 1]);
        p.give(Vec::with_capacity(MAX + 1));
        assert_eq!(p.kept_bytes(), 0);
        // A buffer comes back at the length asked for, initialized, its capacity kept.
        let mut b = Vec::with_capacity(4 << 20);
        b.extend_from_slice(&[7; 1000]);
        p.give(b);
        assert_eq!(p.kept_bytes(), 4 << 20);
        assert!(p.take(5 << 20).is_none(), "too small for the asker");
        assert!(p.take(3 << 20).is_none(), "much too large for the asker");
        let b = p.take(7 << 19).expect("kept");
        assert_eq!(b.len(), 7 << 19);
        assert_eq!(b.capacity(), 4 << 20);
        assert_eq!(&b[..1000], &[7; 1000][..]);
        assert!(b[1000..].iter().all(|x| *x == 0));
        assert_eq!(p.kept_bytes(), 0);
        // The smallest that fits is taken, and never one much larger than asked for.
        p.give(vec![0; 6 << 20]);
        p.give(b);
        assert!(p.take(2 << 20).is_none());
        assert_eq!(p.take(5 << 20).map(|b| b.capacity()), Some(6 << 20));
        assert_eq!(p.take(4 << 20).map(|b| b.capacity()), Some(4 << 20));
        // Bounded in bytes.
        for _ in 0..KEEP_BYTES / (4 << 20) + 3 {
            p.give(vec![0; 4 << 20]);
        }
        assert!(p.kept_bytes() <= KEEP_BYTES);
        // Released once idle.
        p.release_idle(Instant::now());
        assert!(p.kept_bytes() > 0);
        p.release_idle(Instant::now() + IDLE);
        assert_eq!(p.kept_bytes(), 0);
        assert!(p.take(MIN).is_none());
    }
}
