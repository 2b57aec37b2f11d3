//! Scenario 4, partitions (root only): two single-node clusters, each in its own network
//! namespace, joined by a veth pair with link-local addresses (169.254.x.1/.2, nothing routed
//! anywhere else). They link both ways and one shares an artifact with the other. Then the
//! link between them is degraded (`tc netem delay 50ms loss 10%`, or a rate limit where the
//! kernel has no netem), a version must still arrive; the veth is cut (`ip link set down`), both
//! links must read `failing` within the health bound while a version is published on the cut
//! side; the veth is restored, both links must read `active` again within the bound and the
//! version published during the cut must reach the mirror, byte for byte.
//!
//! Without root (or without `ip`, or where namespaces cannot be made) it says so and skips.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use super::proc::{self, CLI_TIMEOUT, Node, NodeRef, Place};
use super::rng::Rng;
use super::{Report, Round};

/// How soon a link must read `failing` after a cut, and `active` after the cut is repaired:
/// heartbeats every second, failing after three missed, with room for a loaded machine.
const HEALTH_BOUND: Duration = Duration::from_secs(10);
const RESYNC_MS: u64 = 5_000;
const PREFIX: &str = "cwc";

fn skipped(why: &str) -> Report {
    println!("chaos: skipping partition scenarios ({why})");
    Report {
        line: why.to_string(),
        skipped: true,
        ..Report::default()
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let ran = proc::run_with_timeout(cmd, Duration::from_secs(20))?;
    if !ran.ok() {
        bail!("`{program} {}`: {}", args.join(" "), ran.error_line());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run_tool("ip", args)
}

fn have_ip() -> bool {
    Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// Two namespaces joined by a veth pair. Dropping it deletes both namespaces (and with them
/// the veth ends inside), and the host end if it was never moved.
struct Net {
    ns: [String; 2],
    veth: [String; 2],
    ips: [IpAddr; 2],
}

impl Net {
    fn create(rng: &mut Rng) -> Result<Self> {
        let pid = std::process::id();
        let x = 1 + rng.below(250) as u8;
        let net = Net {
            ns: [format!("{PREFIX}{pid}a"), format!("{PREFIX}{pid}b")],
            veth: [format!("{PREFIX}{pid}a"), format!("{PREFIX}{pid}b")],
            ips: [
                IpAddr::V4(Ipv4Addr::new(169, 254, x, 1)),
                IpAddr::V4(Ipv4Addr::new(169, 254, x, 2)),
            ],
        };
        net.remove();
        for ns in &net.ns {
            ip(&["netns", "add", ns])?;
        }
        let [va, vb] = &net.veth;
        ip(&["link", "add", va, "type", "veth", "peer", "name", vb])?;
        for i in 0..2 {
            let (ns, veth) = (&net.ns[i], &net.veth[i]);
            ip(&["link", "set", veth, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/30", net.ips[i]), "dev", veth])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", veth, "up"])?;
        }
        Ok(net)
    }

    fn remove(&self) {
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.veth[0]]);
    }

    /// Brings side A's veth end down (a cut) or up.
    fn set_link(&self, up: bool) -> Result<()> {
        ip(&[
            "-n",
            &self.ns[0],
            "link",
            "set",
            &self.veth[0],
            if up { "up" } else { "down" },
        ])
    }

    fn tc(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["netns", "exec", &self.ns[0], "tc"];
        full.extend_from_slice(args);
        run_tool("ip", &full)
    }

    /// Delay and loss on A's side; returns what was applied.
    fn degrade(&self) -> Result<String> {
        let dev = self.veth[0].as_str();
        match self.tc(&[
            "qdisc", "add", "dev", dev, "root", "netem", "delay", "50ms", "loss", "10%",
        ]) {
            Ok(()) => Ok("netem delay 50ms loss 10%".into()),
            Err(e) => {
                // Kernels without sch_netem (some VMs) still shape: a slow link instead.
                self.tc(&[
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", "4mbit", "burst", "32kbit", "latency", "400ms",
                ])
                .with_context(|| format!("netem unavailable ({e:#}), and tbf failed too"))?;
                println!(
                    "chaos: tc netem is not available in this kernel; the degraded link is a 4 Mbit/s tbf instead"
                );
                Ok("tbf 4mbit (no netem in this kernel)".into())
            }
        }
    }

    fn undegrade(&self) -> Result<()> {
        self.tc(&["qdisc", "del", "dev", &self.veth[0], "root"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Deletes namespaces left by runs that no longer exist (a runner killed with SIGKILL).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(digits) = name
            .strip_prefix(PREFIX)
            .and_then(|s| s.strip_suffix('a').or_else(|| s.strip_suffix('b')))
        else {
            continue;
        };
        let Ok(pid) = digits.parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

struct Artifact {
    path: PathBuf,
    name: String,
}

impl Artifact {
    /// Writes a new version of the file; returns its bytes.
    fn write(&self, rng: &mut Rng, len: usize) -> Result<Vec<u8>> {
        let data = Rng::bytes(rng.next_u64(), len);
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &self.path).with_context(|| format!("rename to {}", self.path.display()))?;
        Ok(data)
    }
}

fn publish(node: &NodeRef, name: &str) -> Result<u64> {
    let v = node.json(&["resource", "publish", name], CLI_TIMEOUT)?;
    v["version"]
        .as_u64()
        .ok_or_else(|| anyhow!("publish printed no version: {v}"))
}

/// Waits until `node`'s mirror of `name` from `origin` is at `version` with exactly `data`.
fn wait_mirror(
    node: &Node,
    origin: &str,
    name: &str,
    version: u64,
    data: &[u8],
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let hash = blake3::hash(data).to_hex().to_string();
    let file = match origin.parse() {
        Ok(id) => causeway::transfer::mirror_path(&node.dir, &id, name, "artifact"),
        Err(_) => node.dir.join("mirrors").join(origin).join("artifacts").join(name),
    };
    proc::wait_for(
        &format!("{}'s mirror of {name} at v{version}", node.name),
        timeout,
        |last| {
            let m = node.try_json(&["resource", "show", name])?;
            *last = format!("v{} content {}", m["version"], m["content"]);
            if m["version"].as_u64() != Some(version) || m["content"].as_str() != Some(hash.as_str()) {
                return None;
            }
            (fs::read(&file).ok()? == data).then_some(())
        },
    )?;
    Ok(start.elapsed())
}

pub fn run(round: &mut Round) -> Result<Report> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(skipped("needs root for network namespaces"));
    }
    if !have_ip() {
        return Ok(skipped("needs the `ip` tool for network namespaces"));
    }
    remove_stale();
    let net = match Net::create(&mut round.rng) {
        Ok(n) => n,
        Err(e) => return Ok(skipped(&format!("cannot create network namespaces: {e:#}"))),
    };
    // Declared after `net`, so the daemons are killed before their namespaces go.
    let mut nodes: Vec<Node> = Vec::new();
    let tune = |c: &mut causeway::Config| c.federation.catalog_resync_ms = RESYNC_MS;
    for (i, (name, cluster)) in [("na", "west"), ("nb", "east")].into_iter().enumerate() {
        let place = Place {
            netns: Some(net.ns[i].clone()),
            ip: net.ips[i],
        };
        let mut node = round.spawner.init(name, cluster, &place)?;
        node.tune(&tune)?;
        node.start()?;
        nodes.push(node);
    }
    let mut report = Report::default();
    let result = exercise(round, &net, &nodes, &mut report);
    report.violations.extend(proc::stop_all(&mut nodes));
    match result {
        Ok(line) => {
            report.line = line;
            report.mirrors_converged = 1;
        }
        Err(e) => report.violations.push(format!("{e:#}")),
    }
    drop(nodes);
    drop(net);
    Ok(report)
}

fn exercise(round: &mut Round, net: &Net, nodes: &[Node], report: &mut Report) -> Result<String> {
    let (a, b) = (&nodes[0], &nodes[1]);
    proc::link_add(a, b, "east")?;
    proc::link_add(b, a, "west")?;
    proc::wait_link(a, "east", "active", Duration::from_secs(60))?;
    proc::wait_link(b, "west", "active", Duration::from_secs(60))?;
    let files = round.spawner.root.join("files");
    fs::create_dir_all(&files).with_context(|| format!("create {}", files.display()))?;
    let art = Artifact {
        path: files.join("art.bin"),
        name: format!("art-{}", round.rng.tag()),
    };
    let rng = &mut round.rng;
    let v1 = art.write(rng, 1 << 20)?;
    let path = art.path.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let args = [
        "resource", "register", "--kind", "artifact", "--name", &art.name, "--path", path,
    ];
    let ran = a.cli(&args, CLI_TIMEOUT)?;
    if !ran.ok() {
        bail!("register on {}: {}", a.name, ran.error_line());
    }
    a.json(&["share", &art.name, "--with", "east", "--mode", "pull"], CLI_TIMEOUT)?;
    b.json(&["sync", &art.name, "--from", "west"], Duration::from_secs(60))?;
    wait_mirror(b, &a.cluster_id, &art.name, 1, &v1, Duration::from_secs(30))?;

    // A degraded link still carries a new version, and stays (or comes back) active.
    let how = net.degrade()?;
    let v2 = art.write(rng, 2 << 20)?;
    let version = publish(a, &art.name)?;
    let over_degraded = wait_mirror(b, &a.cluster_id, &art.name, version, &v2, Duration::from_secs(90))?;
    proc::wait_link(b, "west", "active", Duration::from_secs(30))?;

    // Cut: both sides must notice within the bound; the origin keeps taking writes.
    net.set_link(false)?;
    let cut = Instant::now();
    let mut noticed = Vec::new();
    for (node, link) in [(b, "west"), (a, "east")] {
        match proc::wait_link(node, link, "failing", HEALTH_BOUND * 3) {
            Ok(_) => {
                let after = cut.elapsed();
                if after > HEALTH_BOUND {
                    report.violations.push(format!(
                        "{}'s link {link} read failing only {:.1}s after the cut (bound {HEALTH_BOUND:?})",
                        node.name,
                        after.as_secs_f64()
                    ));
                }
                noticed.push(format!("{:.1}s", after.as_secs_f64()));
            }
            Err(e) => report.violations.push(format!("after the cut: {e:#}")),
        }
    }
    let v3 = art.write(rng, 1 << 20)?;
    let during_cut = publish(a, &art.name)?;
    let stale = b.json(&["resource", "show", &art.name], Duration::from_secs(10))?;
    if stale["version"].as_u64() != Some(version) {
        report.violations.push(format!(
            "during the cut the mirror moved from v{version} to v{} (it cannot reach its origin)",
            stale["version"]
        ));
    }

    // Restore: both links active again within the bound, and the version published during
    // the cut reaches the mirror.
    net.undegrade()?;
    net.set_link(true)?;
    let restored = Instant::now();
    let mut recovered = Vec::new();
    for (node, link) in [(b, "west"), (a, "east")] {
        match proc::wait_link(node, link, "active", HEALTH_BOUND * 3) {
            Ok(_) => {
                let after = restored.elapsed();
                if after > HEALTH_BOUND {
                    report.violations.push(format!(
                        "{}'s link {link} read active only {:.1}s after the restore (bound {HEALTH_BOUND:?})",
                        node.name,
                        after.as_secs_f64()
                    ));
                }
                recovered.push(format!("{:.1}s", after.as_secs_f64()));
            }
            Err(e) => report.violations.push(format!("after the restore: {e:#}")),
        }
    }
    wait_mirror(b, &a.cluster_id, &art.name, during_cut, &v3, Duration::from_secs(90))?;
    let caught_up = restored.elapsed();
    Ok(format!(
        "2 single-node clusters in namespaces {}/{} ({} / {}), {how}: v{version} synced over it in {:.1}s; \
         cut -> failing in [{}]; restore -> active in [{}]; v{during_cut} (published during the cut) \
         mirrored {:.1}s after the restore",
        net.ns[0],
        net.ns[1],
        net.ips[0],
        net.ips[1],
        over_degraded.as_secs_f64(),
        noticed.join(", "),
        recovered.join(", "),
        caught_up.as_secs_f64()
    ))
}
