//! One fuzz binary for every decoder: the first byte picks the target, the rest is its
//! input, so one corpus and one run cover them all.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let crdt = lattice_crdt::fuzz::TARGETS;
    let node = lattice_node::fuzz::TARGETS;
    let i = usize::from(pick) % (crdt.len() + node.len());
    let target = if i < crdt.len() {
        crdt[i].1
    } else {
        node[i - crdt.len()].1
    };
    target(input);
});
