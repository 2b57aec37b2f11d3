//! Test harness: real `causeway` processes on 127.0.0.1 with their own data dirs in a temp
//! folder, killed and removed when the harness drops. Everything waits by polling with a
//! deadline, never by fixed sleeps.

#![allow(dead_code)]

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_causeway");
/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Polls `f` until it returns `Some`, panicking with `what` after `DEADLINE`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn run_cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CAUSEWAY_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run causeway")
}

pub struct NodeProc {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    runs: u32,
}

impl NodeProc {
    pub fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// Runs a CLI command against this node's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full = vec!["--data-dir", self.dir_str()];
        full.extend_from_slice(args);
        run_cli(&full)
    }

    /// Runs a CLI command with `--json`, panicking unless it succeeds.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("--json");
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "{} {:?} failed: {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// Like `json` but `None` on failure (for polling).
    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut full = args.to_vec();
        full.push("--json");
        let out = self.cli(&full);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension(format!("{}.log", self.runs))
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        for run in 1..=self.runs {
            all.push_str(&std::fs::read_to_string(self.dir.with_extension(format!("{run}.log"))).unwrap_or_default());
        }
        all
    }

    /// Starts `causeway run` and waits until its control socket answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--data-dir", self.dir_str()])
            .env("RUST_LOG", "info,openraft=warn,iroh=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn causeway run");
        self.child = Some(child);
        let name = self.name.clone();
        wait_for(&format!("{name} to serve its control socket"), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("{name} exited early with {status}: {}", self.log());
            }
            // `id` answers offline too; `cluster status` needs the daemon.
            self.try_json(&["cluster", "status"]).map(|_| ())
        });
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays but answers nothing (a hung or cut-off node).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`NodeProc::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM and wait: a clean stop. Returns whether the daemon exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if start.elapsed() > DEADLINE {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn endpoint_id(&self) -> String {
        self.json(&["id"])["endpoint_id"]
            .as_str()
            .expect("endpoint_id")
            .to_string()
    }

    pub fn resource_names(&self) -> Option<Vec<String>> {
        let v = self.try_json(&["resource", "list"])?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect(),
        )
    }

    pub fn register(&self, name: &str) {
        let out = self.cli(&["resource", "register", "--kind", "artifact", "--name", name]);
        assert!(
            out.status.success(),
            "register {name} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Rewrites this node's config file through `f` (the node must be stopped).
    /// Registers the file or directory at `path` as the artifact `name`, which publishes its
    /// content as version 1; returns the registered resource.
    pub fn register_artifact(&self, name: &str, path: &Path) -> Value {
        let path = path.to_str().expect("utf-8 path");
        self.json(&[
            "resource", "register", "--kind", "artifact", "--name", name, "--path", path,
        ])
    }

    pub fn edit_config(&self, f: impl FnOnce(&mut causeway::Config)) {
        let path = self.dir.join("config.toml");
        let mut c = causeway::Config::load(&path).expect("config");
        f(&mut c);
        std::fs::write(&path, c.to_toml()).expect("write config");
    }
}

/// How many of a node's last log lines a failed test prints.
const LOG_LINES_ON_FAILURE: usize = 80;

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
        // The data dirs go with the harness: a failing test shows what its nodes logged, or CI
        // would keep only the assertion.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
            eprintln!("---- last {} log lines of {} ----", tail.len(), self.name);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// A temp folder holding every node of a test.
pub struct Harness {
    pub root: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self {
            root: tempfile::Builder::new()
                .prefix("causeway-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn node(&self, name: &str, port: u16) -> NodeProc {
        NodeProc {
            name: name.into(),
            dir: self.path(name),
            port,
            child: None,
            runs: 0,
        }
    }

    /// `causeway init` of a new single-node cluster (not started).
    pub fn init(&self, name: &str) -> NodeProc {
        self.init_with_discovery(name, "static")
    }

    /// `causeway init --discovery MODE` of a new single-node cluster (not started).
    pub fn init_with_discovery(&self, name: &str, discovery: &str) -> NodeProc {
        let port = free_port();
        let node = self.node(name, port);
        let bind = format!("127.0.0.1:{port}");
        let out = run_cli(&[
            "init",
            "--data-dir",
            node.dir_str(),
            "--name",
            name,
            "--bind",
            &bind,
            "--discovery",
            discovery,
        ]);
        assert!(
            out.status.success(),
            "init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node
    }

    /// `causeway cluster join` with a fresh invite from `inviter` (not started).
    pub fn join(&self, name: &str, inviter: &NodeProc) -> NodeProc {
        let ticket = inviter.json(&["cluster", "invite"])["ticket"]
            .as_str()
            .expect("ticket")
            .to_string();
        let port = free_port();
        let node = self.node(name, port);
        let bind = format!("127.0.0.1:{port}");
        let out = run_cli(&[
            "--data-dir",
            node.dir_str(),
            "cluster",
            "join",
            &ticket,
            "--bind",
            &bind,
            "--discovery",
            "static",
        ]);
        assert!(
            out.status.success(),
            "join {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node
    }

    /// Two running single-node clusters "a" and "b", linked both ways and pinned. Each config
    /// is tuned before its node starts.
    pub fn linked_pair(
        &self,
        tune_a: impl FnOnce(&mut causeway::Config),
        tune_b: impl FnOnce(&mut causeway::Config),
    ) -> (NodeProc, NodeProc) {
        let (mut a, mut b) = (self.init("a"), self.init("b"));
        a.edit_config(tune_a);
        b.edit_config(tune_b);
        a.start();
        b.start();
        link_add(&a, &b, "b");
        link_add(&b, &a, "a");
        wait_pinned(&a, "b");
        wait_pinned(&b, "a");
        (a, b)
    }

    /// Three running nodes forming one cluster by invite, all voters and reachable.
    pub fn three_node_cluster(&self, tune: impl Fn(&mut causeway::Config)) -> Vec<NodeProc> {
        let mut a = self.init("a");
        a.edit_config(&tune);
        a.start();
        let mut b = self.join("b", &a);
        b.edit_config(&tune);
        b.start();
        let mut c = self.join("c", &a);
        c.edit_config(&tune);
        c.start();
        let nodes = vec![a, b, c];
        wait_for_voters(&nodes[0], 3);
        nodes
    }
}

/// Waits until `node`'s cluster view lists `n` voters, all reachable, and a leader.
pub fn wait_for_voters(node: &NodeProc, n: usize) -> Value {
    wait_for(&format!("{n} reachable voters"), || {
        let s = node.try_json(&["cluster", "status"])?;
        let members = s["members"].as_array()?;
        let voters = members
            .iter()
            .filter(|m| m["role"] == "voter" && m["reachable"] == true)
            .count();
        (voters == n && members.len() == n && s["leader"].is_string()).then_some(s)
    })
}

pub fn leader_of(node: &NodeProc) -> Option<String> {
    node.try_json(&["cluster", "status"])?["leader"]
        .as_str()
        .map(String::from)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_path_gone(p: &Path) {
    assert!(!p.exists(), "{} should not exist", p.display());
}

/// A federation peer the test controls: its own endpoint and cluster key.
pub struct CraftedCluster {
    pub endpoint: iroh::Endpoint,
    pub secret: [u8; 32],
}

impl CraftedCluster {
    pub async fn new() -> Self {
        let endpoint = causeway::endpoint::bind(
            iroh::SecretKey::generate(),
            "127.0.0.1:0".parse().expect("addr"),
            causeway::Discovery::Static,
            vec![],
        )
        .await
        .expect("bind test endpoint");
        Self {
            endpoint,
            secret: rand_secret(),
        }
    }

    pub fn key(&self) -> causeway_proto::EndpointKey {
        causeway_proto::EndpointKey(*self.endpoint.id().as_bytes())
    }

    /// This cluster's signed card (epoch 1) listing only the test endpoint.
    pub fn card(&self) -> causeway_proto::card::SignedCard {
        use causeway_proto::card::{CardMember, ClusterCard, SignedCard, cluster_id_of};
        SignedCard::sign(
            ClusterCard {
                cluster_id: cluster_id_of(&self.secret),
                name: "crafted".into(),
                members: vec![CardMember {
                    endpoint: self.key(),
                    addrs: vec![],
                }],
                epoch: 1,
                issued_at_ms: 0,
            },
            &self.secret,
        )
    }

    /// Completes an honest handshake with `node` and returns the connection.
    pub async fn connect(&self, node: &NodeProc) -> iroh::endpoint::Connection {
        use causeway_proto::fed::{Auth, Hello, HelloReply, MAX_FED_FRAME, Welcome, prove};
        use causeway_raft::wire;
        let id: iroh::EndpointId = node.endpoint_id().parse().expect("endpoint id");
        let addr = iroh::EndpointAddr::new(id).with_ip_addr(format!("127.0.0.1:{}", node.port).parse().expect("addr"));
        let conn = self
            .endpoint
            .connect(addr, causeway_proto::alpn::FED)
            .await
            .expect("connect");
        let remote = causeway_proto::EndpointKey(*conn.remote_id().as_bytes());
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        wire::write_frame(&mut send, &Hello { challenge: [1; 32] }, MAX_FED_FRAME)
            .await
            .expect("hello");
        let HelloReply::Card { challenge, .. } = wire::read_frame(&mut recv, MAX_FED_FRAME).await.expect("reply")
        else {
            panic!("listener refused hello");
        };
        let card = causeway_proto::rotation::KeyedCard::first(self.card());
        let auth = Auth {
            proof: prove(
                &self.secret,
                &challenge,
                &self.key(),
                &remote,
                &card.cluster_id(),
                &card.key,
            ),
            card,
        };
        wire::write_frame(&mut send, &auth, MAX_FED_FRAME).await.expect("auth");
        send.finish().expect("finish");
        let welcome: Welcome = wire::read_frame(&mut recv, MAX_FED_FRAME).await.expect("welcome");
        assert!(matches!(welcome, Welcome::Accepted { .. }), "{welcome:?}");
        conn
    }
}

fn rand_secret() -> [u8; 32] {
    let k = iroh::SecretKey::generate();
    k.to_bytes()
}

/// Sends raw bytes as one federation request and reads the answer.
pub async fn fed_raw(
    conn: &iroh::endpoint::Connection,
    bytes: &[u8],
) -> Result<causeway_proto::fed::FedResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    causeway_raft::wire::read_frame(&mut recv, causeway_proto::fed::MAX_FED_FRAME)
        .await
        .map_err(|e| e.to_string())
}

/// Sends one federation request and reads the answer.
pub async fn fed_request(
    conn: &iroh::endpoint::Connection,
    req: &causeway_proto::fed::FedRequest,
) -> causeway_proto::fed::FedResponse {
    let body = causeway_proto::encode(req, causeway_proto::fed::MAX_FED_FRAME).expect("encode");
    let mut bytes = causeway_proto::frame::prefix(body.len()).to_vec();
    bytes.extend_from_slice(&body);
    fed_raw(conn, &bytes).await.expect("fed request")
}

/// `link add` from `from` to `to`'s endpoint and address, under `name`.
pub fn link_add(from: &NodeProc, to: &NodeProc, name: &str) {
    let addr = format!("127.0.0.1:{}", to.port);
    let out = from.cli(&["link", "add", &to.endpoint_id(), "--addr", &addr, "--name", name]);
    assert!(out.status.success(), "link add: {}", stderr(&out));
}

/// Waits until `node`'s link `link` has pinned its peer and is active.
pub fn wait_pinned(node: &NodeProc, link: &str) {
    wait_for(&format!("{} to pin {link}", node.name), || {
        node.try_json(&["link", "list"])?
            .as_array()?
            .iter()
            .any(|l| l["name"] == link && l["peer"].is_string() && l["state"] == "active")
            .then_some(())
    });
}

pub fn cluster_id(node: &NodeProc) -> String {
    node.json(&["id"])["cluster_id"]
        .as_str()
        .expect("cluster_id")
        .to_string()
}

/// Runs git in `dir` with a fixed identity and no user or system config, or `None` when it
/// fails (a repository still being written into place, say).
pub fn try_git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_command(dir, args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs git in `dir` as [`try_git`] does, failing the test with git's message when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir, args).output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.com",
        "-c",
        "init.defaultBranch=main",
    ])
    .args(args)
    .current_dir(dir)
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}
