//! A disk for tests: a redb backend in memory that fails on purpose at chosen steps and,
//! when its plug is pulled, keeps only what was synced plus any part of what was not, in
//! any order and torn at any sector, the way power loss leaves a real disk. A failed sync
//! behaves as Linux's does: the writes it should have made durable stay readable but may
//! never reach the disk, even after a later sync succeeds.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What goes wrong at the planned step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// That one operation fails (EIO); the next ones work.
    Error,
    /// The write lands in part, then fails (EIO).
    Torn,
    /// No space: from then on, every write to space not written before and every growth
    /// fails (ENOSPC) until [`FaultyDisk::free`].
    Full,
    /// The process dies: every later operation fails until [`FaultyDisk::reboot`].
    Crash,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Error, Fault::Torn, Fault::Full, Fault::Crash];
}

const SECTOR: usize = 512;

/// A change not yet synced.
#[derive(Debug)]
enum Unsynced {
    Write(u64, Vec<u8>),
    Len(u64),
}

#[derive(Debug)]
struct State {
    /// What survives power loss.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    unsynced: Vec<Unsynced>,
    /// Mutating operations (write, set_len, sync) so far.
    steps: u64,
    plan: Vec<(u64, Fault)>,
    fired: Vec<Fault>,
    /// Out of space: writes may only reuse bytes below this mark.
    full_below: Option<usize>,
    crashed: bool,
    rng: ChaCha8Rng,
}

/// The disk; clone it to hand redb a backend (every clone is the same disk).
#[derive(Clone, Debug)]
pub struct FaultyDisk(Arc<Mutex<State>>);

impl FaultyDisk {
    pub fn new(seed: u64) -> FaultyDisk {
        FaultyDisk(Arc::new(Mutex::new(State {
            durable: Vec::new(),
            current: Vec::new(),
            unsynced: Vec::new(),
            steps: 0,
            plan: Vec::new(),
            fired: Vec::new(),
            full_below: None,
            crashed: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the `at`-th mutating operation from now on with `fault` (besides any fault
    /// planned before).
    pub fn plan(&self, at: u64, fault: Fault) {
        let mut s = self.state();
        let at = s.steps + at;
        s.plan.push((at, fault));
    }

    /// The faults that fired, in order.
    pub fn fired(&self) -> Vec<Fault> {
        self.state().fired.clone()
    }

    /// Space is available again.
    pub fn free(&self) {
        self.state().full_below = None;
    }

    /// Power loss: from now on nothing reaches the disk.
    pub fn pull_plug(&self) {
        self.state().crashed = true;
    }

    /// Power back: the disk holds what was synced, plus each unsynced write whole, torn or
    /// not at all.
    pub fn reboot(&self) {
        let mut s = self.state();
        let mut image = std::mem::take(&mut s.durable);
        for change in std::mem::take(&mut s.unsynced) {
            let keep = s.rng.random_range(0..3u8);
            match change {
                Unsynced::Len(len) if keep > 0 => image.resize(len as usize, 0),
                Unsynced::Write(offset, data) if keep > 0 => {
                    let len = if keep == 1 {
                        (s.rng.random_range(0..=data.len() / SECTOR) * SECTOR).min(data.len())
                    } else {
                        data.len()
                    };
                    put(&mut image, offset, &data[..len]);
                }
                _ => {}
            }
        }
        s.current = image.clone();
        s.durable = image;
        s.plan.clear();
        s.full_below = None;
        s.crashed = false;
    }
}

fn put(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let at = offset as usize;
    if image.len() < at + data.len() {
        image.resize(at + data.len(), 0);
    }
    image[at..at + data.len()].copy_from_slice(data);
}

fn crashed() -> io::Error {
    io::Error::other("the disk is gone (crashed)")
}

impl State {
    /// Counts a mutating operation; the planned fault if this is its step.
    fn step(&mut self) -> io::Result<Option<Fault>> {
        if self.crashed {
            return Err(crashed());
        }
        self.steps += 1;
        let now = self.steps;
        match self.plan.iter().position(|(at, _)| at + 1 == now) {
            Some(i) => {
                let (_, fault) = self.plan.remove(i);
                self.fired.push(fault);
                match fault {
                    Fault::Crash => {
                        self.crashed = true;
                        Err(crashed())
                    }
                    Fault::Full => {
                        self.full_below = Some(self.current.len());
                        Ok(Some(fault))
                    }
                    _ => Ok(Some(fault)),
                }
            }
            None => Ok(None),
        }
    }

    fn full(&self, end: usize) -> io::Result<()> {
        match self.full_below {
            Some(mark) if end > mark => Err(io::Error::from(io::ErrorKind::StorageFull)),
            _ => Ok(()),
        }
    }
}

fn eio() -> io::Error {
    io::Error::other("injected I/O error")
}

impl redb::StorageBackend for FaultyDisk {
    fn len(&self) -> io::Result<u64> {
        let s = self.state();
        if s.crashed {
            return Err(crashed());
        }
        Ok(s.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.state();
        if s.crashed {
            return Err(crashed());
        }
        let at = offset as usize;
        let src = s
            .current
            .get(at..at + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        if let Some(Fault::Error | Fault::Torn) = s.step()? {
            return Err(eio());
        }
        if len as usize > s.current.len() {
            s.full(len as usize)?;
        }
        s.current.resize(len as usize, 0);
        s.unsynced.push(Unsynced::Len(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state();
        match s.step()? {
            // The sync fails, and what it should have made durable is dropped from the
            // writeback: still read back, but lost to a power cut unless written again.
            Some(Fault::Error | Fault::Torn) => {
                s.unsynced.clear();
                Err(eio())
            }
            _ => {
                let pending = std::mem::take(&mut s.unsynced);
                for change in pending {
                    match change {
                        Unsynced::Len(len) => s.durable.resize(len as usize, 0),
                        Unsynced::Write(offset, data) => put(&mut s.durable, offset, &data),
                    }
                }
                Ok(())
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        let fault = s.step()?;
        s.full(offset as usize + data.len())?;
        let len = match fault {
            Some(Fault::Error) => return Err(eio()),
            Some(Fault::Torn) => s.rng.random_range(0..data.len().max(1)) / SECTOR * SECTOR,
            _ => data.len(),
        };
        put(&mut s.current, offset, &data[..len]);
        s.unsynced
            .push(Unsynced::Write(offset, data[..len].to_vec()));
        if len < data.len() {
            return Err(eio());
        }
        Ok(())
    }
}
