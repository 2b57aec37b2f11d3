//! `sim`: a seeded, deterministic simulation of the federation's sans-IO cores (link health,
//! share policy, the catalog change rule, transfer status) inside a model of the nodes around
//! them, with simulated time and a faulty network, checking invariants after every step.
//!
//! Layout:
//! * `world`: clusters, members, replicated state, leadership and quorum.
//! * `net`, `msg`: the event queue, message delay/loss/duplication/partitions, the messages.
//! * `link`, `catalog`, `content`: the node's behaviour, driving the real cores.
//! * `workload`: the random admin actions and faults.
//! * `invariants`: what must hold, and the oracles that judge it.
//! * `engine`: one run from a seed; `rng`: the run's one PRNG; `config`: the knobs.
//!
//! A seed names a run completely: `sim --seed S -v` replays it and prints its trace.

mod catalog;
mod config;
mod content;
mod engine;
mod invariants;
mod link;
mod msg;
mod net;
mod rng;
mod workload;
mod world;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Instant};

pub use config::{Quirk, SimConfig};
pub use engine::Outcome;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Number of seeds to run: FIRST_SEED, FIRST_SEED + 1, ...
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Replay this one seed (with -v, print its whole event trace).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// Events per run while the workload and faults go on; then the network heals and the run
    /// settles.
    #[arg(long, default_value_t = SimConfig::default().steps)]
    pub steps: u64,
    /// Clusters per run (each gets 1-3 members).
    #[arg(long, default_value_t = SimConfig::default().clusters, value_parser = clap::value_parser!(u8).range(2..=32))]
    pub clusters: u8,
    /// Model the node as it was before the fix of a finding of this simulator, which replays
    /// the finding (repeatable): `local-reads`, `fresh-rows`, `stale-offers`, `version-restart` (see
    /// `sim/config.rs`).
    #[arg(long = "node-today", value_enum, value_name = "QUIRK")]
    pub quirks: Vec<Quirk>,
    /// Print one line per seed; with --seed, the whole trace.
    #[arg(short, long)]
    pub verbose: bool,
}

impl SimArgs {
    fn config(&self) -> SimConfig {
        SimConfig {
            clusters: self.clusters,
            steps: self.steps,
            quirks: self.quirks.clone(),
            ..SimConfig::default()
        }
    }

    /// The command that replays `seed` with these settings.
    fn replay_command(&self, seed: u64) -> String {
        let defaults = SimConfig::default();
        let mut cmd = format!("cargo run -p causeway-simulations --release -- sim --seed {seed} -v");
        if self.steps != defaults.steps {
            cmd += &format!(" --steps {}", self.steps);
        }
        if self.clusters != defaults.clusters {
            cmd += &format!(" --clusters {}", self.clusters);
        }
        for q in &self.quirks {
            if let Some(v) = clap::ValueEnum::to_possible_value(q) {
                cmd += &format!(" --node-today {}", v.get_name());
            }
        }
        cmd
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, cfg: SimConfig, print_trace: bool) -> Outcome {
    engine::Engine::new(seed, cfg, print_trace).run()
}

/// `causeway-simulations sim`: runs the seeds, prints a summary and, for every seed that broke
/// an invariant, what broke and how to replay it; fails if any did.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let cfg = args.config();
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let started = Instant::now();
    let (mut steps, mut violations) = (0u64, 0usize);
    let mut failed = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for &seed in &seeds {
        let out = run_seed(seed, cfg.clone(), args.verbose && args.seed.is_some());
        steps += out.steps;
        for (k, v) in &out.counts {
            *counts.entry(k).or_default() += v;
        }
        if args.verbose {
            println!(
                "seed {}: {} steps, {} ms simulated, trace {:016x}, {} violations",
                out.seed,
                out.steps,
                out.end_ms,
                out.digest,
                out.violations.len()
            );
        }
        if !out.violations.is_empty() {
            violations += out.violations.len();
            for v in out.violations.iter().take(3) {
                eprintln!("seed {seed}: {v}");
            }
            eprintln!("replay: {}", args.replay_command(seed));
            failed.push(seed);
        }
    }
    if args.verbose {
        for (what, n) in &counts {
            println!("  {n:>9}  {what}");
        }
    }
    println!(
        "sim: {} seeds, {steps} steps, {violations} violations ({:.1} s)",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    match failed.first() {
        None => Ok(()),
        Some(first) => anyhow::bail!(
            "{} of {} seeds violated an invariant; replay: {}",
            failed.len(),
            seeds.len(),
            args.replay_command(*first)
        ),
    }
}
