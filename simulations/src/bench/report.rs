//! The bench's results: every figure next to the raw commit it is compared with, the performance
//! goals checked against them, and their two renderings (a plain-text table and JSON). Each figure
//! is its series' middle trial; the table shows the spread of the trials beside it.

use serde::Serialize;

use super::common::{Align, Table};
use super::measure::{Measured, Stats, Trials};

/// 1-node p50 may exceed the raw commit p50 by this much.
const ONE_NODE_SLACK_MS: f64 = 0.3;
/// 3-node p50 may be this many raw commits plus [`THREE_NODE_SLACK_MS`].
const THREE_NODE_COMMITS: f64 = 2.0;
const THREE_NODE_SLACK_MS: f64 = 0.5;
/// The most concurrent writers must reach this multiple of the 1-writer throughput.
const GROUP_COMMIT_WRITERS: usize = 256;
const GROUP_COMMIT_FACTOR: f64 = 50.0;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub dir: String,
    pub cpus: usize,
    /// Rounds of every series; each figure below is the middle trial's.
    pub trials: usize,
    /// Single-row redb commits with the default (immediate) durability.
    pub raw: Stats,
    /// The raw commit's p50 in every trial, in the order they ran.
    pub raw_trials_p50_ms: Vec<f64>,
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    pub goals_met: usize,
    pub goals_total: usize,
    /// Writes that failed anywhere in the run; any makes the figures suspect.
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Writes by one client, one at a time.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub nodes: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub errors: usize,
    /// p50 in every trial, in the order they ran.
    pub trials_p50_ms: Vec<f64>,
    pub p50_vs_raw: f64,
    pub p99_vs_raw: f64,
    pub goal: Option<Goal>,
}

/// Writes by many concurrent clients.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    pub nodes: usize,
    pub writers: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub errors: usize,
    /// Writes per second in every trial, in the order they ran.
    pub trials_per_sec: Vec<f64>,
    /// Writes per second over raw commits per second.
    pub vs_raw: f64,
    /// Writes per second over the same cluster's 1-writer writes per second.
    pub vs_one_writer: Option<f64>,
    pub goal: Option<Goal>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub rule: String,
    /// The bound the rule works out to in this run.
    pub limit: f64,
    pub unit: &'static str,
    pub met: bool,
}

impl Report {
    /// Works out ratios and goals from the middle trials.
    pub fn new(
        mode: &str,
        trials: usize,
        dir: String,
        raw: Trials<Stats>,
        latency: Vec<(usize, Trials<Measured>)>,
        throughput: Vec<(usize, usize, Trials<Measured>)>,
    ) -> Self {
        let Trials {
            middle: raw,
            figures: raw_trials_p50_ms,
        } = raw;
        let mut errors = 0;
        let mut first_error = None;
        let mut note = |m: &Measured| {
            errors += m.errors;
            if first_error.is_none() {
                first_error = m.first_error.clone();
            }
        };
        let latency: Vec<LatencyRow> = latency
            .into_iter()
            .map(|(nodes, Trials { middle: m, figures })| {
                note(&m);
                let goal = match nodes {
                    1 => Some((
                        format!("p50 ≤ raw + {ONE_NODE_SLACK_MS} ms"),
                        raw.p50_ms + ONE_NODE_SLACK_MS,
                    )),
                    3 => Some((
                        format!("p50 ≤ {THREE_NODE_COMMITS} × raw + {THREE_NODE_SLACK_MS} ms"),
                        THREE_NODE_COMMITS * raw.p50_ms + THREE_NODE_SLACK_MS,
                    )),
                    _ => None,
                }
                .map(|(rule, limit)| Goal {
                    rule,
                    limit,
                    unit: "ms",
                    met: m.stats.p50_ms <= limit,
                });
                LatencyRow {
                    nodes,
                    p50_vs_raw: m.stats.p50_ms / raw.p50_ms,
                    p99_vs_raw: m.stats.p99_ms / raw.p99_ms,
                    stats: m.stats,
                    errors: m.errors,
                    trials_p50_ms: figures,
                    goal,
                }
            })
            .collect();
        let one_writer = |nodes: usize| {
            throughput
                .iter()
                .find(|(n, w, _)| *n == nodes && *w == 1)
                .map(|(_, _, t)| t.middle.stats.per_sec)
        };
        let throughput: Vec<ThroughputRow> = throughput
            .iter()
            .map(|(nodes, writers, Trials { middle: m, figures })| {
                note(m);
                let base = one_writer(*nodes);
                let goal = base.filter(|_| *writers == GROUP_COMMIT_WRITERS).map(|base| {
                    let limit = GROUP_COMMIT_FACTOR * base;
                    Goal {
                        rule: format!("≥ {GROUP_COMMIT_FACTOR} × 1 writer"),
                        limit,
                        unit: "writes/s",
                        met: m.stats.per_sec >= limit,
                    }
                });
                ThroughputRow {
                    nodes: *nodes,
                    writers: *writers,
                    stats: m.stats.clone(),
                    errors: m.errors,
                    trials_per_sec: figures.clone(),
                    vs_raw: m.stats.per_sec / raw.per_sec,
                    vs_one_writer: base.map(|b| m.stats.per_sec / b),
                    goal,
                }
            })
            .collect();
        let goals = latency
            .iter()
            .filter_map(|r| r.goal.as_ref())
            .chain(throughput.iter().filter_map(|r| r.goal.as_ref()));
        let (goals_met, goals_total) = goals.fold((0, 0), |(met, total), g| (met + usize::from(g.met), total + 1));
        Report {
            mode: mode.to_string(),
            dir,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            trials,
            raw,
            raw_trials_p50_ms,
            latency,
            throughput,
            goals_met,
            goals_total,
            errors,
            first_error,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("causeway bench — raft writes vs raw redb commit (same disk, same run)\n");
        let trials = match self.trials {
            1 => "1 trial".to_string(),
            n => format!("{n} trials per series, the middle one shown"),
        };
        out.push_str(&format!(
            "{} run, {} cpus, {trials}, data in {}\n\n",
            self.mode, self.cpus, self.dir
        ));

        let mut lat = Table::new(&[
            ("latency, 1 client", Align::Left),
            ("writes", Align::Right),
            ("p50", Align::Right),
            ("p99", Align::Right),
            ("writes/s", Align::Right),
            ("p50 vs raw", Align::Right),
            ("p99 vs raw", Align::Right),
            ("p50 of trials", Align::Right),
            ("goal", Align::Left),
        ]);
        lat.row(vec![
            "raw redb commit".into(),
            self.raw.count.to_string(),
            ms(self.raw.p50_ms),
            ms(self.raw.p99_ms),
            rate(self.raw.per_sec),
            "1.00×".into(),
            "1.00×".into(),
            spread(&self.raw_trials_p50_ms, ms),
            "baseline".into(),
        ]);
        for r in &self.latency {
            lat.row(vec![
                format!("{}-node raft write", r.nodes),
                with_errors(r.stats.count, r.errors),
                ms(r.stats.p50_ms),
                ms(r.stats.p99_ms),
                rate(r.stats.per_sec),
                times(r.p50_vs_raw),
                times(r.p99_vs_raw),
                spread(&r.trials_p50_ms, ms),
                goal(r.goal.as_ref()),
            ]);
        }
        out.push_str(&lat.render());
        out.push('\n');

        let mut tput = Table::new(&[
            ("throughput", Align::Left),
            ("writers", Align::Right),
            ("writes", Align::Right),
            ("writes/s", Align::Right),
            ("vs raw commits/s", Align::Right),
            ("vs 1 writer", Align::Right),
            ("p50", Align::Right),
            ("p99", Align::Right),
            ("writes/s of trials", Align::Right),
            ("goal", Align::Left),
        ]);
        for r in &self.throughput {
            tput.row(vec![
                format!("{}-node raft", r.nodes),
                r.writers.to_string(),
                with_errors(r.stats.count, r.errors),
                rate(r.stats.per_sec),
                times(r.vs_raw),
                r.vs_one_writer.map_or_else(|| "-".into(), times),
                ms(r.stats.p50_ms),
                ms(r.stats.p99_ms),
                spread(&r.trials_per_sec, rate),
                goal(r.goal.as_ref()),
            ]);
        }
        out.push_str(&tput.render());
        out.push('\n');
        out.push_str(&format!("goals met: {} of {}", self.goals_met, self.goals_total));
        if self.errors > 0 {
            out.push_str(&format!(
                "; {} writes FAILED, first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out.push('\n');
        out
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn rate(v: f64) -> String {
    format!("{v:.0}")
}

fn times(v: f64) -> String {
    if v.is_finite() { format!("{v:.2}×") } else { "-".into() }
}

/// The lowest and highest of a series' trials, or `-` for a single trial.
fn spread(figures: &[f64], show: fn(f64) -> String) -> String {
    let lowest = figures.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = figures.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if figures.len() < 2 {
        "-".into()
    } else {
        format!("{}–{}", show(lowest), show(highest))
    }
}

fn with_errors(count: usize, errors: usize) -> String {
    if errors == 0 {
        count.to_string()
    } else {
        format!("{count} ({errors} failed)")
    }
}

fn goal(g: Option<&Goal>) -> String {
    let Some(g) = g else { return String::new() };
    let limit = match g.unit {
        "ms" => ms(g.limit),
        unit => format!("{} {unit}", rate(g.limit)),
    };
    let verdict = if g.met { "✓ met" } else { "✗ missed" };
    format!("{} = {limit}: {verdict}", g.rule)
}
