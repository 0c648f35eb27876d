//! What the daemon does to stay small on a small device: fewer allocator arenas, freed
//! heap handed back to the system, and code that ran only at start-up given back to the
//! page cache. Linux with glibc only; elsewhere these do nothing.

use std::time::Duration;

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(20);
/// When the start-up code is given back: after the first joins and announcements.
const PAGE_OUT_AFTER: Duration = Duration::from_secs(15);

/// Free memory at the top of a heap that glibc keeps for reuse rather than hand back at once.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Tunes glibc's allocator for the daemon:
///
/// - Arenas: glibc gives every thread that allocates an arena of its own (up to eight per
///   core) and keeps what is freed in it: after a burst of large answers built on blocking
///   threads, tens of MiB stay resident for good (measured: +84 MiB under the flood test,
///   +43 MiB with two arenas). Two arenas are plenty for a daemon whose work is mostly I/O.
/// - Trimming: by default glibc hands the top of a heap back to the system once more
///   than a threshold is free there (128 KiB at first, raised as large blocks are freed),
///   and faults fresh zeroed pages in at the next allocation. A blob transfer frees and
///   allocates frames every few milliseconds; with up to [`TRIM_THRESHOLD`] kept at the
///   top instead, the receiving daemon spent 0.4–0.9 s less CPU per GiB fetched (1 GiB
///   fetches, `GLIBC_TUNABLES` against none, interleaved). Setting it also pins the
///   mmap threshold at 128 KiB, so larger blocks are mapped afresh each time: the bulk
///   answers among them are kept for reuse by `lattice_overlay::buffers` instead.
///   [`give_back`] still hands free memory back every [`TRIM_EVERY`], so an idle daemon
///   holds none of it.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Runs for the daemon's life: gives its start-up code back once, and freed heap memory
/// back every [`TRIM_EVERY`].
pub async fn give_back() {
    tokio::time::sleep(PAGE_OUT_AFTER).await;
    // Reclaiming a large binary's pages takes a while: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(page_out_code).await;
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // It holds the allocator's locks while it walks the heap: not on a worker.
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    }
}

/// glibc returns freed memory to the system only from the top of a heap; what is freed
/// below live allocations stays resident. After joining a network of a hundred nodes an
/// idle daemon held 13.7 MiB of anonymous memory, 8.8 MiB after `malloc_trim` (which
/// releases free pages anywhere in the heaps). It walks the free lists only: well under a
/// millisecond for a daemon's heap.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Start-up (argument parsing, opening the store, the first joins) runs code that an idle
/// daemon never runs again, and the kernel maps program text in 64 KiB at a time (fault-
/// around, from pages read ahead): most of an idle daemon's resident memory was its own
/// program text (19.7 of 22.7 MiB). `MADV_PAGEOUT` on the binary's read-only mappings
/// drops those pages, from the page cache too when no other process maps them, and
/// `MADV_RANDOM` stops the read-ahead: what the daemon runs later faults back in a page at
/// a time, read from disk the first time (a few milliseconds in all for a new code path).
/// Kernels before 5.4 refuse `MADV_PAGEOUT`, which costs nothing.
fn page_out_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        for (start, end) in read_only_mappings(&maps, &exe.to_string_lossy()) {
            // SAFETY: the range is a read-only mapping of our own binary, as the kernel
            // listed it; paging it out changes no contents, only residency.
            unsafe {
                let at = start as *mut libc::c_void;
                libc::madvise(at, end - start, libc::MADV_RANDOM);
                libc::madvise(at, end - start, libc::MADV_PAGEOUT);
            }
        }
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// The address ranges of `path`'s read-only (and executable) mappings in a
/// `/proc/PID/maps` listing.
fn read_only_mappings(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let file = f.nth(3)?;
            if file != path || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let start = usize::from_str_radix(a, 16).ok()?;
            let end = usize::from_str_radix(b, 16).ok()?;
            (start < end).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_binarys_read_only_mappings_are_picked() {
        let maps = "\
5600-5700 r--p 00000000 fe:00 1 /usr/bin/lattice
5700-5900 r-xp 00100000 fe:00 1 /usr/bin/lattice
5900-5a00 rw-p 00300000 fe:00 1 /usr/bin/lattice
6000-6100 r-xp 00000000 fe:00 2 /usr/lib/libc.so.6
7000-7100 rw-p 00000000 00:00 0 [heap]
7100-7000 r--p 00000000 fe:00 1 /usr/bin/lattice
zz-7200 r--p 00000000 fe:00 1 /usr/bin/lattice
7300-7400 r--p 00000000 fe:00 1
";
        assert_eq!(
            read_only_mappings(maps, "/usr/bin/lattice"),
            vec![(0x5600, 0x5700), (0x5700, 0x5900)]
        );
    }

    #[test]
    fn this_process_has_read_only_mappings_of_its_binary() {
        let exe = std::env::current_exe().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!read_only_mappings(&maps, &exe.to_string_lossy()).is_empty());
        // The code it pages out is this test's own: it must keep running, and the
        // mappings stay (only their pages go).
        page_out_code();
        let after = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert_eq!(
            read_only_mappings(&after, &exe.to_string_lossy()),
            read_only_mappings(&maps, &exe.to_string_lossy())
        );
    }
}
