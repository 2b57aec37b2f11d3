//! What the CLI tells an operator, through the real binary: `link add` returns once the link
//! works (or says why it does not), a peer whose link is pending is named as pending, a sync's
//! progress shows the real total, and `demo --exit` says how to start its nodes again.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn write_random(path: &std::path::Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::File::create(path).unwrap().write_all(&data).unwrap();
    data
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Publishes `len` random bytes on `node` as the artifact `name`, shared for pull with `with`.
fn publish_artifact(h: &Harness, node: &NodeProc, name: &str, len: usize, with: &str) -> Vec<u8> {
    let src = h.path(&format!("{name}.bin"));
    let data = write_random(&src, len, 11);
    node.register_artifact(name, &src);
    node.json(&["resource", "publish", name]);
    let out = node.cli(&["share", name, "--with", with, "--mode", "pull", "--read-only"]);
    assert!(out.status.success(), "share: {}", stderr(&out));
    data
}

#[test]
fn link_add_returns_a_working_link_and_a_sync_right_after_succeeds() {
    let h = Harness::new();
    let (mut a, mut b) = (h.init("a"), h.init("b"));
    a.start();
    b.start();
    let b_cluster = cluster_id(&b);
    let a_cluster = cluster_id(&a);

    // a links b: --json keeps the link contract's shape, and reads up and pinned.
    let out = a.cli(&[
        "link",
        "add",
        &b.endpoint_id(),
        "--addr",
        &format!("127.0.0.1:{}", b.port),
        "--name",
        "beta",
        "--json",
    ]);
    assert!(out.status.success(), "link add --json: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["peer"], b_cluster.as_str());
    assert_eq!(v["state"], "active");
    assert_eq!(v["name"], "beta");
    for key in ["endpoints", "mutual", "last_heartbeat_ms_ago"] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    // Shared with the link just added, without waiting for anything else.
    let data = publish_artifact(&h, &a, "model", 1 << 20, "beta");

    // b links a: the pinned cluster ID and name are printed.
    let addr = format!("127.0.0.1:{}", a.port);
    let out = b.cli(&["link", "add", &a.endpoint_id(), "--addr", &addr, "--name", "alpha"]);
    assert!(out.status.success(), "link add: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("linked alpha"), "{text}");
    assert!(text.contains(&a_cluster), "the pinned cluster ID is printed: {text}");
    assert!(text.contains("(a)"), "the peer cluster's name is printed: {text}");

    // Typed right after: the cluster ID resolves, the content arrives.
    let out = b.cli(&["sync", "model", "--from", &a_cluster]);
    assert!(out.status.success(), "sync right after link add: {}", stderr(&out));
    let file = b.dir.join("mirrors").join(&a_cluster).join("artifacts").join("model");
    assert!(std::fs::read(&file).unwrap() == data, "mirror differs");
}

#[test]
fn link_add_to_nothing_says_why_and_a_pending_peer_is_named_as_pending() {
    let h = Harness::new();
    let mut b = h.init("b");
    b.start();
    // A node that exists but never runs: nothing listens on its port.
    let ghost = h.init("ghost");
    let ghost_id = ghost.endpoint_id();
    let ghost_cluster = cluster_id(&ghost);
    let addr = format!("127.0.0.1:{}", ghost.port);

    let started = Instant::now();
    let out = b.cli(&[
        "link", "add", &ghost_id, "--addr", &addr, "--name", "ghost", "--wait", "5",
    ]);
    let took = started.elapsed();
    assert!(!out.status.success(), "a link that never came up must fail the command");
    let err = stderr(&out);
    assert!(err.contains("not up after 5 s"), "{err}");
    assert!(
        err.contains("pending") || err.contains("failing"),
        "the state is given: {err}"
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "{took:?}"
    );

    // Its endpoint ID and its name: the link is pending, not unknown.
    for peer in [ghost_id.as_str(), "ghost"] {
        let out = b.cli(&["sync", "model", "--from", peer]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("is pending: waiting for its first handshake"),
            "{peer}: {err}"
        );
        assert!(!err.contains("no link matches"), "{err}");
    }
    // Its cluster ID cannot be known before the handshake: the pending link is named.
    let out = b.cli(&["sync", "model", "--from", &ghost_cluster]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no link is pinned to"), "{err}");
    assert!(
        err.contains("\"ghost\" is pending: waiting for its first handshake"),
        "{err}"
    );
    // Other commands naming it say the same.
    let out = b.cli(&["share", "preview", "ghost"]);
    assert!(stderr(&out).contains("is pending"), "{}", stderr(&out));
    let out = b.cli(&["catalog", "ghost", "--cached"]);
    assert!(stderr(&out).contains("is pending"), "{}", stderr(&out));

    // --no-wait returns at once, successfully, saying the link is pending.
    let other = h.init("other");
    let started = Instant::now();
    let out = b.cli(&[
        "link",
        "add",
        &other.endpoint_id(),
        "--addr",
        &format!("127.0.0.1:{}", other.port),
        "--name",
        "other",
        "--no-wait",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pending"), "{}", stdout(&out));
    assert!(started.elapsed() < Duration::from_secs(5), "--no-wait waited");
}

/// Runs `causeway ARGS` with its stderr read line by line into a channel as it comes.
fn spawn_with_stderr(node: &NodeProc, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&node.dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn causeway");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

#[test]
fn sync_progress_off_a_terminal_shows_the_real_total() {
    let h = Harness::new();
    // b waits out the pause below without calling the transfer stalled.
    let (a, b) = h.linked_pair(|_| {}, |c| c.sync.stall_after_ms = 60_000);
    let size: usize = 48 << 20;
    publish_artifact(&h, &a, "model", size, "b");

    let (mut child, lines) = spawn_with_stderr(&b, &["sync", "model", "--from", "a"]);
    // Hold the origin still while bytes are moving, so the CLI sees the transfer under way.
    let mut paused = false;
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let row = b
            .try_json(&["sync", "status"])
            .and_then(|v| v.as_array()?.iter().find(|t| t["resource"] == "model").cloned());
        if let Some(t) = row {
            if t["state"] == "synced" {
                break;
            }
            if t["state"] == "transferring" && t["bytes_done"].as_u64().unwrap_or(0) > 0 {
                assert_eq!(t["bytes_total"], size as u64, "the total is known mid-transfer: {t}");
                assert_eq!(t["bytes_total_known"], true, "{t}");
                a.pause();
                paused = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    if paused {
        // The CLI polls five times a second: a line comes while the origin is held.
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until && !seen.iter().any(|l: &String| l.starts_with("model: transferring")) {
            if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
                seen.push(l);
            }
        }
        a.resume();
    }
    let status = child.wait().expect("sync exits");
    seen.extend(lines.iter());
    assert!(status.success(), "sync failed: {seen:?}");
    assert!(
        paused,
        "the transfer ended before it could be observed; make the artifact larger"
    );
    let progress: Vec<&String> = seen.iter().filter(|l| l.starts_with("model: ")).collect();
    let with_total = format!(" / {size} bytes (");
    assert!(
        progress.iter().any(|l| l.contains(&with_total)),
        "no line with the real total: {seen:?}"
    );
    for l in &progress {
        // Before the total is known (the first instant of the transfer), bytes only.
        assert!(l.contains(&with_total) || !l.contains(" / "), "{l}");
        assert!(!l.contains("/ 0 bytes"), "{l}");
    }
}

#[test]
fn publish_of_a_large_file_shows_its_import() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    let src = h.path("big.bin");
    let size: usize = 96 << 20;
    write_random(&src, size, 3);
    a.register_artifact("big", &src);
    let out = a.cli(&["resource", "publish", "big"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // The import may finish between two polls; any line shown has the real total.
    for l in err.lines().filter(|l| l.starts_with("big: ")) {
        assert!(l.starts_with("big: importing "), "{l}");
        assert!(l.contains(&format!(" / {size} bytes (")), "{l}");
    }
    assert!(stdout(&out).contains("published big version 2"), "{}", stdout(&out));
}

/// Kills the demo's restarted nodes when the test ends, however it ends.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn demo_exit_says_where_the_data_is_and_how_to_start_the_nodes_again() {
    let h = Harness::new();
    let root = h.path("demo");
    let out = run_cli(&["demo", "--exit", "--dir", root.to_str().unwrap()]);
    assert!(out.status.success(), "demo: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("while this runs"),
        "no commands for stopped nodes: {text}"
    );
    assert!(text.contains("Both nodes have stopped"), "{text}");
    assert!(text.contains(&root.display().to_string()), "where the data is: {text}");

    // The printed commands start the nodes again; the link between them comes back up.
    let starts: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|w| w.len() == 4 && w[1] == "--data-dir" && w[3] == "run")
        .collect();
    assert_eq!(starts.len(), 2, "two start commands: {text}");
    let dirs: Vec<String> = starts.iter().map(|w| w[2].clone()).collect();
    assert_eq!(
        dirs,
        [root.join("alpha"), root.join("beta")].map(|p| p.display().to_string())
    );
    let mut running = Running(Vec::new());
    for w in &starts {
        let log = std::fs::File::create(format!("{}.log", w[2])).unwrap();
        running.0.push(
            Command::new(&w[0])
                .args(&w[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("the printed command runs"),
        );
    }
    let tries: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("then try:"))
        .skip(1)
        .map(str::trim)
        .collect();
    assert!(tries.iter().any(|t| t.ends_with("link list")), "{text}");
    let link_list: Vec<&str> = tries
        .iter()
        .find(|t| t.ends_with("link list"))
        .unwrap()
        .split_whitespace()
        .collect();
    wait_for("the demo's link to come back up", || {
        let mut args: Vec<&str> = link_list[1..].to_vec();
        args.push("--json");
        let out = Command::new(link_list[0]).args(&args).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .any(|l| l["name"] == "beta" && l["state"] == "active")
            .then_some(())
    });
}
