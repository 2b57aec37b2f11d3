//! Scenario 1, writes under crashes: a 3-node cluster takes `resource register` of unique
//! names through random members while nodes are killed (sometimes the leader) and restarted,
//! and others are paused. Every name whose `register` exited 0 must then be listed by every
//! member; no member may list a name nobody tried to write; all members must agree.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::proc::{self, CLI_TIMEOUT, Node, NodeRef};
use super::rng::Rng;
use super::{Events, Report, Round, SharedEvents};

const WRITERS: usize = 3;
const MEMBERS: usize = 3;

/// What one writer thread did.
#[derive(Default)]
struct WriterLog {
    attempted: Vec<String>,
    committed: Vec<String>,
    /// Exited non-zero: reason (the error's first words) -> count.
    failed: BTreeMap<String, u64>,
    timed_out: u64,
    /// Names whose (first and only) register was refused as already existing: the write had
    /// committed and was retried behind the client's back.
    refused_as_existing: Vec<String>,
}

/// Threads that stop (and are joined) when this is dropped, on every path.
pub struct Workers<T> {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<T>>,
}

impl<T: Send + 'static> Workers<T> {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        }
    }

    pub fn spawn(&mut self, f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) {
        let stop = self.stop.clone();
        self.handles.push(std::thread::spawn(move || f(stop)));
    }

    /// Stops the threads and returns what each produced (a panicked thread yields nothing).
    pub fn finish(mut self) -> Vec<T> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles.drain(..).filter_map(|h| h.join().ok()).collect()
    }
}

impl<T> Drop for Workers<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Whether a worker should stop.
pub fn stopping(stop: &AtomicBool) -> bool {
    stop.load(Ordering::SeqCst) || proc::check_interrupted().is_err()
}

/// A short class of an error line, for counting failures by reason.
pub fn reason_class(line: &str) -> String {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ':')
        .filter(|w| !w.is_empty() && !w.chars().any(|c| c.is_ascii_digit()))
        .take(5)
        .collect();
    words.join(" ")
}

/// Healing slower than this is marked in the round's line (a restarted member normally
/// rejoins within a few heartbeats).
pub const SLOW_HEAL: Duration = Duration::from_secs(10);
/// A write slower than this is noted in the events log.
const SLOW_WRITE: Duration = Duration::from_secs(2);

fn writer(id: usize, nodes: Vec<NodeRef>, mut rng: Rng, ev: SharedEvents, stop: Arc<AtomicBool>) -> WriterLog {
    let mut log = WriterLog::default();
    let mut i = 0u32;
    while !stopping(&stop) {
        let up: Vec<&NodeRef> = nodes.iter().filter(|n| n.is_up()).collect();
        if up.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let node = up[rng.index(up.len())];
        let name = format!("w{id}-{i:05}");
        i += 1;
        log.attempted.push(name.clone());
        let args = ["resource", "register", "--kind", "artifact", "--name", &name];
        let started = Instant::now();
        let outcome = match node.cli_until(&args, CLI_TIMEOUT, Some(&stop)) {
            Ok(ran) if ran.ok() => {
                log.committed.push(name.clone());
                "committed".to_string()
            }
            Ok(ran) if ran.timed_out() => {
                log.timed_out += 1;
                "no answer (outcome unknown)".to_string()
            }
            Ok(ran) => {
                let line = ran.error_line();
                if line.contains("already exists") {
                    log.refused_as_existing.push(name.clone());
                }
                *log.failed.entry(reason_class(&line)).or_default() += 1;
                format!("failed: {line}")
            }
            Err(e) => {
                *log.failed.entry(reason_class(&format!("{e}"))).or_default() += 1;
                format!("failed: {e}")
            }
        };
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            ev.note(format_args!(
                "slow write {name} via {}: {outcome} after {:.1}s",
                node.name,
                took.as_secs_f64()
            ));
        }
    }
    log
}

/// Counts of injected faults.
#[derive(Default)]
pub struct Faults {
    pub kills: u32,
    pub leader_kills: u32,
    pub pauses: u32,
    pub mid_transfer: u32,
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kill -9 ({} of a leader), {} pauses",
            self.kills, self.leader_kills, self.pauses
        )
    }
}

/// Notes any daemon that died without being killed (a violation) and restarts it.
pub fn reap_crashed(nodes: &mut [Node], violations: &mut Vec<String>, ev: &mut Events) -> Result<()> {
    for n in nodes.iter_mut() {
        if let Some(what) = n.exited() {
            ev.note(&what);
            violations.push(format!("{what}; log tail:\n{}", n.log_tail(15)));
            n.start()?;
        }
    }
    Ok(())
}

/// Pauses `nodes[i]` for `d`, then resumes it.
pub fn pause_for(nodes: &mut [Node], i: usize, d: Duration, faults: &mut Faults, ev: &mut Events) -> Result<()> {
    nodes[i].pause();
    ev.note(format_args!("SIGSTOP {} for {d:?}", nodes[i].name));
    faults.pauses += 1;
    let slept = proc::sleep(d);
    nodes[i].resume();
    ev.note(format_args!("SIGCONT {}", nodes[i].name));
    slept
}

/// Kills `nodes[i]` with SIGKILL (noting whether it led its cluster).
pub fn kill(nodes: &mut [Node], i: usize, leader: Option<usize>, faults: &mut Faults, ev: &mut Events) {
    nodes[i].kill9();
    faults.kills += 1;
    let led = leader == Some(i);
    faults.leader_kills += u32::from(led);
    ev.note(format_args!(
        "kill -9 {}{}",
        nodes[i].name,
        if led { " (leader)" } else { "" }
    ));
}

/// Restarts a killed node.
pub fn restart(nodes: &mut [Node], i: usize, ev: &mut Events) -> Result<()> {
    nodes[i].start()?;
    ev.note(format_args!("restarted {}", nodes[i].name));
    Ok(())
}

fn inject(
    nodes: &mut [Node],
    rng: &mut Rng,
    ev: &mut Events,
    until: Instant,
    violations: &mut Vec<String>,
) -> Result<Faults> {
    let mut faults = Faults::default();
    while Instant::now() < until {
        proc::sleep(rng.millis(300, 1500))?;
        if Instant::now() >= until {
            break;
        }
        reap_crashed(nodes, violations, ev)?;
        let leader = proc::leader_index(nodes);
        let victim = match leader {
            Some(l) if rng.chance(0.5) => l,
            _ => rng.index(nodes.len()),
        };
        if rng.chance(0.7) {
            kill(nodes, victim, leader, &mut faults, ev);
            let down_for = rng.millis(200, 3000);
            let started = Instant::now();
            if rng.chance(0.4) {
                // While one node is down, freeze another: no quorum for a moment.
                let other = (victim + 1 + rng.index(nodes.len() - 1)) % nodes.len();
                pause_for(nodes, other, rng.millis(300, 1500), &mut faults, ev)?;
            }
            proc::sleep(down_for.saturating_sub(started.elapsed()))?;
            restart(nodes, victim, ev)?;
        } else {
            pause_for(nodes, victim, rng.millis(500, 3000), &mut faults, ev)?;
        }
    }
    Ok(faults)
}

pub fn run(round: &mut Round) -> Result<Report> {
    let mut report = Report::default();
    let mut nodes = proc::form_cluster(&round.spawner, "w", "writes", MEMBERS, &|_| {})?;
    let refs: Vec<NodeRef> = nodes.iter().map(|n| n.r.clone()).collect();
    round.events.note("3-node cluster formed; writers start");
    let mut workers = Workers::new();
    for id in 0..WRITERS {
        let (refs, rng, ev) = (refs.clone(), round.rng.fork(), round.events.shared());
        workers.spawn(move |stop| writer(id, refs, rng, ev, stop));
    }
    let until = Instant::now() + round.profile.write_faults;
    let faults = inject(
        &mut nodes,
        &mut round.rng,
        &mut round.events,
        until,
        &mut report.violations,
    )?;
    let logs = workers.finish();
    round.events.note("faults stopped; healing");

    // Heal: everything running, three reachable voters and one leader as every member sees it.
    reap_crashed(&mut nodes, &mut report.violations, &mut round.events)?;
    for n in nodes.iter_mut() {
        n.ensure_up()?;
    }
    let healed = match proc::wait_healthy(&nodes, Duration::from_secs(60)) {
        Ok(d) => d,
        Err(e) => {
            report.violations.push(format!("the cluster did not heal: {e:#}"));
            Duration::ZERO
        }
    };

    round.events.note(format_args!(
        "healed in {:.1}s; checking every member",
        healed.as_secs_f64()
    ));
    let committed: BTreeSet<&String> = logs.iter().flat_map(|l| &l.committed).collect();
    let attempted: BTreeSet<&String> = logs.iter().flat_map(|l| &l.attempted).collect();
    let timed_out: u64 = logs.iter().map(|l| l.timed_out).sum();
    let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &logs {
        for (k, v) in &l.failed {
            *failed.entry(k).or_default() += v;
        }
    }
    let failed_total: u64 = failed.values().sum();

    let mut lists: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let names = match proc::list_names(n) {
            Ok(names) => names,
            Err(e) => {
                report
                    .violations
                    .push(format!("{}: cannot list resources: {e:#}", n.name));
                continue;
            }
        };
        let listed: BTreeSet<&String> = names.iter().collect();
        let missing: Vec<&&String> = committed.iter().filter(|c| !listed.contains(*c)).collect();
        if !missing.is_empty() {
            report.violations.push(format!(
                "{}: {} write(s) reported committed are missing, e.g. {:?}",
                n.name,
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        let phantom: Vec<&&String> = listed.iter().filter(|l| !attempted.contains(*l)).collect();
        if !phantom.is_empty() {
            report.violations.push(format!(
                "{}: lists {} name(s) nobody wrote, e.g. {:?}",
                n.name,
                phantom.len(),
                &phantom[..phantom.len().min(5)]
            ));
        }
        lists.push(names);
    }
    // Writes whose outcome was unknown (timed out, or failed after committing) may still be
    // applied a moment later: the members must agree once they settle.
    if lists.len() == nodes.len()
        && let Err(e) = proc::wait_for(
            "every member to list the same resources",
            Duration::from_secs(30),
            |last| {
                let lists: Vec<Vec<String>> = nodes.iter().filter_map(|n| proc::list_names(n).ok()).collect();
                let counts: Vec<usize> = lists.iter().map(Vec::len).collect();
                *last = format!("counts {counts:?}");
                (lists.len() == nodes.len() && lists.windows(2).all(|w| w[0] == w[1])).then_some(())
            },
        )
    {
        report.violations.push(format!("{e:#}"));
    }
    // A name written once but refused as "already exists" was committed by an attempt the
    // client never heard back from: not a lost write, but the client was told it failed.
    let refused: Vec<&String> = logs.iter().flat_map(|l| &l.refused_as_existing).collect();
    let refused_present = refused
        .iter()
        .filter(|n| lists.first().is_some_and(|l| l.contains(n)))
        .count();
    for (n, names) in nodes.iter().zip(&lists) {
        let gone: Vec<&&String> = refused.iter().filter(|r| !names.contains(r)).collect();
        if !gone.is_empty() {
            report.violations.push(format!(
                "{}: lists none of {gone:?}, which a register was refused for as already existing",
                n.name
            ));
        }
    }
    if !refused.is_empty() {
        round.events.note(format_args!(
            "reported failed as 'already exists' although written once (present afterwards: {refused_present}): {refused:?}"
        ));
    }
    report.violations.extend(proc::stop_all(&mut nodes));
    report.writes_checked = committed.len() as u64;
    let reasons: Vec<String> = {
        let mut v: Vec<(&&str, &u64)> = failed.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter().take(3).map(|(k, n)| format!("{n}x '{k}'")).collect()
    };
    report.line = format!(
        "3 nodes: {} committed, {failed_total} failed{}, {timed_out} without answer; {faults}; healed in {:.1}s{}; \
         checked on {} members{}",
        committed.len(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        healed.as_secs_f64(),
        if healed > SLOW_HEAL { " (slow)" } else { "" },
        lists.len(),
        if refused.is_empty() {
            String::new()
        } else {
            format!(
                "; note: {} write(s) reported as failed ('already exists') were committed ({refused_present} present)",
                refused.len()
            )
        }
    );
    Ok(report)
}
