//! What the README's first command compiles: the `causeway` package and every crate it depends
//! on. The first command must stay a matter of minutes on a small machine, and that time grows
//! with this set, so it has a budget: a change that adds crates past it fails here, and raising
//! the budget is a decision to make on purpose (docs/performance.md, "Build profiles"), with a
//! fresh measurement of the first command.

use std::{collections::BTreeSet, process::Command};

/// Most distinct packages (name and version) the node's normal and build dependencies may
/// hold, `causeway` itself included.
const MAX_NODE_PACKAGES: usize = 365;

/// Crates a node does not need, kept out of its build on purpose (each was a noticeable share
/// of a clean build): port mapping, iroh-blobs' remote RPC and its certificate generator, and
/// tracing's env-filter (whose regex engine openraft's time zones still build, but only in a
/// build script).
const KEPT_OUT: &[&str] = &["portmapper", "igd-next", "rcgen", "matchers"];

/// The distinct `name vVERSION` packages `cargo tree` lists for the node.
fn node_packages() -> Option<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "causeway",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some(format!("{} {}", words.next()?, words.next()?))
            })
            .collect(),
    )
}

#[test]
fn the_node_builds_within_its_package_budget() {
    let Some(packages) = node_packages() else {
        // Without cargo or the registry cache there is nothing to count; CI has both.
        eprintln!("skipped: `cargo tree --offline` is not available here");
        return;
    };
    let kept_out: Vec<&String> = packages
        .iter()
        .filter(|p| KEPT_OUT.iter().any(|k| p.split(' ').next() == Some(*k)))
        .collect();
    assert!(kept_out.is_empty(), "the node's build pulls in {kept_out:?} again");
    assert!(
        packages.len() <= MAX_NODE_PACKAGES,
        "the node now builds {} packages, over its budget of {MAX_NODE_PACKAGES}: measure the \
         first command from a clean clone before raising it (docs/performance.md)",
        packages.len()
    );
}
