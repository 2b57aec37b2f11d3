//! Scenarios 2 and 3, on one federation of three clusters:
//!
//! - origin (1-3 nodes) shares two artifacts (`--mode pull`) with peer (1-3 nodes) and keeps
//!   a private one shared with nobody; third (1 node) is linked with origin both ways but
//!   never shared with.
//! - **Transfers under crashes**: origin publishes new versions (a few MB each) through random
//!   members while peer syncs them; origin members and the peer's leader are killed with
//!   `kill -9` mid-transfer and restarted, nodes are paused. Afterwards every mirror must reach
//!   the origin's current version on every peer member, and the mirror file
//!   (`DATA_DIR/mirrors/<origin cluster id>/artifacts/<name>`) must be byte-identical to the file that
//!   version was published from.
//! - **Nothing leaks**: throughout, peer's and third's `catalog` of origin never name what they
//!   may not see; afterwards third has no mirror, requests for what is not shared are refused,
//!   and no data dir outside origin holds the private file's bytes (a marker is embedded) or
//!   its name, nor does third hold the shared content or names.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use super::proc::{self, CLI_TIMEOUT, Node, NodeRef};
use super::rng::Rng;
use super::writes::{Faults, Workers, kill, pause_for, reap_crashed, reason_class, restart, stopping};
use super::{Events, Report, Round, SharedEvents};

/// Catalog resync interval of the clusters here: short, so a notification lost to a crash is
/// repaired within seconds rather than the default minute.
const RESYNC_MS: u64 = 5_000;
const CONVERGE: Duration = Duration::from_secs(90);
/// A worker's command slower than this is noted in the events log.
const SLOW_OP: Duration = Duration::from_secs(3);

/// One file version we wrote and published from.
#[derive(Clone, Debug)]
struct Version {
    resource: String,
    seed: u64,
    len: usize,
}

/// The artifacts' source files and every version ever written to them, by BLAKE3 hash.
struct Files {
    dir: PathBuf,
    shared_marker: String,
    versions: Mutex<BTreeMap<String, Version>>,
}

impl Files {
    fn path(&self, resource: &str) -> PathBuf {
        self.dir.join(format!("{resource}.bin"))
    }

    fn bytes(marker: &str, v: &Version) -> Vec<u8> {
        let mut out = format!("{marker} {} {:016x}\n", v.resource, v.seed).into_bytes();
        out.extend(Rng::bytes(v.seed, v.len));
        out
    }

    fn content_of(&self, v: &Version) -> Vec<u8> {
        Self::bytes(&self.shared_marker, v)
    }

    /// Writes a new version of `resource`'s file (atomically: a publish that reads it sees one
    /// whole version) and records its hash.
    fn write_version(&self, resource: &str, rng: &mut Rng, len: usize) -> Result<String> {
        let v = Version {
            resource: resource.to_string(),
            seed: rng.next_u64(),
            len,
        };
        let data = self.content_of(&v);
        let hash = blake3::hash(&data).to_hex().to_string();
        let path = self.path(resource);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
        self.versions
            .lock()
            .map_err(|_| anyhow!("versions lock poisoned"))?
            .insert(hash.clone(), v);
        fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
        Ok(hash)
    }

    fn version(&self, hash: &str) -> Option<Version> {
        self.versions.lock().ok()?.get(hash).cloned()
    }
}

/// Names and markers unique to this round.
struct Names {
    shared: Vec<String>,
    private: String,
    private_marker: String,
}

struct World {
    origin: Vec<Node>,
    peer: Vec<Node>,
    third: Vec<Node>,
    origin_id: String,
    files: Arc<Files>,
    names: Names,
}

fn refs(nodes: &[Node]) -> Vec<NodeRef> {
    nodes.iter().map(|n| n.r.clone()).collect()
}

fn any_up(nodes: &[NodeRef], rng: &mut Rng) -> Option<NodeRef> {
    let up: Vec<&NodeRef> = nodes.iter().filter(|n| n.is_up()).collect();
    (!up.is_empty()).then(|| up[rng.index(up.len())].clone())
}

fn cli_ok(node: &NodeRef, args: &[&str]) -> Result<()> {
    let ran = node.cli(args, CLI_TIMEOUT)?;
    if !ran.ok() {
        anyhow::bail!("{}: `causeway {}`: {}", node.name, args.join(" "), ran.error_line());
    }
    Ok(())
}

fn artifact_len(round: &mut Round) -> usize {
    let (lo, hi) = round.profile.artifact_bytes;
    round.rng.between(lo, hi) as usize
}

fn build(round: &mut Round) -> Result<World> {
    let n_origin = round.rng.between(1, round.profile.max_origin) as usize;
    let n_peer = round.rng.between(1, round.profile.max_peer) as usize;
    let tune = |c: &mut causeway::Config| c.federation.catalog_resync_ms = RESYNC_MS;
    let sp = round.spawner.clone();
    let origin = proc::form_cluster(&sp, "o", "origin", n_origin, &tune)?;
    let peer = proc::form_cluster(&sp, "p", "peer", n_peer, &tune)?;
    let third = proc::form_cluster(&sp, "t", "third", 1, &tune)?;
    proc::link_add(&origin[0], &peer[0], "peer")?;
    proc::link_add(&peer[0], &origin[0], "origin")?;
    proc::link_add(&origin[0], &third[0], "third")?;
    proc::link_add(&third[0], &origin[0], "origin")?;
    let link_deadline = Duration::from_secs(60);
    proc::wait_link(&origin[0], "peer", "active", link_deadline)?;
    proc::wait_link(&origin[0], "third", "active", link_deadline)?;
    proc::wait_link(&peer[0], "origin", "active", link_deadline)?;
    proc::wait_link(&third[0], "origin", "active", link_deadline)?;

    let tag = round.rng.tag();
    let names = Names {
        shared: vec![format!("payload-{tag}"), format!("manifest-{tag}")],
        private: format!("hush-{tag}"),
        private_marker: format!("CHAOS-PRIVATE-{tag}"),
    };
    let files = Arc::new(Files {
        dir: sp.root.join("files"),
        shared_marker: format!("CHAOS-SHARED-{tag}"),
        versions: Mutex::new(BTreeMap::new()),
    });
    fs::create_dir_all(&files.dir).with_context(|| format!("create {}", files.dir.display()))?;
    let o = &origin[0];
    let big = artifact_len(round);
    for (i, name) in names.shared.iter().enumerate() {
        let len = if i == 0 { big } else { 20_000 };
        files.write_version(name, &mut round.rng, len)?;
        let path = files.path(name);
        let path = path.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
        cli_ok(
            o,
            &[
                "resource", "register", "--kind", "artifact", "--name", name, "--path", path,
            ],
        )?;
        cli_ok(o, &["share", name, "--with", "peer", "--mode", "pull"])?;
    }
    // The private file: a marker at the start and every 4 KiB, so any fragment of it is found.
    let private_path = files.dir.join("private.bin");
    let mut private = Vec::new();
    let mut r = round.rng.fork();
    while private.len() < 48 << 10 {
        private.extend_from_slice(names.private_marker.as_bytes());
        private.extend(Rng::bytes(r.next_u64(), 4096 - names.private_marker.len()));
    }
    fs::write(&private_path, &private).context("write the private file")?;
    let path = private_path.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    cli_ok(
        o,
        &[
            "resource",
            "register",
            "--kind",
            "artifact",
            "--name",
            &names.private,
            "--path",
            path,
        ],
    )?;
    let origin_id = o.cluster_id.clone();
    Ok(World {
        origin,
        peer,
        third,
        origin_id,
        files,
        names,
    })
}

#[derive(Default)]
struct PublishLog {
    ok: u32,
    failed: u32,
}

/// Runs one CLI command for a worker, noting it in the events log when it is slow or fails.
fn worker_cli(
    node: &NodeRef,
    args: &[&str],
    timeout: Duration,
    stop: &AtomicBool,
    ev: &SharedEvents,
) -> Result<(), String> {
    let started = Instant::now();
    let outcome = match node.cli_until(args, timeout, Some(stop)) {
        Ok(r) if r.ok() => Ok(()),
        Ok(r) => Err(r.error_line()),
        Err(e) => Err(format!("{e:#}")),
    };
    let took = started.elapsed();
    if took >= SLOW_OP || outcome.is_err() {
        ev.note(format_args!(
            "{} `{}` via {}: {} after {:.1}s",
            if outcome.is_ok() { "slow" } else { "failed" },
            args.join(" "),
            node.name,
            outcome.as_ref().err().map_or("ok", String::as_str),
            took.as_secs_f64()
        ));
    }
    outcome
}

fn publisher(
    files: Arc<Files>,
    names: Vec<String>,
    origin: Vec<NodeRef>,
    big: (u64, u64),
    mut rng: Rng,
    ev: SharedEvents,
    stop: Arc<AtomicBool>,
) -> PublishLog {
    let mut log = PublishLog::default();
    while !stopping(&stop) {
        if proc::sleep(rng.millis(600, 1800)).is_err() || stopping(&stop) {
            break;
        }
        for (i, name) in names.iter().enumerate() {
            if i > 0 && !rng.chance(0.5) {
                continue;
            }
            let len = if i == 0 {
                rng.between(big.0, big.1) as usize
            } else {
                20_000
            };
            let Some(node) = any_up(&origin, &mut rng) else {
                continue;
            };
            if files.write_version(name, &mut rng, len).is_err() {
                log.failed += 1;
                continue;
            }
            match worker_cli(&node, &["resource", "publish", name], CLI_TIMEOUT, &stop, &ev) {
                Ok(()) => log.ok += 1,
                Err(_) => log.failed += 1,
            }
        }
    }
    log
}

#[derive(Default)]
struct SyncLog {
    ok: u32,
    failed: BTreeMap<String, u32>,
}

fn syncer(names: Vec<String>, peer: Vec<NodeRef>, mut rng: Rng, ev: SharedEvents, stop: Arc<AtomicBool>) -> SyncLog {
    let mut log = SyncLog::default();
    while !stopping(&stop) {
        for name in &names {
            let Some(node) = any_up(&peer, &mut rng) else { continue };
            let args = ["sync", name, "--from", "origin", "--json"];
            match worker_cli(&node, &args, Duration::from_secs(30), &stop, &ev) {
                Ok(()) => log.ok += 1,
                Err(e) => *log.failed.entry(reason_class(&e)).or_default() += 1,
            }
        }
        if proc::sleep(rng.millis(300, 1200)).is_err() {
            break;
        }
    }
    log
}

/// What the peer's and third's catalog queries of origin showed while faults ran.
#[derive(Default)]
struct WatchLog {
    reads: u32,
    /// What was seen that may not be seen, and how many times.
    leaks: BTreeMap<String, u32>,
}

fn catalog_names(node: &NodeRef, cached: bool) -> Option<Vec<String>> {
    let mut args = vec!["catalog", "origin"];
    if cached {
        args.push("--cached");
    }
    let v = node.try_json(&args)?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect(),
    )
}

fn watcher(private: String, peer: Vec<NodeRef>, third: Vec<NodeRef>, mut rng: Rng, stop: Arc<AtomicBool>) -> WatchLog {
    let mut log = WatchLog::default();
    while !stopping(&stop) {
        let cached = rng.chance(0.5);
        if let Some(p) = any_up(&peer, &mut rng)
            && let Some(names) = catalog_names(&p, cached)
        {
            log.reads += 1;
            if names.contains(&private) {
                *log.leaks
                    .entry(format!(
                        "{}'s catalog of origin (cached={cached}) listed private {private:?}",
                        p.name
                    ))
                    .or_default() += 1;
            }
        }
        if let Some(t) = any_up(&third, &mut rng)
            && let Some(names) = catalog_names(&t, cached)
        {
            log.reads += 1;
            if !names.is_empty() {
                *log.leaks
                    .entry(format!(
                        "{}'s catalog of origin (cached={cached}) listed {names:?}",
                        t.name
                    ))
                    .or_default() += 1;
            }
        }
        if proc::sleep(rng.millis(200, 700)).is_err() {
            break;
        }
    }
    log
}

/// Waits (briefly) until the peer reports a transfer in flight; true if it saw one.
fn wait_transferring(peer: &[Node], within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end && proc::check_interrupted().is_ok() {
        if let Some(p) = peer.iter().find(|p| p.is_up())
            && let Ok(ran) = p.cli(&["sync", "status", "--json"], Duration::from_secs(2))
            && let Ok(rows) = ran.json()
            && rows
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["state"] == "transferring"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    false
}

fn inject(
    w: &mut World,
    rng: &mut Rng,
    ev: &mut Events,
    until: Instant,
    violations: &mut Vec<String>,
) -> Result<Faults> {
    let mut faults = Faults::default();
    while Instant::now() < until {
        proc::sleep(rng.millis(500, 2000))?;
        if Instant::now() >= until {
            break;
        }
        reap_crashed(&mut w.origin, violations, ev)?;
        reap_crashed(&mut w.peer, violations, ev)?;
        reap_crashed(&mut w.third, violations, ev)?;
        let roll = rng.below(10);
        if roll < 8 {
            let mid = wait_transferring(&w.peer, Duration::from_secs(3));
            let on_origin = roll < 4;
            let nodes = if on_origin { &mut w.origin } else { &mut w.peer };
            let leader = proc::leader_index(nodes);
            let victim = match leader {
                Some(l) if !on_origin || rng.chance(0.5) => l,
                _ => rng.index(nodes.len()),
            };
            kill(nodes, victim, leader, &mut faults, ev);
            if mid {
                faults.mid_transfer += 1;
                ev.note("(a transfer was in flight)");
            }
            proc::sleep(rng.millis(300, 2500))?;
            restart(nodes, victim, ev)?;
        } else {
            let nodes = if rng.chance(0.5) { &mut w.origin } else { &mut w.peer };
            let i = rng.index(nodes.len());
            pause_for(nodes, i, rng.millis(500, 2000), &mut faults, ev)?;
        }
    }
    Ok(faults)
}

/// The origin's current version and content root of `name`.
fn origin_state(w: &World, name: &str) -> Option<(u64, String)> {
    w.origin.iter().filter(|n| n.is_up()).find_map(|n| {
        let r = n.try_json(&["resource", "show", name])?;
        Some((r["version"].as_u64()?, r["content"].as_str()?.to_string()))
    })
}

fn mirror_file(node: &NodeRef, origin_id: &str, name: &str) -> PathBuf {
    match origin_id.parse() {
        Ok(origin) => causeway::transfer::mirror_path(&node.dir, &origin, name, "artifact"),
        Err(_) => node.dir.join("mirrors").join(origin_id).join("artifacts").join(name),
    }
}

/// Waits until every peer member's mirror of `name` is at the origin's current version, with
/// the same content root, and its file hashes to that root; then compares the bytes with the
/// file that version was published from.
fn converge(w: &World, name: &str, violations: &mut Vec<String>) -> Result<Duration> {
    let start = Instant::now();
    let what = format!("the peer's mirrors of {name} to reach the origin's version");
    let (version, content) = proc::wait_for(&what, CONVERGE, |last| {
        let Some((version, content)) = origin_state(w, name) else {
            *last = "origin does not answer".into();
            return None;
        };
        for p in &w.peer {
            let Some(m) = p.try_json(&["resource", "show", name]) else {
                *last = format!("{} has no mirror (origin v{version})", p.name);
                return None;
            };
            if m["version"].as_u64() != Some(version) || m["content"].as_str() != Some(content.as_str()) {
                *last = format!("{} at v{} vs origin v{version}", p.name, m["version"]);
                return None;
            }
            if m["mirror_of"].as_str() != Some(w.origin_id.as_str()) {
                *last = format!("{} mirror_of {} (origin is {})", p.name, m["mirror_of"], w.origin_id);
                return None;
            }
            let file = mirror_file(p, &w.origin_id, name);
            let Ok(bytes) = fs::read(&file) else {
                *last = format!("{} has no mirror file {}", p.name, file.display());
                return None;
            };
            if blake3::hash(&bytes).to_hex().as_str() != content {
                *last = format!("{}'s mirror file is not v{version}'s content", p.name);
                return None;
            }
        }
        Some((version, content))
    })?;
    let elapsed = start.elapsed();
    match w.files.version(&content) {
        None => violations.push(format!(
            "origin's current content of {name} (v{version}, {content}) is no file we wrote"
        )),
        Some(v) => {
            let expected = w.files.content_of(&v);
            for p in &w.peer {
                let file = mirror_file(p, &w.origin_id, name);
                if fs::read(&file).ok().as_deref() != Some(expected.as_slice()) {
                    violations.push(format!(
                        "{}: {} differs from the origin's v{version}",
                        p.name,
                        file.display()
                    ));
                }
            }
        }
    }
    Ok(elapsed)
}

fn heal(w: &mut World, violations: &mut Vec<String>, ev: &mut Events) -> Result<Duration> {
    let start = Instant::now();
    ev.note("faults stopped; healing");
    for nodes in [&mut w.origin, &mut w.peer, &mut w.third] {
        reap_crashed(nodes, violations, ev)?;
        for n in nodes.iter_mut() {
            n.ensure_up()?;
        }
    }
    for nodes in [&w.origin, &w.peer, &w.third] {
        if let Err(e) = proc::wait_healthy(nodes, Duration::from_secs(60)) {
            violations.push(format!("a cluster did not heal: {e:#}"));
        }
    }
    let d = Duration::from_secs(60);
    for (node, link) in [
        (&w.origin[0], "peer"),
        (&w.origin[0], "third"),
        (&w.peer[0], "origin"),
        (&w.third[0], "origin"),
    ] {
        if let Err(e) = proc::wait_link(node, link, "active", d) {
            violations.push(format!("link did not recover: {e:#}"));
        }
    }
    Ok(start.elapsed())
}

/// Makes sure the peer has a mirror of every shared resource (a first sync that every fault
/// interrupted leaves none to follow): syncs until one succeeds. Returns how many were needed.
fn ensure_mirrors(w: &World) -> Result<u32> {
    let mut late = 0;
    for name in &w.names.shared {
        if w.peer[0].try_json(&["resource", "show", name]).is_some() {
            continue;
        }
        late += 1;
        proc::wait_for(&format!("a sync of {name} to succeed"), CONVERGE, |last| {
            match w.peer[0].cli(&["sync", name, "--from", "origin", "--json"], Duration::from_secs(60)) {
                Ok(r) if r.ok() => Some(()),
                Ok(r) => {
                    *last = r.error_line();
                    None
                }
                Err(e) => {
                    *last = format!("{e:#}");
                    None
                }
            }
        })?;
    }
    Ok(late)
}

pub fn run(round: &mut Round, transfers: bool, leaks: bool) -> Result<Vec<(String, Report)>> {
    let mut w = build(round)?;
    round.events.note(format_args!(
        "clusters formed (origin {}, peer {}, third 1 node), linked, artifacts published and shared",
        w.origin.len(),
        w.peer.len()
    ));
    let mut tr = Report::default();
    let mut lk = Report::default();
    let shared = w.names.shared.clone();
    let mut watch_workers = Workers::new();
    {
        let (private, p, t, rng) = (w.names.private.clone(), refs(&w.peer), refs(&w.third), round.rng.fork());
        watch_workers.spawn(move |stop| watcher(private, p, t, rng, stop));
    }
    let mut faults = Faults::default();
    let mut publish_log = PublishLog::default();
    let mut sync_log = SyncLog::default();
    if transfers {
        let mut pubs = Workers::new();
        let (files, names, o, big, rng, ev) = (
            w.files.clone(),
            shared.clone(),
            refs(&w.origin),
            round.profile.artifact_bytes,
            round.rng.fork(),
            round.events.shared(),
        );
        pubs.spawn(move |stop| publisher(files, names, o, big, rng, ev, stop));
        let mut syncs = Workers::new();
        let (names, p, rng, ev) = (shared.clone(), refs(&w.peer), round.rng.fork(), round.events.shared());
        syncs.spawn(move |stop| syncer(names, p, rng, ev, stop));
        let until = Instant::now() + round.profile.transfer_faults;
        faults = inject(&mut w, &mut round.rng, &mut round.events, until, &mut tr.violations)?;
        publish_log = pubs.finish().pop().unwrap_or_default();
        sync_log = syncs.finish().pop().unwrap_or_default();
    } else {
        for name in &shared {
            cli_ok(&w.peer[0], &["sync", name, "--from", "origin"])?;
        }
    }
    let healed = heal(&mut w, &mut tr.violations, &mut round.events)?;
    round.events.note(format_args!(
        "healed in {:.1}s; waiting for mirrors",
        healed.as_secs_f64()
    ));
    let late = ensure_mirrors(&w).unwrap_or_else(|e| {
        tr.violations.push(format!("the peer never got a first mirror: {e:#}"));
        0
    });
    let mut converged = Vec::new();
    for name in &shared {
        match converge(&w, name, &mut tr.violations) {
            Ok(d) => {
                tr.mirrors_converged += 1;
                converged.push(format!("{:.1}s", d.as_secs_f64()));
            }
            Err(e) => tr.violations.push(format!("{e:#}")),
        }
    }
    let watch = watch_workers.finish().pop().unwrap_or_default();

    let mut out = Vec::new();
    if leaks {
        lk.violations.extend(
            watch
                .leaks
                .iter()
                .map(|(what, n)| format!("{what} ({n} time(s) while faults ran)")),
        );
        let scanned = check_leaks(&w, &mut lk.violations)?;
        lk.line = format!(
            "{} catalog reads by peer/third while faults ran, {scanned} files outside origin scanned for \
             private bytes and names, third's listing and 3 requests for unshared resources checked",
            watch.reads
        );
    }
    let stop_problems = {
        let mut v = proc::stop_all(&mut w.origin);
        v.extend(proc::stop_all(&mut w.peer));
        v.extend(proc::stop_all(&mut w.third));
        v
    };
    if transfers {
        tr.violations.extend(stop_problems);
        let failed: u32 = sync_log.failed.values().sum();
        let mut reasons: Vec<(&String, &u32)> = sync_log.failed.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let reasons: Vec<String> = reasons.iter().take(2).map(|(k, n)| format!("{n}x '{k}'")).collect();
        tr.line = format!(
            "origin {} node(s), peer {} node(s): {} versions published ({} failed), {} syncs ok, {failed} failed{}; \
             {faults}, {} kills mid-transfer; healed in {:.1}s{}; mirrors converged in [{}]",
            w.origin.len(),
            w.peer.len(),
            publish_log.ok,
            publish_log.failed,
            sync_log.ok,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            faults.mid_transfer,
            healed.as_secs_f64(),
            if late > 0 {
                format!(", {late} first sync(s) after healing")
            } else {
                String::new()
            },
            converged.join(", ")
        );
        out.push(("transfers".to_string(), tr));
    } else {
        lk.violations.extend(stop_problems);
        lk.violations.extend(tr.violations);
    }
    if leaks {
        out.push(("leaks".to_string(), lk));
    }
    Ok(out)
}

/// Scenario 3's checks after the faults. Returns how many files were scanned.
fn check_leaks(w: &World, violations: &mut Vec<String>) -> Result<usize> {
    let t = &w.third[0];
    let private = w.names.private.as_str();
    // Third holds no mirror and sees nothing.
    match proc::list_names(t) {
        Ok(names) if names.is_empty() => {}
        Ok(names) => violations.push(format!("third lists resources it was never shared: {names:?}")),
        Err(e) => violations.push(format!("third: {e:#}")),
    }
    for node in &w.third {
        if let Ok(mut entries) = fs::read_dir(node.dir.join("mirrors"))
            && entries.next().is_some()
        {
            violations.push(format!("{} has a mirrors folder with content", node.name));
        }
    }
    match catalog_names(t, false) {
        Some(names) if names.is_empty() => {}
        Some(names) => violations.push(format!("third's catalog of origin lists {names:?}")),
        None => violations.push("third cannot query origin's catalog".into()),
    }
    match catalog_names(&w.peer[0], false) {
        Some(names) if names.iter().any(|n| n == private) => {
            violations.push(format!("peer's catalog of origin lists the private {private:?}"))
        }
        Some(_) => {}
        None => violations.push("peer cannot query origin's catalog".into()),
    }
    // Bytes and names, before any probe below makes the names appear in a status here.
    let scanned: usize = w.peer.iter().chain(&w.third).map(|n| count_files(&n.dir)).sum();
    let scan = |nodes: &[Node], needle: &str, what: &str, violations: &mut Vec<String>| {
        for n in nodes {
            for f in proc::files_containing(&n.dir, needle.as_bytes()) {
                violations.push(format!("{} holds {what}: {}", n.name, f.display()));
            }
        }
    };
    scan(&w.peer, &w.names.private_marker, "the private file's bytes", violations);
    scan(
        &w.third,
        &w.names.private_marker,
        "the private file's bytes",
        violations,
    );
    scan(&w.peer, private, "the private resource's name", violations);
    scan(&w.third, private, "the private resource's name", violations);
    scan(
        &w.third,
        &w.files.shared_marker,
        "bytes of a resource not shared with it",
        violations,
    );
    for name in &w.names.shared {
        scan(&w.third, name, "the name of a resource not shared with it", violations);
    }
    // Asking for what is not shared is refused, and leaves nothing behind.
    let probes = [(t, w.names.shared[0].as_str()), (t, private), (&w.peer[0], private)];
    for (node, name) in probes {
        let ran = node.cli(&["sync", name, "--from", "origin", "--json"], Duration::from_secs(60))?;
        if ran.ok() {
            violations.push(format!("{} could sync {name:?} from origin", node.name));
        }
    }
    if w.peer[0].try_json(&["resource", "show", private]).is_some() {
        violations.push(format!("peer has a resource named {private:?}"));
    }
    match proc::list_names(t) {
        Ok(names) if names.is_empty() => {}
        Ok(names) => violations.push(format!("after probes third lists {names:?}")),
        Err(e) => violations.push(format!("third: {e:#}")),
    }
    scan(
        &w.peer,
        &w.names.private_marker,
        "the private file's bytes (after probes)",
        violations,
    );
    scan(
        &w.third,
        &w.names.private_marker,
        "the private file's bytes (after probes)",
        violations,
    );
    scan(
        &w.third,
        &w.files.shared_marker,
        "shared bytes (after probes)",
        violations,
    );
    Ok(scanned)
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}
