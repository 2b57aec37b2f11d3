//! `chaos`: real `causeway` processes (several clusters of 1-3 nodes on loopback, each node
//! with its own data dir) under real faults: `kill -9` of a node during writes and transfers,
//! SIGSTOP/SIGCONT pauses, restarts and, as root, network partitions between clusters in
//! network namespaces. Afterwards it checks that every write the CLI reported as committed is
//! on every member, that every mirror converges to its origin byte for byte, and that nothing
//! shared with nobody ever left its cluster.
//!
//! `--short` is the CI version (one round, brief fault windows); `--rounds N` is a soak. Each
//! scenario prints one line per round, and the run ends with a summary; any violation makes it
//! exit non-zero with the seed and the data dir, which is then kept for inspection.

mod federation;
mod partition;
mod proc;
mod rng;
mod writes;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use proc::Spawner;
use rng::Rng;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The short version for CI: one round of every scenario with brief fault windows.
    #[arg(long)]
    pub short: bool,
    /// Rounds to run (a soak); each round runs every scenario with its own seed [default: 3,
    /// or 1 with --short].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seed of the run (decimal or 0x-hex); printed so a failing run can be replayed.
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Run only round N of the seed's rounds (to replay the round a violation names).
    #[arg(long, value_name = "N", conflicts_with = "rounds")]
    pub round: Option<u32>,
    /// The `causeway` binary [default: next to this program, built with cargo if missing].
    #[arg(long, env = "CAUSEWAY_BIN", value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Keep the data dirs and daemon logs (they are always kept after a violation).
    #[arg(long)]
    pub keep: bool,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Where to create the run's folder [default: the temp dir].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Writes to a 3-node cluster while nodes are killed, paused and restarted.
    Writes,
    /// Two linked clusters syncing an artifact while origin and peer nodes crash.
    Transfers,
    /// A linked cluster never shared with, and a private resource: nothing reaches it.
    Leaks,
    /// Two clusters in network namespaces: degraded link, cut, restore (root only).
    Partition,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid seed {s:?}: expected a number (decimal or 0x-hex)"))
}

/// How long faults are injected and how big things are, for one mode.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// How long faults are injected while writes run.
    pub write_faults: Duration,
    /// How long faults are injected while versions are published and synced.
    pub transfer_faults: Duration,
    /// Size range of the shared artifact's versions.
    pub artifact_bytes: (u64, u64),
    /// Largest origin and peer clusters.
    pub max_origin: u64,
    pub max_peer: u64,
}

impl Profile {
    fn new(short: bool) -> Self {
        if short {
            Self {
                write_faults: Duration::from_secs(12),
                transfer_faults: Duration::from_secs(14),
                artifact_bytes: (3 << 20, 6 << 20),
                max_origin: 2,
                max_peer: 2,
            }
        } else {
            Self {
                write_faults: Duration::from_secs(40),
                transfer_faults: Duration::from_secs(40),
                artifact_bytes: (4 << 20, 24 << 20),
                max_origin: 3,
                max_peer: 3,
            }
        }
    }
}

/// What one scenario round found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line of details (sizes, faults, timings).
    pub line: String,
    pub writes_checked: u64,
    pub mirrors_converged: u64,
    pub violations: Vec<String>,
    pub skipped: bool,
}

/// Everything a scenario round needs: where to put nodes, the binary, its seeded choices.
pub struct Round {
    pub spawner: Spawner,
    pub rng: Rng,
    pub profile: Profile,
    pub events: Events,
}

/// What a round did (faults, slow operations), with UTC times to read next to the daemons'
/// logs, in `events.log` in the round's folder (and on stderr with `CHAOS_VERBOSE=1`).
pub struct Events {
    shared: SharedEvents,
}

/// A handle on the events log for worker threads.
#[derive(Clone)]
pub struct SharedEvents {
    file: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    start: Instant,
}

impl Events {
    fn new(path: PathBuf) -> Self {
        Self {
            shared: SharedEvents {
                file: Arc::new(std::sync::Mutex::new(std::fs::File::create(path).ok())),
                start: Instant::now(),
            },
        }
    }

    pub fn note(&mut self, what: impl std::fmt::Display) {
        self.shared.note(what);
    }

    pub fn shared(&self) -> SharedEvents {
        self.shared.clone()
    }
}

impl SharedEvents {
    pub fn note(&self, what: impl std::fmt::Display) {
        use std::io::Write as _;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
        let line = format!(
            "{:02}:{:02}:{:02}.{ms:03}Z +{:7.3}s {what}\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            self.start.elapsed().as_secs_f64()
        );
        if std::env::var_os("CHAOS_VERBOSE").is_some() {
            eprint!("chaos: {line}");
        }
        if let Ok(mut guard) = self.file.lock()
            && let Some(f) = guard.as_mut()
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

impl Round {
    fn new(bin: &Arc<PathBuf>, dir: PathBuf, seed: u64, profile: Profile) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self {
            events: Events::new(dir.join("events.log")),
            spawner: Spawner {
                bin: bin.clone(),
                root: dir,
            },
            rng: Rng::new(seed),
            profile,
        })
    }
}

#[derive(Default)]
struct Totals {
    rounds: u32,
    writes: u64,
    mirrors: u64,
    violations: Vec<String>,
}

pub async fn run(args: ChaosArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("chaos runner thread")?
}

fn run_blocking(args: ChaosArgs) -> Result<()> {
    proc::install_signal_handlers();
    let bin = Arc::new(proc::find_bin(args.bin.clone())?);
    let seed = args.seed.unwrap_or_else(clock_seed);
    let rounds = args.rounds.unwrap_or(if args.short { 1 } else { 3 }).max(1);
    let round_numbers = match args.round {
        Some(n) => n.max(1)..=n.max(1),
        None => 1..=rounds,
    };
    let rounds = *round_numbers.end();
    let profile = Profile::new(args.short);
    let scenarios: Vec<Scenario> = if args.only.is_empty() {
        vec![
            Scenario::Writes,
            Scenario::Transfers,
            Scenario::Leaks,
            Scenario::Partition,
        ]
    } else {
        args.only.clone()
    };
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let root = tempfile::Builder::new()
        .prefix("causeway-chaos-")
        .tempdir_in(&base)
        .context("create the run's folder")?;
    println!(
        "chaos: seed {seed:#x}, {rounds} round(s){}, binary {}, data in {}",
        if args.short { " (short)" } else { "" },
        bin.display(),
        root.path().display()
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    for r in round_numbers {
        if proc::check_interrupted().is_err() {
            totals.violations.push("interrupted".into());
            break;
        }
        let round_seed = Rng::new(seed ^ u64::from(r).wrapping_mul(0xA24B_AED4_963E_E407)).next_u64();
        let round_dir = root.path().join(format!("r{r}"));
        let replay = format!(
            "causeway-simulations chaos{} --seed {seed:#x} --round {r}",
            if args.short { " --short" } else { "" }
        );
        run_round(
            &bin,
            round_dir,
            (r, rounds),
            round_seed,
            profile,
            &scenarios,
            &replay,
            &mut totals,
        );
        totals.rounds += 1;
    }
    let v = totals.violations.len();
    println!(
        "chaos: {} rounds, {} writes checked, {} mirrors converged, {v} violations ({:.0}s)",
        totals.rounds,
        totals.writes,
        totals.mirrors,
        started.elapsed().as_secs_f64()
    );
    if v > 0 || args.keep {
        let kept = root.keep();
        if v > 0 {
            for line in &totals.violations {
                println!("chaos: VIOLATION {line}");
            }
            println!(
                "chaos: seed {seed:#x}; data dirs and daemon logs kept in {}",
                kept.display()
            );
            bail!("{v} violation(s) (seed {seed:#x}, data in {})", kept.display());
        }
        println!("chaos: data dirs and daemon logs kept in {}", kept.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    bin: &Arc<PathBuf>,
    dir: PathBuf,
    (r, rounds): (u32, u32),
    seed: u64,
    profile: Profile,
    scenarios: &[Scenario],
    replay: &str,
    totals: &mut Totals,
) {
    let has = |s: Scenario| scenarios.contains(&s);
    let mut jobs = Vec::new();
    if has(Scenario::Writes) {
        jobs.push(Job::Writes);
    }
    if has(Scenario::Transfers) || has(Scenario::Leaks) {
        jobs.push(Job::Federation {
            transfers: has(Scenario::Transfers),
            leaks: has(Scenario::Leaks),
        });
    }
    if has(Scenario::Partition) {
        jobs.push(Job::Partition);
    }
    for job in jobs {
        let dir_name = job.dir_name();
        // Each setup's seed depends only on the round's seed and which setup it is, so a replay
        // with --only makes the same choices.
        let job_seed = Rng::new(seed ^ job.salt()).next_u64();
        let started = Instant::now();
        let result = Round::new(bin, dir.join(dir_name), job_seed, profile).and_then(|mut round| job.run(&mut round));
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(reports) => {
                for (name, rep) in reports {
                    let verdict = if rep.skipped {
                        "skipped"
                    } else if rep.violations.is_empty() {
                        "ok"
                    } else {
                        "VIOLATED"
                    };
                    println!(
                        "chaos: round {r}/{rounds} {name:<9} {verdict:<8} {} [{secs:.1}s]",
                        rep.line
                    );
                    totals.writes += rep.writes_checked;
                    totals.mirrors += rep.mirrors_converged;
                    for v in rep.violations {
                        println!("chaos:   violation: {v}");
                        totals
                            .violations
                            .push(format!("round {r} {name}: {v}\n  replay: {replay} --only {name}"));
                    }
                }
            }
            Err(e) => {
                println!("chaos: round {r}/{rounds} {dir_name:<9} FAILED   {e:#} [{secs:.1}s]");
                totals
                    .violations
                    .push(format!("round {r} {dir_name}: {e:#}\n  replay: {replay}"));
            }
        }
    }
}

/// One setup of processes in a round: the transfers and leaks scenarios share theirs.
enum Job {
    Writes,
    Federation { transfers: bool, leaks: bool },
    Partition,
}

impl Job {
    fn dir_name(&self) -> &'static str {
        match self {
            Job::Writes => "writes",
            Job::Federation { .. } => "federation",
            Job::Partition => "partition",
        }
    }

    fn salt(&self) -> u64 {
        match self {
            Job::Writes => 0x5772_6974_6573,
            Job::Federation { .. } => 0x4665_6465_7261,
            Job::Partition => 0x5061_7274_6974,
        }
    }

    fn run(self, round: &mut Round) -> Result<Vec<(String, Report)>> {
        Ok(match self {
            Job::Writes => vec![("writes".into(), writes::run(round)?)],
            Job::Federation { transfers, leaks } => federation::run(round, transfers, leaks)?,
            Job::Partition => vec![("partition".into(), partition::run(round)?)],
        })
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(nanos ^ u64::from(std::process::id())).next_u64()
}
