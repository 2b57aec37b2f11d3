//! The short chaos run, as CI runs it: real `causeway` processes on loopback under `kill -9`,
//! SIGSTOP/SIGCONT and restarts (and, as root, network partitions in namespaces), then the
//! checks: committed writes on every member, mirrors converged byte for byte, nothing leaked.
//!
//! The runner finds the `causeway` binary next to itself (`target/<profile>/causeway`) and
//! builds it with `cargo build -p causeway` when it is missing or older than the node's
//! sources; `CAUSEWAY_BIN` overrides that. `CHAOS_SEED` replays a seed the output printed.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const RUNNER: &str = env!("CARGO_BIN_EXE_causeway-simulations");
/// Far above the ~1-2 minutes the short run takes, so only a hang trips it.
const HARD_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn short_chaos_run_finds_no_violation() {
    let mut cmd = Command::new(RUNNER);
    cmd.args(["chaos", "--short"]);
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start causeway-simulations");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HARD_LIMIT) {
        Ok(out) => out.expect("wait for causeway-simulations"),
        Err(_) => {
            // SIGINT lets the runner remove its processes, namespaces and folders first.
            // SAFETY: kill(2) on our child, which is not reaped until the waiter returns.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let out = rx.recv_timeout(Duration::from_secs(60)).ok().and_then(Result::ok);
            let stdout = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            panic!(
                "the chaos run took longer than {HARD_LIMIT:?}:\n{}",
                stdout.unwrap_or_default()
            );
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = err_reader.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the chaos run reported violations (see its output above)"
    );
    let summary = stdout
        .lines()
        .find(|l| l.contains("rounds,") && l.contains("writes checked"))
        .expect("a summary line");
    assert!(summary.contains(" 0 violations"), "{summary}");
    assert!(
        !summary.contains(" 0 writes checked"),
        "no write was checked: {summary}"
    );
    assert!(
        !summary.contains(" 0 mirrors converged"),
        "no mirror was checked: {summary}"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            stdout.contains("skipping partition scenarios (needs root for network namespaces)"),
            "without root the partition scenarios must say they are skipped"
        );
    }
}
