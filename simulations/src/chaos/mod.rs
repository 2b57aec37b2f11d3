//! Real processes with real faults (placeholder: being built).

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Run the short version (for CI).
    #[arg(long)]
    pub short: bool,
}

pub async fn run(_args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::bail!("the fault runner is not built yet")
}
