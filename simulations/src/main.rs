//! `causeway-simulations`: runs many Causeway nodes on one machine. Each subcommand lives in
//! its own module; this file only parses the command line and dispatches.

/// The same allocator as the `causeway` binary, so the nodes it runs in-process cost what the
/// daemon's do.
#[global_allocator]
static ALLOCATOR: causeway::allocator::MiMalloc = causeway::allocator::MiMalloc;

mod bench;
mod chaos;
mod sim;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "causeway-simulations",
    about = "Many Causeway nodes on one machine: benchmarks and simulations"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Raft write latency and throughput as ratios to a raw redb commit on the same disk.
    Bench(bench::BenchArgs),
    /// Seeded, deterministic simulation of the sans-IO cores with faults, checking invariants.
    Sim(sim::SimArgs),
    /// Real `causeway` processes with real faults (kill -9, pauses, partitions), then checks.
    Chaos(chaos::ChaosArgs),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    causeway::allocator::configure();
    // Node logs would interleave with the figures, so they are off unless asked for.
    if std::env::var_os("RUST_LOG").is_some() {
        use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
        let filter: Targets = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| Targets::new().with_default(tracing_subscriber::filter::LevelFilter::INFO));
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    match Cli::parse().command {
        Cmd::Bench(args) => bench::run(args).await,
        Cmd::Sim(args) => sim::run(args),
        Cmd::Chaos(args) => chaos::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn bench_trials_must_be_between_one_and_the_limit() {
        use clap::Parser;
        let trials = |n: &str| match super::Cli::try_parse_from(["causeway-simulations", "bench", "--trials", n]) {
            Ok(super::Cli {
                command: super::Cmd::Bench(args),
            }) => Ok(args.trials),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(trials("1"), Ok(Some(1)));
        assert_eq!(trials("15"), Ok(Some(15)));
        for bad in ["0", "16", "-1", "three"] {
            assert!(trials(bad).is_err(), "--trials {bad} was accepted");
        }
    }
}
