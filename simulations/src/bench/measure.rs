//! The measurements: single-row commits on a raw redb file, and Raft writes through a node,
//! either one client at a time or many concurrent writers. Each yields latency percentiles and
//! a rate; a series repeated in several trials is summed up by its middle trial.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use causeway_catalog::{Command, CommandResult};
use causeway_raft::ClusterNode;
use redb::{Database, TableDefinition};
use serde::Serialize;
use tokio::sync::Barrier;

/// Value size of one raw commit: about what a small `RegisterResource` entry weighs.
const RAW_VALUE_LEN: usize = 100;
/// A sequential run gives up after this many failed writes instead of waiting out every
/// remaining write's routing deadline.
const MAX_ERRORS: usize = 10;

/// Latency percentiles and rate of one series of operations.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Operations that succeeded (the latency samples).
    pub count: usize,
    /// Wall time of the whole series.
    pub secs: f64,
    /// Successful operations per second of wall time.
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    pub(crate) fn new(mut samples: Vec<Duration>, elapsed: Duration) -> Self {
        samples.sort_unstable();
        let secs = elapsed.as_secs_f64();
        Stats {
            count: samples.len(),
            secs,
            per_sec: if secs > 0.0 { samples.len() as f64 / secs } else { 0.0 },
            p50_ms: percentile_ms(&samples, 50.0),
            p99_ms: percentile_ms(&samples, 99.0),
        }
    }
}

/// Nearest-rank percentile of sorted samples; NaN when there are none.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// A series of Raft writes and how many of them failed.
#[derive(Clone, Debug)]
pub struct Measured {
    pub stats: Stats,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// A series measured in several trials: the middle one by the figure its goal reads, and that
/// figure of every trial in the order they ran. The middle trial, not a mean, because one trial
/// that a busy moment of the machine slowed should not move the result.
#[derive(Clone, Debug)]
pub struct Trials<T> {
    pub middle: T,
    pub figures: Vec<f64>,
}

impl<T> Trials<T> {
    /// The middle of `trials` by `figure` (the lower middle of an even count); `None` when there
    /// are no trials.
    pub fn middle_by(trials: Vec<T>, figure: impl Fn(&T) -> f64) -> Option<Self> {
        let figures: Vec<f64> = trials.iter().map(&figure).collect();
        let mut order: Vec<usize> = (0..trials.len()).collect();
        order.sort_by(|&a, &b| figures[a].total_cmp(&figures[b]));
        let pick = *order.get(order.len().checked_sub(1)? / 2)?;
        let middle = trials.into_iter().nth(pick)?;
        Some(Trials { middle, figures })
    }
}

impl Trials<Measured> {
    /// As [`Trials::middle_by`], with the failed writes of every trial counted in the middle
    /// one: a failure in any trial makes the series suspect.
    pub fn of_writes(trials: Vec<Measured>, figure: impl Fn(&Stats) -> f64) -> Option<Self> {
        let errors = trials.iter().map(|m| m.errors).sum();
        let first_error = trials.iter().find_map(|m| m.first_error.clone());
        let mut t = Self::middle_by(trials, |m| figure(&m.stats))?;
        t.middle.errors = errors;
        t.middle.first_error = first_error;
        Some(t)
    }
}

/// Hands out resource names that are unique for the whole run, so no write is rejected as a
/// duplicate.
#[derive(Default)]
pub struct Names(AtomicU64);

impl Names {
    fn next(&self) -> String {
        format!("bench-{}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Times `n` single-row commits (default durability: one fsync each) after `warmup` untimed
/// ones, on a new database at `path`. Blocking.
pub fn raw_commits(path: &Path, warmup: usize, n: usize) -> Result<Stats> {
    let table = TableDefinition::<u64, &[u8]>::new("t");
    let db = Database::create(path)?;
    let value = [0xa5u8; RAW_VALUE_LEN];
    let commit = |key: u64| -> Result<()> {
        let txn = db.begin_write()?;
        txn.open_table(table)?.insert(key, value.as_slice())?;
        txn.commit()?;
        Ok(())
    };
    for i in 0..warmup {
        commit(i as u64)?;
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in warmup..warmup + n {
        let t = Instant::now();
        commit(i as u64)?;
        samples.push(t.elapsed());
    }
    Ok(Stats::new(samples, start.elapsed()))
}

async fn write_one(cluster: &ClusterNode, names: &Names) -> Result<(), String> {
    let cmd = Command::RegisterResource {
        name: names.next(),
        kind: "artifact".into(),
        owner: "bench".into(),
        path: None,
        metadata: Default::default(),
        registered_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    match cluster.write(cmd).await {
        Ok(CommandResult::ResourceRegistered(_)) => Ok(()),
        Ok(other) => Err(format!("unexpected result {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// What one writer (or the single client) observed.
#[derive(Default)]
struct Tally {
    samples: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Tally {
    async fn write(&mut self, cluster: &ClusterNode, names: &Names) {
        let t = Instant::now();
        match write_one(cluster, names).await {
            Ok(()) => self.samples.push(t.elapsed()),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// One client writing `n` times in sequence (after `warmup` untimed writes) through `cluster`.
pub async fn sequential(cluster: &ClusterNode, names: &Names, warmup: usize, n: usize) -> Measured {
    let mut tally = Tally::default();
    for _ in 0..warmup {
        tally.write(cluster, names).await;
    }
    // Warm-up writes are not timed, but their failures still count.
    tally.samples.clear();
    let start = Instant::now();
    for _ in 0..n {
        if tally.errors >= MAX_ERRORS {
            break;
        }
        tally.write(cluster, names).await;
    }
    Measured {
        stats: Stats::new(tally.samples, start.elapsed()),
        errors: tally.errors,
        first_error: tally.first_error,
    }
}

/// When a concurrent run ends: after `time`, or once `max_writes` writes were started, whichever
/// comes first. Every writer makes at least one write either way.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub time: Duration,
    pub max_writes: Option<usize>,
}

/// `writers` concurrent clients, each writing in sequence through `cluster` until the budget is
/// spent, after `warmup` untimed writes by one client. The rate is all successful writes over
/// the time until the last writer finished.
pub async fn concurrent(
    cluster: &ClusterNode,
    names: &Arc<Names>,
    warmup: usize,
    writers: usize,
    budget: Budget,
) -> Result<Measured> {
    let mut all = Tally::default();
    for _ in 0..warmup {
        all.write(cluster, names).await;
    }
    all.samples.clear();
    let started = Arc::new(AtomicUsize::new(0));
    let max_writes = budget.max_writes.unwrap_or(usize::MAX);
    // All writers begin together, so spawning 256 tasks is not part of the measured time.
    let gate = Arc::new(Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (cluster, names, started, gate) = (cluster.clone(), names.clone(), started.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let deadline = Instant::now() + budget.time;
            let mut tally = Tally::default();
            loop {
                let nth = started.fetch_add(1, Ordering::Relaxed);
                let first = tally.samples.is_empty() && tally.errors == 0;
                if !first && (nth >= max_writes || Instant::now() >= deadline || tally.errors >= MAX_ERRORS) {
                    break;
                }
                tally.write(&cluster, &names).await;
            }
            tally
        }));
    }
    gate.wait().await;
    let start = Instant::now();
    for task in tasks {
        let t = task.await?;
        all.samples.extend(t.samples);
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    Ok(Measured {
        stats: Stats::new(all.samples, start.elapsed()),
        errors: all.errors,
        first_error: all.first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile_ms(&samples, 50.0), 50.0);
        assert_eq!(percentile_ms(&samples, 99.0), 99.0);
        assert_eq!(percentile_ms(&[ms(7)], 99.0), 7.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn the_middle_trial_is_picked_by_its_figure_and_every_failure_counts() {
        let t = Trials::middle_by(vec![5.0, 1.0, 9.0], |v| *v).unwrap();
        assert_eq!((t.middle, t.figures), (5.0, vec![5.0, 1.0, 9.0]));
        // An even count takes the lower middle.
        assert_eq!(Trials::middle_by(vec![4.0, 2.0], |v| *v).unwrap().middle, 2.0);
        assert!(Trials::middle_by(Vec::<f64>::new(), |v| *v).is_none());

        let run = |rate: f64, errors: usize, first: Option<&str>| Measured {
            stats: Stats {
                count: 10,
                secs: 1.0,
                per_sec: rate,
                p50_ms: 1.0,
                p99_ms: 2.0,
            },
            errors,
            first_error: first.map(str::to_string),
        };
        let t = Trials::of_writes(
            vec![
                run(300.0, 0, None),
                run(100.0, 2, Some("timeout")),
                run(200.0, 1, Some("gone")),
            ],
            |s| s.per_sec,
        )
        .unwrap();
        assert_eq!(t.middle.stats.per_sec, 200.0);
        assert_eq!(t.middle.errors, 3);
        assert_eq!(t.middle.first_error.as_deref(), Some("timeout"));
        assert_eq!(t.figures, [300.0, 100.0, 200.0]);
    }
}
