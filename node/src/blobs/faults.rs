//! What tests plan for the blob store's file steps: failures per blob directory, and
//! writes while a stored copy is read (tests run in parallel, so each is keyed by path).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::files::Step;

static PLANS: Mutex<Vec<(PathBuf, Step, io::ErrorKind)>> = Mutex::new(Vec::new());

/// The next pass through `at` in `dir` fails with `kind`.
pub fn arm(dir: &Path, at: Step, kind: io::ErrorKind) {
    crate::lock(&PLANS).push((dir.to_path_buf(), at, kind));
}

/// Fails if a test planned a failure of `at` in `dir`.
pub(super) fn hit(dir: &Path, at: Step) -> io::Result<()> {
    let mut plans = crate::lock(&PLANS);
    match plans.iter().position(|(d, s, _)| d == dir && *s == at) {
        Some(i) => Err(io::Error::from(plans.remove(i).2)),
        None => Ok(()),
    }
}

/// Writes that tests make to a stored copy (by its path) once its bytes were read
/// (hashed, linked or copied out) and before its stamp is checked again: a deterministic
/// "written while read".
pub static WHILE_READ: Mutex<Vec<(PathBuf, WriteHook)>> = Mutex::new(Vec::new());

pub type WriteHook = Box<dyn FnOnce() + Send>;

/// Runs the write planned for `from`, if any.
pub(super) fn while_read(from: &Path) {
    let hook = {
        let mut hooks = crate::lock(&WHILE_READ);
        let i = hooks.iter().position(|(p, _)| p == from);
        i.map(|i| hooks.remove(i).1)
    };
    if let Some(hook) = hook {
        hook();
    }
}
