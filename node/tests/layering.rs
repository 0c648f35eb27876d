//! The crates' top-level modules import each other without cycles: a module that needs
//! another's types never gives that one a reason to need it back. Checked on the source
//! text (`crate::<module>` paths outside comments and test code), for node and crdt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules each top-level module of the crate at `src` names.
fn imports(src: &Path) -> Graph {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a path");
        let name = first.as_os_str().to_string_lossy();
        let module = name.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        // Test modules may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for part in line.split("crate::").skip(1) {
                let dep: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !dep.is_empty() && dep != module {
                    deps.insert(dep);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let at = path.last().expect("a non-empty path");
        for next in graph.get(at).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == start {
                return Some(longer);
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                stack.push(longer);
            }
        }
    }
    None
}

fn assert_acyclic(crate_dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(crate_dir)
        .join("src");
    let graph = imports(&src);
    assert!(
        graph.len() > 5,
        "too few modules found in {}",
        src.display()
    );
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            panic!(
                "{}: modules import each other in a cycle: {}",
                src.display(),
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn node_modules_import_without_cycles() {
    assert_acyclic(".");
}

#[test]
fn crdt_modules_import_without_cycles() {
    assert_acyclic("../crdt");
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let edge = |to: &str| BTreeSet::from([to.to_owned()]);
    let mut graph = Graph::new();
    graph.insert("a".into(), edge("b"));
    graph.insert("b".into(), edge("c"));
    graph.insert("c".into(), edge("a"));
    let cycle = ["a", "b", "c", "a"].map(String::from).to_vec();
    assert_eq!(cycle_through(&graph, "a"), Some(cycle));
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle_through(&graph, "a"), None);
}
