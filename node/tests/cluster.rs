//! A cluster of real `causeway` processes: forming by invite, replication, leader failure,
//! restarts, clean shutdown and catch-up by snapshot.

mod common;

use common::*;

#[test]
fn three_nodes_replicate_survive_leader_loss_and_full_restart() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});

    // A write on any node is visible on all.
    nodes[2].register("from-c");
    nodes[1].register("from-b");
    for n in &nodes {
        assert_eq!(n.resource_names().unwrap(), ["from-b", "from-c"], "on {}", n.name);
    }

    // Kill the leader: a new one is elected and writes continue.
    let old_leader = leader_of(&nodes[0]).unwrap();
    let li = nodes.iter().position(|n| n.endpoint_id() == old_leader).unwrap();
    nodes[li].kill9();
    let survivor = (li + 1) % 3;
    let new_leader = wait_for("a new leader", || {
        leader_of(&nodes[survivor]).filter(|l| *l != old_leader)
    });
    assert_ne!(new_leader, old_leader);
    nodes[survivor].register("after-failover");

    // The old leader restarts and catches up.
    nodes[li].start();
    wait_for("old leader to catch up", || {
        nodes[li]
            .resource_names()
            .filter(|n| n.contains(&"after-failover".to_string()))
    });

    // Clean stop of all three: exit 0 and the control socket is gone.
    for n in nodes.iter_mut() {
        assert!(n.stop(), "{} did not exit cleanly", n.name);
        assert_path_gone(&n.dir.join("control.sock"));
    }
    // Restart all: nothing committed is lost.
    for n in nodes.iter_mut() {
        n.start();
    }
    wait_for_voters(&nodes[0], 3);
    for n in &nodes {
        assert_eq!(
            n.resource_names().unwrap(),
            ["after-failover", "from-b", "from-c"],
            "after full restart on {}",
            n.name
        );
    }
}

/// A leader fsyncs its own log after it replicates, so its followers can commit an entry it
/// loses when killed. Restored as leader in the same term, it would write other entries under
/// log ids the followers already hold and the replicas would diverge (seen in a chaos run); a
/// restarted leader must instead wait for an election, which brings a later term.
#[test]
fn a_killed_leader_restarted_does_not_lead_again_in_its_old_term() {
    let h = Harness::new();
    // Followers that time out this late still follow the old term when the leader is back: a
    // leader restored in that term would go on leading it.
    let mut nodes = h.three_node_cluster(|c| {
        c.raft.election_min_ms = 4_000;
        c.raft.election_max_ms = 5_000;
    });
    nodes[0].register("before");
    let status = wait_for_voters(&nodes[0], 3);
    let old_leader = status["leader"].as_str().unwrap().to_string();
    let old_term = status["term"].as_u64().unwrap();
    let li = nodes.iter().position(|n| n.endpoint_id() == old_leader).unwrap();

    nodes[li].kill9();
    nodes[li].start();
    let new_term = wait_for("a leader in a later term", || {
        let s = nodes[li].try_json(&["cluster", "status"])?;
        let (leader, term) = (s["leader"].as_str(), s["term"].as_u64()?);
        assert!(
            !(leader == Some(old_leader.as_str()) && term == old_term),
            "the restarted node leads again in its old term {old_term}"
        );
        (leader.is_some() && term > old_term).then_some(term)
    });
    assert!(new_term > old_term);
    nodes[(li + 1) % 3].register("after");
    for n in &nodes {
        wait_for("both writes everywhere", || {
            n.resource_names().filter(|names| names == &["after", "before"])
        });
    }
}

#[test]
fn lagging_node_catches_up_through_a_snapshot() {
    let h = Harness::new();
    let tune = |c: &mut causeway::Config| {
        c.raft.snapshot_logs = 10;
        c.raft.keep_logs = 2;
    };
    let mut nodes = h.three_node_cluster(tune);
    nodes[0].register("before");
    wait_for("c to apply the first write", || {
        nodes[2].resource_names().filter(|n| n.len() == 1)
    });
    let c_applied = nodes[2].json(&["cluster", "status"])["applied_index"].as_u64().unwrap();
    assert!(nodes[2].stop());

    for i in 0..40 {
        nodes[i % 2].register(&format!("while-down-{i:02}"));
    }
    // The leader has purged the entries c is missing, so only a snapshot can bring it back.
    let purged = wait_for("the leader to purge its log", || {
        let s = nodes[0].try_json(&["cluster", "status"])?;
        let p = s["purged_index"].as_u64()?;
        (p > c_applied + 5).then_some(p)
    });
    assert!(purged > c_applied);

    nodes[2].start();
    let names = wait_for("c to catch up", || nodes[2].resource_names().filter(|n| n.len() == 41));
    assert!(names.contains(&"while-down-39".to_string()));
    assert!(
        nodes[2].log().contains("installed snapshot"),
        "c should have caught up by snapshot; log:\n{}",
        nodes[2].log()
    );
    // The snapshot was a view of the sender's state machine, encoded only to be sent.
    assert!(
        nodes[..2]
            .iter()
            .any(|n| n.log().contains("encoded a snapshot for a follower")),
        "the leader should have encoded its snapshot view for c"
    );
}

#[test]
fn daemon_starts_from_config_file_or_environment() {
    use std::process::{Command, Stdio};
    let h = Harness::new();
    let a = h.init("a");
    // A config file elsewhere that names the data dir.
    let mut config = causeway::Config::load(&a.dir.join("config.toml")).unwrap();
    config.data_dir = Some(a.dir.clone());
    let file = h.path("causeway.toml");
    std::fs::write(&file, config.to_toml()).unwrap();

    for how in ["config", "env"] {
        let mut cmd = Command::new(BIN);
        match how {
            "config" => cmd
                .args(["run", "--config", file.to_str().unwrap()])
                .env_remove("CAUSEWAY_DATA_DIR"),
            _ => cmd.args(["run"]).env("CAUSEWAY_DATA_DIR", &a.dir),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // `id` also answers offline; `cluster status` only from the daemon.
        wait_for("daemon to answer", || a.try_json(&["cluster", "status"]));
        let id = a.json(&["id"]);
        assert_eq!(id["cluster_name"], "a", "started via {how}");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success(), "clean exit via {how}");
        assert_path_gone(&a.dir.join("control.sock"));
    }
}

#[test]
fn removed_member_leaves_the_cluster() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});
    let c_id = nodes[2].endpoint_id();
    let out = nodes[1].cli(&["cluster", "remove", &c_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = wait_for_voters(&nodes[0], 2);
    assert!(
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["endpoint_id"] != c_id.as_str()),
        "{status}"
    );
    // The two remaining voters still commit.
    nodes[0].register("after-removal");
    assert!(
        nodes[1]
            .resource_names()
            .unwrap()
            .contains(&"after-removal".to_string())
    );
    nodes[2].kill9();
    // Removing a node that is not a member, or the last voter, is refused.
    let out = nodes[0].cli(&["cluster", "remove", &c_id]);
    assert!(stderr(&out).contains("not a member"), "{}", stderr(&out));
    let out = nodes[0].cli(&["cluster", "remove", "nonsense"]);
    assert!(stderr(&out).contains("invalid id"), "{}", stderr(&out));
}

#[test]
fn daemon_tells_systemd_it_is_ready() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    let h = Harness::new();
    let a = h.init("a");
    let sock_path = h.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--data-dir", a.dir_str()])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification from the daemon");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    // Ready means serving: the control socket answers right away.
    assert!(a.try_json(&["id"]).is_some());
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = sock.recv(&mut buf).expect("stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn demo_shows_the_whole_federation_and_keeps_its_data_dirs() {
    let h = Harness::new();
    let dir = h.path("demo");
    let out = run_cli(&["demo", "--exit", "--dir", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {}\n{text}", stderr(&out));
    assert!(text.contains("mutual=true"), "{text}");
    let catalog = text
        .split("[4]")
        .nth(1)
        .and_then(|t| t.split("[5]").next())
        .unwrap_or_default();
    let rows: Vec<&str> = catalog.lines().filter(|l| l.starts_with("    ")).collect();
    assert!(rows.iter().any(|r| r.contains("release")), "{text}");
    assert!(!rows.iter().any(|r| r.contains("private-notes")), "{text}");
    if causeway_sync::git::git_available() {
        assert!(text.contains("after the push"), "{text}");
    }
    assert!(dir.join("alpha").join("node.json").exists());
    assert!(dir.join("beta").join("mirrors").exists());
}

#[test]
fn a_member_restarted_on_another_port_is_recorded_there_and_keeps_replicating() {
    let h = Harness::new();
    let mut nodes = h.three_node_cluster(|_| {});
    // A follower moves: stopped, rebound to a new port, started again.
    let leader = leader_of(&nodes[0]).expect("leader");
    let k = nodes
        .iter()
        .position(|n| n.endpoint_id() != leader)
        .expect("a follower");
    let moved_id = nodes[k].endpoint_id();
    assert!(nodes[k].stop());
    let port = free_port();
    nodes[k].port = port;
    nodes[k].edit_config(|c| c.bind = format!("127.0.0.1:{port}").parse().expect("addr"));
    nodes[k].start();

    let other = (k + 1) % 3;
    let want = format!("127.0.0.1:{port}");
    wait_for("the cluster to record the member's new address", || {
        let status = nodes[other].try_json(&["cluster", "status"])?;
        let recorded = status["members"].as_array()?.iter().any(|m| {
            m["endpoint_id"] == moved_id.as_str()
                && m["addrs"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == want.as_str()))
        });
        recorded.then_some(())
    });
    // Writes made now reach it at its new address.
    nodes[other].register("after-move");
    wait_for("the moved member to replicate a new write", || {
        nodes[k]
            .resource_names()?
            .contains(&"after-move".to_string())
            .then_some(())
    });
}

/// A node whose storage failed keeps its daemon up: the status requests still answer, and the
/// requests that read the catalog fail at once with the storage error instead of waiting for
/// writes that will never commit.
#[test]
fn a_node_whose_storage_failed_still_answers_status() {
    let h = Harness::new();
    let mut a = h.init("a");
    a.start();
    a.register("x");
    assert!(a.stop(), "clean stop");

    // Damage x's row so that applying a command that reads it fails the storage round.
    {
        let db = redb::Database::open(a.dir.join("raft.redb")).expect("open raft.redb");
        let txn = db.begin_write().expect("write txn");
        causeway_catalog::state::corrupt_resource_row(&txn, "x").expect("damage the row");
        txn.commit().expect("commit");
    }
    a.start();
    let meta = a.cli(&["resource", "meta", "x", "--set", "k=v"]);
    assert!(!meta.status.success(), "the write whose apply failed succeeded");

    let list = a.cli(&["resource", "list"]);
    assert!(!list.status.success(), "resource list on a failed storage succeeded");
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(err.contains("storage failed"), "{err}");
    for status in [&["cluster", "status"][..], &["id"], &["sync", "status"]] {
        let out = a.cli(status);
        assert!(
            out.status.success(),
            "{status:?} on a failed storage: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    a.stop();
}

/// Many clients writing at once on every member: the leader proposes what queues on it (its own
/// and forwarded writes) as shared batch entries, which every member decodes and applies.
#[test]
fn concurrent_writes_on_every_member_replicate_as_shared_entries() {
    const CLIENTS_PER_NODE: usize = 16;
    const WRITES_EACH: usize = 8;
    let h = Harness::new();
    let nodes = h.three_node_cluster(|_| {});
    let commit_index = |n: &NodeProc| {
        n.json(&["cluster", "status"])["commit_index"]
            .as_u64()
            .expect("commit_index")
    };
    let before = commit_index(&nodes[0]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut expected: Vec<String> = rt.block_on(async {
        let mut clients = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for c in 0..CLIENTS_PER_NODE {
                let dir = node.dir.clone();
                clients.push(tokio::spawn(async move {
                    let mut client = causeway::Client::connect(&dir).await.expect("connect");
                    let mut names = Vec::new();
                    for i in 0..WRITES_EACH {
                        let name = format!("c{n}-{c}-{i}");
                        let request = causeway::api::RegisterResource {
                            name: name.clone(),
                            kind: "artifact".into(),
                            owner: "tests".into(),
                            path: None,
                            metadata: Default::default(),
                            on_register: causeway::OnRegister::RecordOnly,
                        };
                        let r = client.register_resource(request).await.expect("register");
                        assert_eq!(r.name, name, "each writer gets its own command's result");
                        names.push(name);
                    }
                    names
                }));
            }
        }
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.expect("client"));
        }
        all
    });
    expected.sort();
    let writes = expected.len() as u64;

    for n in &nodes {
        wait_for("every write on every member", || {
            n.resource_names().filter(|names| *names == expected)
        });
    }
    let entries = commit_index(&nodes[0]) - before;
    assert!(
        entries < writes,
        "{writes} concurrent writes took {entries} log entries: none shared one"
    );
}
