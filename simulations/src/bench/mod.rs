//! `bench`: Raft write latency and throughput of real in-process clusters on loopback, each
//! figure as a ratio to a raw redb commit timed in the same run on the same disk, so the
//! figures say what Raft costs on top of the fsync rather than how fast this machine's disk is.
//! The other benchmarks follow the same rule, each against its own baseline in the same run:
//! the catalog at scale against raw redb ([`catalog`]), artifact sync against a plain iroh-blobs
//! fetch ([`sync`]), a repository's first sync against `git clone --mirror` ([`git`]), and a
//! new version's notification to many linked peers against one linked peer ([`fanout`]).

mod catalog;
mod cluster;
mod common;
mod fanout;
mod git;
mod measure;
mod pair;
mod report;
mod summary;
mod sync;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use catalog::CatalogPlan;
use cluster::LocalCluster;
use fanout::FanoutPlan;
use git::GitPlan;
use measure::{Budget, Measured, Names, Trials};
use pair::Pair;
use report::Report;
use summary::Summary;
use sync::SyncPlan;

/// One benchmark of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// Raft writes vs raw redb commits.
    Raft,
    /// A catalog of many resources vs raw redb.
    Catalog,
    /// Artifact sync between clusters vs a plain iroh-blobs fetch.
    Sync,
    /// A repository's first sync vs `git clone --mirror` over `git daemon`.
    Git,
    /// A new version at one cluster reaching many linked peers' views vs one linked peer.
    Fanout,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Raft,
        Section::Catalog,
        Section::Sync,
        Section::Git,
        Section::Fanout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Raft => "raft",
            Section::Catalog => "catalog",
            Section::Sync => "sync",
            Section::Git => "git",
            Section::Fanout => "fanout",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Fewer iterations: a smoke test that takes seconds, not a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Directory for the nodes' data dirs (default: the system temp dir). A fresh subdirectory
    /// is made there and removed at the end; use it to bench a particular disk.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Also print the results as one JSON document on stdout; the table then goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Run only these benchmarks (repeat the flag or separate with commas); all by default.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BENCH")]
    pub only: Vec<Section>,
    /// How many times each Raft series runs, the trials interleaved; each figure is the middle
    /// trial's (default 3, 1 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_TRIALS))]
    pub trials: Option<u16>,
}

/// The most trials `--trials` accepts: each is a full round of every Raft series.
const MAX_TRIALS: i64 = 15;

/// How much work each measurement does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: &'static str,
    pub raw_commits: usize,
    /// Rounds of every Raft series (the raw commits included), one after the other, so that the
    /// trials of each series see the same stretches of the machine's load; see
    /// [`measure::Trials`].
    pub trials: usize,
    /// Untimed operations before each timed series (connections, caches, file growth).
    pub warmup: usize,
    pub latency_writes: usize,
    pub writer_counts: Vec<usize>,
    pub budget: Budget,
    pub catalog: CatalogPlan,
    pub sync: SyncPlan,
    pub git: GitPlan,
    pub fanout: FanoutPlan,
}

impl Plan {
    pub fn full() -> Self {
        Plan {
            mode: "full",
            raw_commits: 2000,
            trials: 3,
            warmup: 100,
            latency_writes: 2000,
            writer_counts: vec![1, 64, 256],
            budget: Budget {
                time: Duration::from_secs(5),
                max_writes: None,
            },
            catalog: CatalogPlan::full(),
            sync: SyncPlan::full(),
            git: GitPlan::full(),
            fanout: FanoutPlan::full(),
        }
    }

    pub fn quick() -> Self {
        Plan {
            mode: "quick",
            raw_commits: 200,
            trials: 1,
            warmup: 10,
            latency_writes: 200,
            writer_counts: vec![1, 64, 256],
            budget: Budget {
                time: Duration::from_millis(500),
                max_writes: None,
            },
            catalog: CatalogPlan::quick(),
            sync: SyncPlan::quick(),
            git: GitPlan::quick(),
            fanout: FanoutPlan::quick(),
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(trials) = args.trials {
        plan.trials = usize::from(trials);
    }
    let mut sections = if args.only.is_empty() {
        Section::ALL.to_vec()
    } else {
        args.only.clone()
    };
    sections.sort_unstable();
    sections.dedup();
    let parent = args.dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("create {}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("causeway-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("make a scratch dir in {}", parent.display()))?;
    let summary = measure_all(&plan, scratch.path(), &sections).await;
    let path = scratch.path().to_path_buf();
    scratch.close().with_context(|| format!("remove {}", path.display()))?;
    if args.json {
        eprint!("\n{}", summary.table());
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("\n{}", summary.table());
    }
    if let Some(report) = summary.raft.as_ref().filter(|r| r.errors > 0) {
        bail!(
            "{} writes failed, first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    if let Some(first) = summary.failures.first() {
        bail!(
            "{} of the benchmarks failed, first {}: {}",
            summary.failures.len(),
            first.section.name(),
            first.error
        );
    }
    Ok(())
}

/// Runs the benchmarks in `sections` with the sizes of `plan` and scratch data under `root`. A
/// benchmark that fails is recorded and the others still run. Progress goes to stderr.
pub async fn measure_all(plan: &Plan, root: &Path, sections: &[Section]) -> Summary {
    let mut summary = Summary::new(plan.mode, root.display().to_string(), sections);
    // The catalog goes first: it samples the process's memory, which should not start out
    // holding what the other benchmarks allocated.
    if sections.contains(&Section::Catalog) {
        common::settle().await;
        let (p, r) = (plan.catalog.clone(), root.to_path_buf());
        let measured = tokio::task::spawn_blocking(move || catalog::measure(&p, &r))
            .await
            .map_err(|e| anyhow!("the catalog bench panicked: {e}"))
            .and_then(|r| r);
        match measured {
            Ok(r) => summary.catalog = Some(r),
            Err(e) => summary.fail(Section::Catalog, &e),
        }
    }
    if sections.contains(&Section::Raft) {
        common::settle().await;
        match measure_raft(plan, root).await {
            Ok(r) => summary.raft = Some(r),
            Err(e) => summary.fail(Section::Raft, &e),
        }
    }
    // Both move content between the same two linked clusters.
    let federated: Vec<Section> = sections
        .iter()
        .copied()
        .filter(|s| matches!(s, Section::Sync | Section::Git))
        .collect();
    if !federated.is_empty() {
        common::settle().await;
        eprintln!("sync, git: forming two single-node clusters and linking them");
        match Pair::start(root, "fed").await {
            Ok(pair) => {
                for section in federated {
                    common::settle().await;
                    let measured = match section {
                        Section::Sync => sync::measure(&plan.sync, root, &pair)
                            .await
                            .map(|r| summary.sync = Some(r)),
                        _ => git::measure(&plan.git, root, &pair)
                            .await
                            .map(|r| summary.git = Some(r)),
                    };
                    if let Err(e) = measured {
                        summary.fail(section, &e);
                    }
                }
                pair.shutdown().await;
            }
            Err(e) => {
                let e = e.context("forming the linked clusters");
                for section in federated {
                    summary.fail(section, &e);
                }
            }
        }
    }
    if sections.contains(&Section::Fanout) {
        common::settle().await;
        match fanout::measure(&plan.fanout, root).await {
            Ok(r) => summary.fanout = Some(r),
            Err(e) => summary.fail(Section::Fanout, &e),
        }
    }
    summary.finish()
}

/// Runs the raft measurements of `plan` with scratch data under `root`, in `plan.trials` rounds
/// of every series, and reports each series' middle trial. Progress goes to stderr.
pub async fn measure_raft(plan: &Plan, root: &Path) -> Result<Report> {
    let names = Arc::new(Names::default());
    let series: Vec<(usize, Series)> = [1, 3]
        .into_iter()
        .flat_map(|nodes| {
            std::iter::once(Series::OneClient)
                .chain(plan.writer_counts.iter().map(|&w| Series::Writers(w)))
                .map(move |s| (nodes, s))
        })
        .collect();
    let mut raw = Vec::with_capacity(plan.trials);
    let mut runs: Vec<Vec<Measured>> = series.iter().map(|_| Vec::with_capacity(plan.trials)).collect();
    for trial in 1..=plan.trials {
        eprintln!(
            "raw redb, trial {trial} of {}: {} single-row commits in {}",
            plan.trials,
            plan.raw_commits,
            root.display()
        );
        let raw_path = root.join(format!("raw-{trial}.redb"));
        let (warmup, n, path) = (plan.warmup, plan.raw_commits, raw_path.clone());
        raw.push(tokio::task::spawn_blocking(move || measure::raw_commits(&path, warmup, n)).await??);
        report_unremoved(&raw_path, std::fs::remove_file(&raw_path));
        for (&(nodes, s), trials) in series.iter().zip(&mut runs) {
            trials.push(on_fresh_cluster(plan, root, nodes, s, &names, trial).await?);
        }
    }
    let no_trials = || anyhow!("the plan has no trials");
    let raw = Trials::middle_by(raw, |s| s.p50_ms).ok_or_else(no_trials)?;
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for ((nodes, s), trials) in series.into_iter().zip(runs) {
        match s {
            Series::OneClient => latency.push((nodes, Trials::of_writes(trials, |s| s.p50_ms).ok_or_else(no_trials)?)),
            Series::Writers(w) => throughput.push((
                nodes,
                w,
                Trials::of_writes(trials, |s| s.per_sec).ok_or_else(no_trials)?,
            )),
        }
    }
    Ok(Report::new(
        plan.mode,
        plan.trials,
        root.display().to_string(),
        raw,
        latency,
        throughput,
    ))
}

/// One timed series of Raft writes.
#[derive(Clone, Copy, Debug)]
enum Series {
    /// `latency_writes` writes by one client.
    OneClient,
    /// This many concurrent writers for the plan's budget.
    Writers(usize),
}

/// Runs `series` on a cluster formed for it alone, so every series starts from an empty log and
/// catalog: otherwise later series would also pay for the entries and snapshots of earlier ones.
async fn on_fresh_cluster(
    plan: &Plan,
    root: &Path,
    nodes: usize,
    series: Series,
    names: &Arc<Names>,
    trial: usize,
) -> Result<Measured> {
    let label = match series {
        Series::OneClient => format!("bench-{nodes}n-1client-t{trial}"),
        Series::Writers(w) => format!("bench-{nodes}n-{w}w-t{trial}"),
    };
    eprintln!("{label}: forming a {nodes}-node cluster");
    let dir = root.join(&label);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cluster = LocalCluster::start(&dir, &label, nodes).await?;
    let result = async {
        // Writing on the leader keeps the client's hop out of the figures: a write sent to a
        // follower is forwarded, which is a different (and serialized) path.
        let leader = cluster.leader()?.cluster().clone();
        match series {
            Series::OneClient => {
                eprintln!("{label}: {} writes by 1 client", plan.latency_writes);
                Ok(measure::sequential(&leader, names, plan.warmup, plan.latency_writes).await)
            }
            Series::Writers(writers) => {
                let s = if writers == 1 { "" } else { "s" };
                eprintln!("{label}: {writers} concurrent writer{s} for {:?}", plan.budget.time);
                measure::concurrent(&leader, names, plan.warmup, writers, plan.budget).await
            }
        }
    }
    .await;
    cluster.shutdown().await;
    // Each trial's clusters would otherwise hold their data on disk until the whole run ends.
    report_unremoved(&dir, std::fs::remove_dir_all(&dir));
    result.with_context(|| format!("{label} on a {nodes}-node cluster"))
}

/// Reports a series' scratch data that could not be removed once measured: it only costs disk
/// space until the run's scratch dir goes, so the run goes on.
fn report_unremoved(path: &Path, removed: std::io::Result<()>) {
    if let Err(e) = removed {
        eprintln!("could not remove {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole bench end to end with tiny counts: it must run and produce numbers. The figures
    /// themselves are not checked; a CI machine's timings prove nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_bench_runs_and_reports_figures() {
        let plan = Plan {
            mode: "test",
            raw_commits: 20,
            // Two, so that every series runs twice and each figure is picked from its trials.
            trials: 2,
            warmup: 2,
            latency_writes: 20,
            writer_counts: vec![1, 64, 256],
            budget: Budget {
                time: Duration::from_secs(30),
                max_writes: Some(20),
            },
            ..Plan::quick()
        };
        let dir = tempfile::tempdir().unwrap();
        let report = measure_raft(&plan, dir.path()).await.unwrap();
        // Every series' clusters and raw database were removed once measured.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");

        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        assert_eq!((report.raw.count, report.trials), (20, 2));
        assert!(report.raw.p50_ms > 0.0 && report.raw.per_sec > 0.0);
        assert_eq!(report.raw_trials_p50_ms.len(), 2);
        assert!(report.raw_trials_p50_ms.contains(&report.raw.p50_ms));
        let nodes: Vec<usize> = report.latency.iter().map(|r| r.nodes).collect();
        assert_eq!(nodes, [1, 3]);
        for r in &report.latency {
            assert_eq!(r.stats.count, 20);
            assert!(r.stats.p50_ms.is_finite() && r.stats.p99_ms >= r.stats.p50_ms);
            assert!(r.goal.is_some());
            assert_eq!(r.trials_p50_ms.len(), 2);
            assert!(r.trials_p50_ms.contains(&r.stats.p50_ms), "{r:?}");
        }
        assert_eq!(report.throughput.len(), 6);
        for r in &report.throughput {
            // Every writer writes at least once even when the cap is lower than their number.
            assert!(r.stats.count >= r.writers.max(20), "{r:?}");
            assert!(r.stats.per_sec > 0.0 && r.vs_one_writer.is_some());
            assert_eq!(r.trials_per_sec.len(), 2);
            assert!(r.trials_per_sec.contains(&r.stats.per_sec), "{r:?}");
        }
        assert_eq!(report.goals_total, 4);

        let table = report.table();
        assert!(table.contains("raw redb commit") && table.contains("goal"), "{table}");
        assert!(table.contains("2 trials per series") && table.contains("–"), "{table}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["throughput"][5]["writers"], 256);
    }

    /// The sync and git benches end to end on one pair of linked clusters, with a small file and
    /// a small repository; figures are not checked, only that there are figures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_sync_and_git_benches_run_and_report_figures() {
        let plan = Plan {
            mode: "test",
            sync: SyncPlan {
                bytes: 1 << 20,
                rounds: 1,
                latency_rounds: 2,
            },
            git: GitPlan {
                bytes: 256 << 10,
                commits: 8,
                clone_rounds: 1,
                // Two, so that a round into a pair of its own runs too.
                sync_rounds: 2,
            },
            ..Plan::quick()
        };
        let dir = tempfile::tempdir().unwrap();
        let summary = measure_all(&plan, dir.path(), &[Section::Sync, Section::Git]).await;

        assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        assert!(summary.raft.is_none() && summary.catalog.is_none());
        let sync = summary.sync.as_ref().unwrap();
        assert!(sync.raw_mib_per_sec > 0.0 && sync.sync_mib_per_sec > 0.0, "{sync:?}");
        assert_eq!((sync.latency.stats.count, sync.latency.rounds_ms.len()), (2, 2));
        let git = summary.git.as_ref().unwrap();
        match (&git.figures, &git.skipped) {
            (Some(f), None) => {
                assert!(f.repo_bytes >= 256 << 10 && f.clone.count == 1, "{f:?}");
                assert!(f.pull_secs > 0.0 && f.publish_secs > 0.0 && f.pull_vs_clone.is_finite());
                // Both first syncs ran, the second into a pair of its own.
                assert_eq!(f.pulls.count, 2, "{f:?}");
            }
            (None, Some(reason)) => println!("git bench skipped: {reason}"),
            other => panic!("git report is inconsistent: {other:?}"),
        }
        let expected_goals = 2 + usize::from(git.figures.is_some());
        assert_eq!(summary.goals_total, expected_goals);

        let table = summary.table();
        assert!(
            table.contains("causeway sync_pull") && table.contains("goals met"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["sections"], serde_json::json!(["sync", "git"]));
        assert!(json["raft"].is_null() && json["sync"]["latency"]["p50_ms"].is_number());
    }
}
