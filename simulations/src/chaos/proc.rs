//! Real `causeway` processes: finding the binary, CLI commands with a timeout (a paused node
//! never answers), and daemons that can be crashed (SIGKILL), paused (SIGSTOP/SIGCONT),
//! restarted and stopped cleanly (SIGTERM). Everything waits by polling with a deadline.

use std::{
    fs,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Upper bound for one CLI command that writes (a routed write retries while no leader is known).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(25);
/// Upper bound for a read that should answer at once (a status, a listing).
pub const QUICK: Duration = Duration::from_secs(5);
/// Upper bound for a daemon to come up or go down.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Set by SIGINT/SIGTERM: every wait gives up, so guards remove processes, namespaces and dirs.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C and SIGTERM into an orderly unwind (an atomic store is async-signal-safe).
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, giving up early when interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Polls `f` until it returns `Some`, failing after `timeout`. `f` may describe what it saw in
/// the `String` it is given; the last description goes into the error.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut(&mut String) -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    let verbose = std::env::var_os("CHAOS_VERBOSE").is_some();
    let mut told = Instant::now();
    loop {
        check_interrupted()?;
        if let Some(v) = f(&mut last) {
            return Ok(v);
        }
        if verbose && told.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "chaos: [{:.1}s] waiting for {what}: {last}",
                start.elapsed().as_secs_f64()
            );
            told = Instant::now();
        }
        if start.elapsed() >= timeout {
            if last.is_empty() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            bail!("timed out after {timeout:?} waiting for {what} (last seen: {last})");
        }
        std::thread::sleep(POLL);
    }
}

/// Where the `causeway` binary is: `--bin`/`CAUSEWAY_BIN`, else next to this program (built
/// with cargo first when it is missing or older than the workspace sources).
pub fn find_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("causeway binary {} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locate this program")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let candidate = dir.join("causeway");
    let workspace = dir
        .parent()
        .and_then(Path::parent)
        .filter(|w| w.join("Cargo.toml").is_file());
    let stale = match (fs::metadata(&candidate).and_then(|m| m.modified()), workspace) {
        (Err(_), _) => true,
        (Ok(built), Some(ws)) => newest_source(ws).is_some_and(|src| src > built),
        (Ok(_), None) => false,
    };
    if stale {
        let Some(ws) = workspace else {
            bail!(
                "no causeway binary at {} and no workspace to build it in: pass --bin PATH or set CAUSEWAY_BIN",
                candidate.display()
            );
        };
        // The binary sits in target/<profile>/: build it with that same profile (debug is
        // cargo's name for the dev profile's directory).
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| *n != "debug")
            .map(str::to_owned);
        let flag = profile.as_ref().map(|p| format!(" --profile {p}")).unwrap_or_default();
        eprintln!("chaos: building causeway (cargo build -p causeway{flag})");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(ws).args(["build", "-p", "causeway"]);
        if let Some(p) = &profile {
            cmd.args(["--profile", p]);
        }
        let status = cmd.status().context("run cargo build -p causeway")?;
        if !status.success() || !candidate.is_file() {
            bail!("cargo build -p causeway failed ({status}); pass --bin PATH");
        }
    }
    Ok(candidate)
}

/// The newest modification time of the node's sources (to notice a stale binary).
fn newest_source(workspace: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    let mut stack: Vec<PathBuf> = ["proto", "raft", "catalog", "sync", "policy", "node"]
        .iter()
        .map(|c| workspace.join(c))
        .collect();
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests" && n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs" || x == "toml")
                && let Ok(t) = m.modified()
            {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    newest
}

/// What one command did. `status` is `None` when it was killed for taking too long.
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The error in one line: the last non-empty stderr line, or why there is none.
    pub fn error_line(&self) -> String {
        if self.timed_out() {
            return "timed out (or stopped)".into();
        }
        let text = String::from_utf8_lossy(&self.stderr);
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        if line.is_empty() {
            match self.status {
                Some(s) => format!("exited with {s}"),
                None => "timed out".into(),
            }
        } else {
            line.strip_prefix("error: ").unwrap_or(line).to_string()
        }
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.stdout).context("parse JSON output")
    }
}

/// Runs `cmd` to completion, killing it after `timeout`.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Result<Ran> {
    run_until(cmd, timeout, None)
}

/// Runs `cmd` to completion, killing it after `timeout` or as soon as `stop` is set (a worker
/// told to finish does not wait for a command stuck on an unreachable leader). A killed
/// command's `status` is `None`: its outcome is unknown.
pub fn run_until(mut cmd: Command, timeout: Duration, stop: Option<&AtomicBool>) -> Result<Ran> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let deadline = Instant::now() + timeout;
    let (out, killed) = loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match rx.recv_timeout(slice) {
            Ok(out) => break (out, false),
            Err(mpsc::RecvTimeoutError::Timeout)
                if Instant::now() < deadline
                    && !stop.is_some_and(|s| s.load(Ordering::SeqCst))
                    && !INTERRUPTED.load(Ordering::SeqCst) => {}
            Err(_) => {
                // SAFETY: kill(2) on our child; it is reaped only once wait_with_output returns.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break (rx.recv().map_err(|_| anyhow!("lost the waiter of {cmd:?}"))?, true);
            }
        }
    };
    let out = out.with_context(|| format!("wait for {cmd:?}"))?;
    Ok(Ran {
        status: (!killed).then_some(out.status),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .context("find a free port")?
        .port())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    Paused,
}

/// What worker threads may hold: a node's name, data dir and health, enough to run CLI
/// commands against it. Only the scenario's thread starts, kills or pauses the daemon.
#[derive(Clone)]
pub struct NodeRef {
    pub name: String,
    pub dir: PathBuf,
    bin: Arc<PathBuf>,
    health: Arc<AtomicU8>,
}

impl NodeRef {
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::SeqCst) {
            0 => Health::Up,
            2 => Health::Paused,
            _ => Health::Down,
        }
    }

    fn set_health(&self, h: Health) {
        let v = match h {
            Health::Up => 0,
            Health::Down => 1,
            Health::Paused => 2,
        };
        self.health.store(v, Ordering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.health() == Health::Up
    }

    /// Runs `causeway --data-dir DIR ARGS...`.
    pub fn cli(&self, args: &[&str], timeout: Duration) -> Result<Ran> {
        self.cli_until(args, timeout, None)
    }

    /// Like `cli`, but killed as soon as `stop` is set.
    pub fn cli_until(&self, args: &[&str], timeout: Duration, stop: Option<&AtomicBool>) -> Result<Ran> {
        let mut cmd = Command::new(&*self.bin);
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("CAUSEWAY_DATA_DIR")
            .env("RUST_LOG", "error");
        run_until(cmd, timeout, stop)
    }

    /// Runs a command with `--json` and parses its output; an error unless it succeeded.
    pub fn json(&self, args: &[&str], timeout: Duration) -> Result<Value> {
        let mut full = args.to_vec();
        full.push("--json");
        let ran = self.cli(&full, timeout)?;
        if !ran.ok() {
            bail!(
                "{}: `causeway {}` failed: {}",
                self.name,
                args.join(" "),
                ran.error_line()
            );
        }
        ran.json()
            .with_context(|| format!("{}: `causeway {}`", self.name, args.join(" ")))
    }

    /// Like `json` with a short timeout, `None` on any failure (for polling).
    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        self.json(args, QUICK).ok()
    }
}

/// Where a node listens: loopback, or an address inside a network namespace.
#[derive(Clone, Debug)]
pub struct Place {
    pub netns: Option<String>,
    pub ip: IpAddr,
}

impl Place {
    pub fn loopback() -> Self {
        Self {
            netns: None,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// One `causeway` daemon with its data dir. Dropping it kills the process.
pub struct Node {
    pub r: NodeRef,
    pub endpoint_id: String,
    pub cluster_id: String,
    pub addr: SocketAddr,
    netns: Option<String>,
    child: Option<Child>,
    runs: u32,
}

impl std::ops::Deref for Node {
    type Target = NodeRef;
    fn deref(&self) -> &NodeRef {
        &self.r
    }
}

/// Creates nodes under one folder, all using the same binary.
#[derive(Clone)]
pub struct Spawner {
    pub bin: Arc<PathBuf>,
    pub root: PathBuf,
}

impl Spawner {
    fn node_ref(&self, name: &str) -> NodeRef {
        NodeRef {
            name: name.to_string(),
            dir: self.root.join(name),
            bin: self.bin.clone(),
            health: Arc::new(AtomicU8::new(1)),
        }
    }

    /// Runs the binary directly (no data dir), inside `netns` when given.
    fn raw(&self, netns: Option<&str>, args: &[&str], timeout: Duration) -> Result<Ran> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&*self.bin);
                c
            }
            None => Command::new(&*self.bin),
        };
        cmd.args(args).env_remove("CAUSEWAY_DATA_DIR").env("RUST_LOG", "error");
        run_with_timeout(cmd, timeout)
    }

    /// `causeway init`: a new single-node cluster (not started).
    pub fn init(&self, name: &str, cluster_name: &str, place: &Place) -> Result<Node> {
        let r = self.node_ref(name);
        let port = match place.netns {
            // A fresh namespace has every port free.
            Some(_) => 7465,
            None => free_port()?,
        };
        let addr = SocketAddr::new(place.ip, port);
        let dir = path_str(&r.dir)?;
        let bind = addr.to_string();
        let args = [
            "init",
            "--data-dir",
            dir,
            "--name",
            cluster_name,
            "--bind",
            &bind,
            "--discovery",
            "static",
            "--json",
        ];
        let ran = self.raw(place.netns.as_deref(), &args, START_DEADLINE)?;
        if !ran.ok() {
            bail!("init {name}: {}", ran.error_line());
        }
        let info = ran.json().with_context(|| format!("init {name}"))?;
        Node::new(r, &info, addr, place.netns.clone())
    }

    /// `causeway cluster join` with a fresh invite from `inviter` (not started).
    pub fn join(&self, name: &str, inviter: &Node) -> Result<Node> {
        let invite = inviter.json(&["cluster", "invite"], CLI_TIMEOUT)?;
        let ticket = invite["ticket"]
            .as_str()
            .ok_or_else(|| anyhow!("invite from {} has no ticket: {invite}", inviter.name))?
            .to_string();
        let r = self.node_ref(name);
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()?);
        let bind = addr.to_string();
        let dir = path_str(&r.dir)?;
        let args = [
            "--data-dir",
            dir,
            "cluster",
            "join",
            &ticket,
            "--bind",
            &bind,
            "--discovery",
            "static",
            "--json",
        ];
        let ran = self.raw(None, &args, START_DEADLINE)?;
        if !ran.ok() {
            bail!("join {name}: {}", ran.error_line());
        }
        let joined = ran.json().with_context(|| format!("join {name}"))?;
        Node::new(r, &joined, addr, None)
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}

fn field(v: &Value, key: &str) -> Result<String> {
    v[key]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("no {key:?} in {v}"))
}

impl Node {
    fn new(r: NodeRef, info: &Value, addr: SocketAddr, netns: Option<String>) -> Result<Self> {
        Ok(Self {
            endpoint_id: field(info, "endpoint_id")?,
            cluster_id: field(info, "cluster_id")?,
            r,
            addr,
            netns,
            child: None,
            runs: 0,
        })
    }

    /// Rewrites this node's config (it must be stopped).
    pub fn tune(&self, f: &dyn Fn(&mut causeway::Config)) -> Result<()> {
        let path = self.dir.join("config.toml");
        let mut c = causeway::Config::load(&path).map_err(|e| anyhow!(e))?;
        f(&mut c);
        fs::write(&path, c.to_toml()).with_context(|| format!("write {}", path.display()))
    }

    pub fn log_path(&self, run: u32) -> PathBuf {
        self.dir.with_extension(format!("{run}.log"))
    }

    /// The last `n` lines of the daemon's logs (all runs), for a violation report.
    pub fn log_tail(&self, n: usize) -> String {
        let mut all = String::new();
        for run in 1..=self.runs {
            let mut text = String::new();
            if fs::File::open(self.log_path(run))
                .and_then(|mut f| f.read_to_string(&mut text))
                .is_ok()
            {
                all.push_str(&format!("--- run {run} ---\n{text}"));
            }
        }
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Starts `causeway run` and waits until its control socket accepts connections.
    ///
    /// The daemon dies with the thread that starts it (PR_SET_PDEATHSIG), so a runner that is
    /// killed leaves no daemon behind: start nodes only from the scenario's own thread.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).context("create log file")?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&*self.bin);
                c
            }
            None => Command::new(&*self.bin),
        };
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.dir)
            .env_remove("CAUSEWAY_DATA_DIR")
            .env("RUST_LOG", "info,openraft=warn,iroh=warn,iroh_blobs=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {}", self.name))?;
        self.child = Some(child);
        self.r.set_health(Health::Up);
        let socket = self.dir.join("control.sock");
        let name = self.name.clone();
        let mut early_exit = None;
        wait_for(&format!("{name} to serve its control socket"), START_DEADLINE, |_| {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                early_exit = Some(status);
                return Some(());
            }
            UnixStream::connect(&socket).ok().map(|_| ())
        })?;
        if let Some(status) = early_exit {
            self.child = None;
            self.r.set_health(Health::Down);
            bail!("{name} exited at start with {status}:\n{}", self.log_tail(20));
        }
        Ok(())
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.id() as libc::pid_t)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, not reaped yet (it is held in `self.child`).
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.r.set_health(Health::Down);
    }

    /// SIGSTOP: the process freezes (its sockets stay open, nothing answers).
    pub fn pause(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGSTOP);
            self.r.set_health(Health::Paused);
        }
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
            self.r.set_health(Health::Up);
        }
    }

    /// Makes the node run again whatever was done to it.
    pub fn ensure_up(&mut self) -> Result<()> {
        match self.health() {
            Health::Paused => {
                self.resume();
                Ok(())
            }
            Health::Down => self.start(),
            Health::Up => Ok(()),
        }
    }

    /// If the daemon exited without being told to, says how (and forgets the process).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.r.set_health(Health::Down);
        Some(format!("{} exited on its own with {status}", self.name))
    }

    /// SIGTERM and wait: a clean stop. An error if the daemon did not exit with status 0.
    pub fn stop(&mut self) -> Result<()> {
        if self.health() == Health::Paused {
            self.resume();
        }
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        self.r.set_health(Health::Down);
        // SAFETY: kill(2) on our child, not reaped yet.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                if status.success() {
                    return Ok(());
                }
                bail!("{} exited with {status} on SIGTERM", self.name);
            }
            if start.elapsed() > START_DEADLINE {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not stop within {START_DEADLINE:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.health() == Health::Paused {
            self.signal(libc::SIGCONT);
        }
        self.kill9();
    }
}

/// Stops every node cleanly, returning one line per node that did not stop cleanly.
pub fn stop_all(nodes: &mut [Node]) -> Vec<String> {
    nodes
        .iter_mut()
        .filter_map(|n| n.stop().err().map(|e| format!("{e:#}")))
        .collect()
}

/// Which of `nodes` the cluster reports as leader (asked of a running member).
pub fn leader_index(nodes: &[Node]) -> Option<usize> {
    for n in nodes.iter().filter(|n| n.is_up()) {
        if let Some(leader) = n
            .try_json(&["cluster", "status"])
            .and_then(|s| s["leader"].as_str().map(String::from))
        {
            return nodes.iter().position(|m| m.endpoint_id == leader);
        }
    }
    None
}

/// Waits until every member reports all `nodes` as reachable voters and the same leader.
pub fn wait_healthy(nodes: &[Node], timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let n = nodes.len();
    let what = format!("{} to report {n} reachable voters and one leader", nodes[0].name);
    wait_for(&what, timeout, |last| {
        let mut leaders = Vec::new();
        for node in nodes {
            let Some(s) = node.try_json(&["cluster", "status"]) else {
                *last = format!("{} does not answer", node.name);
                return None;
            };
            let members = s["members"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready = members
                .iter()
                .filter(|m| m["role"] == "voter" && m["reachable"] == true)
                .count();
            if ready != n || members.len() != n || !s["leader"].is_string() {
                *last = format!(
                    "{}: {ready}/{} ready voters, leader {}",
                    node.name,
                    members.len(),
                    s["leader"]
                );
                return None;
            }
            leaders.push(s["leader"].clone());
        }
        if leaders.windows(2).any(|w| w[0] != w[1]) {
            *last = format!("members disagree on the leader: {leaders:?}");
            return None;
        }
        Some(())
    })?;
    Ok(start.elapsed())
}

/// A cluster of `n` running nodes named `{prefix}1..`, formed by invite, healthy.
pub fn form_cluster(
    sp: &Spawner,
    prefix: &str,
    cluster_name: &str,
    n: usize,
    tune: &dyn Fn(&mut causeway::Config),
) -> Result<Vec<Node>> {
    let mut first = sp.init(&format!("{prefix}1"), cluster_name, &Place::loopback())?;
    first.tune(tune)?;
    first.start()?;
    let mut nodes = vec![first];
    for i in 2..=n {
        let mut node = sp.join(&format!("{prefix}{i}"), &nodes[0])?;
        node.tune(tune)?;
        node.start()?;
        nodes.push(node);
    }
    wait_healthy(&nodes, START_DEADLINE)?;
    Ok(nodes)
}

/// Every resource name a node lists, page by page (`--after`/`--limit`), checking the pages
/// come back in strictly increasing name order.
pub fn list_names(node: &NodeRef) -> Result<Vec<String>> {
    const PAGE: usize = 200;
    let mut names: Vec<String> = Vec::new();
    loop {
        let limit = PAGE.to_string();
        let mut args = vec!["resource", "list", "--limit", &limit];
        let after = names.last().cloned();
        if let Some(a) = &after {
            args.extend(["--after", a]);
        }
        let page = node.json(&args, CLI_TIMEOUT)?;
        let rows = page
            .as_array()
            .ok_or_else(|| anyhow!("{}: resource list is not an array", node.name))?;
        for r in rows {
            let name = r["name"].as_str().ok_or_else(|| anyhow!("row without a name: {r}"))?;
            if names.last().is_some_and(|l| l.as_str() >= name) {
                bail!(
                    "{}: resource list pages out of order: {name:?} after {:?}",
                    node.name,
                    names.last()
                );
            }
            names.push(name.to_string());
        }
        if rows.len() < PAGE {
            return Ok(names);
        }
    }
}

/// Waits until `node`'s link named `link` is pinned and reads `state`.
pub fn wait_link(node: &NodeRef, link: &str, state: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_for(
        &format!("{}'s link {link} to read {state}", node.name),
        timeout,
        |last| {
            let links = node.try_json(&["link", "list"])?;
            let row = links.as_array()?.iter().find(|l| l["name"] == link)?.clone();
            *last = format!("state {} reason {}", row["state"], row["reason"]);
            (row["state"] == state && row["peer"].is_string()).then_some(())
        },
    )?;
    Ok(start.elapsed())
}

/// `link add` from `from` to the cluster of `to`, under the name `name`.
pub fn link_add(from: &Node, to: &Node, name: &str) -> Result<()> {
    let addr = to.addr.to_string();
    let args = ["link", "add", &to.endpoint_id, "--addr", &addr, "--name", name];
    let ran = from.cli(&args, CLI_TIMEOUT)?;
    if !ran.ok() {
        bail!("{}: link add {name}: {}", from.name, ran.error_line());
    }
    Ok(())
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && fs::read(&p).is_ok_and(|bytes| contains(&bytes, needle)) => found.push(p),
                _ => {}
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    if hay.len() < needle.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_search() {
        assert!(contains(b"xxabcxx", b"abc"));
        assert!(contains(b"abc", b"abc"));
        assert!(!contains(b"ab", b"abc"));
        assert!(!contains(b"xxabxcx", b"abc"));
    }

    #[test]
    fn a_command_that_hangs_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let ran = run_with_timeout(cmd, Duration::from_millis(200)).expect("run sleep");
        assert!(ran.timed_out());
        assert!(start.elapsed() < Duration::from_secs(10));
        let ran = run_with_timeout(Command::new("true"), Duration::from_secs(10)).expect("run true");
        assert!(ran.ok());
    }
}
