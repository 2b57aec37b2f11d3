//! A small "monitoring" subsystem: it registers its dashboards with the local Causeway node so
//! they can be federated, and shows the whole subsystem side of the library API through
//! `causeway::Client` (the control socket of a running daemon):
//!
//! - write each dashboard's definition to a JSON file and register it as kind
//!   `monitoring/dashboard`, owner `monitoring`, with that file as its path: registering
//!   publishes the file as version 1 ([`OnRegister::Publish`]), so a linked cluster it is shared
//!   with can sync the definition at once (idempotent: a dashboard that is already registered
//!   is kept, so the program can be run again),
//! - update a metadata key; on a later run, write the definition again and publish it as a new
//!   version; share the first dashboard with `public` as read-only `pull`,
//! - list its dashboards back a page at a time,
//! - follow the change feed until it has seen every change it made.
//!
//! Run it against a running node (`causeway run --data-dir DIR` in another terminal):
//!
//! ```text
//! cargo run -p causeway --example monitoring -- --data-dir DIR --dashboards DEFS dash-a dash-b
//! ```
//!
//! `CAUSEWAY_DATA_DIR` may stand in for `--data-dir`. The integration test
//! `node/tests/subsystem.rs` runs this same code.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use causeway::{
    Client, ClientError, OnRegister,
    api::{RegisterResource, ResourceView},
};
use clap::Parser;

/// The kind every dashboard is registered with.
pub const KIND: &str = "monitoring/dashboard";
/// The owner every dashboard is registered with.
pub const OWNER: &str = "monitoring";
/// Page size when listing resources back.
pub const PAGE: usize = 10;
/// How long to follow the change feed for this run's own changes before giving up.
pub const WATCH_DEADLINE: Duration = Duration::from_secs(30);

/// What one run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Dashboards this run registered.
    pub registered: Vec<String>,
    /// Dashboards that were already registered by an earlier run.
    pub already_registered: Vec<String>,
    /// Each dashboard's version after this run registered or published it.
    pub versions: BTreeMap<String, u64>,
    /// The dashboard shared with `public`, if any.
    pub shared: Option<String>,
    /// Every `monitoring/dashboard` owned by `monitoring` in the catalog, in name order.
    pub listed: Vec<String>,
    /// Pages fetched to list them.
    pub pages: usize,
    /// The changes of this run seen on the change feed, as `(kind, name)`.
    pub seen_changes: Vec<(String, String)>,
}

/// A dashboard's initial metadata: a panel count and its data source.
fn dashboard_metadata(index: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("panels".to_string(), (4 + index).to_string()),
        ("source".to_string(), "prometheus".to_string()),
    ])
}

/// Writes the definition of dashboard `name` (what a peer that syncs it receives) to a file in
/// `dir`, returning the file's absolute path.
fn write_definition(dir: &Path, name: &str, index: usize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let file = std::path::absolute(dir.join(format!("{name}.json")))?;
    let mut definition = dashboard_metadata(index);
    definition.insert("title".into(), name.to_string());
    definition.insert("refresh".into(), "30s".into());
    std::fs::write(&file, serde_json::to_vec_pretty(&definition)?)
        .with_context(|| format!("write {}", file.display()))?;
    Ok(file)
}

/// Registers `name` with its definition file, published as version 1, or accepts it as already
/// registered when it exists as one of ours. Returns the version when this call registered it.
async fn register(client: &mut Client, name: &str, index: usize, definition: &Path) -> anyhow::Result<Option<u64>> {
    let req = RegisterResource {
        name: name.to_string(),
        kind: KIND.to_string(),
        owner: OWNER.to_string(),
        path: Some(definition.display().to_string()),
        metadata: dashboard_metadata(index),
        on_register: OnRegister::Publish,
    };
    match client.register_resource(req).await {
        Ok(r) => Ok(Some(r.version)),
        Err(ClientError::Remote { kind, .. }) if kind == "conflict" => {
            let existing = client.show_resource(name).await?;
            if existing.kind != KIND || existing.owner != OWNER {
                bail!(
                    "{name:?} is already registered as {} owned by {:?}, not as a monitoring dashboard",
                    existing.kind,
                    existing.owner
                );
            }
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("register {name}")),
    }
}

/// Every monitoring dashboard in the catalog, fetched `PAGE` resources at a time.
async fn list_dashboards(client: &mut Client) -> anyhow::Result<(Vec<ResourceView>, usize)> {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let page = client.list_resources(after.as_deref(), PAGE).await?;
        pages += 1;
        let done = page.len() < PAGE;
        after = page.last().map(|r| r.name.clone());
        out.extend(page.into_iter().filter(|r| r.kind == KIND && r.owner == OWNER));
        if done || after.is_none() {
            return Ok((out, pages));
        }
    }
}

/// Runs the subsystem against the daemon of the node in `data_dir`, keeping the dashboards'
/// definition files in `definitions`.
pub async fn run(data_dir: &Path, definitions: &Path, dashboards: &[&str]) -> anyhow::Result<Report> {
    let mut client = Client::connect(data_dir).await?;
    let id = client.id().await?;
    println!("connected to node {} of cluster {:?}", id.endpoint_id, id.cluster_name);
    let mut report = Report::default();

    // Start watching from "now", so the feed shows exactly what this run changes.
    let start_seq = client.changes(0, Duration::ZERO).await?.newest_seq;
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();

    for (i, &name) in dashboards.iter().enumerate() {
        let definition = write_definition(definitions, name, i)?;
        let registered = register(&mut client, name, i, &definition).await?;
        if let Some(version) = registered {
            // Registering published the definition: a peer can sync it from now on.
            println!("registered {name} ({KIND}) at version {version}");
            report.registered.push(name.to_string());
            report.versions.insert(name.to_string(), version);
            expected.insert(("registered".into(), name.into()));
        } else {
            println!("{name} was already registered");
            report.already_registered.push(name.to_string());
        }

        let set = BTreeMap::from([("refresh".to_string(), "30s".to_string())]);
        let r = client.update_metadata(name, set, Vec::new()).await?;
        println!("set {name} refresh={}", r.metadata.get("refresh").map_or("?", |v| v));
        expected.insert(("metadata_updated".into(), name.into()));

        if registered.is_none() {
            // The definition file as written now becomes the next version.
            let r = client.publish(name, None).await?;
            println!("published {name} version {}", r.version);
            report.versions.insert(name.to_string(), r.version);
            expected.insert(("published".into(), name.into()));
        }
    }

    if let Some(&first) = dashboards.first() {
        client.share(first, "public", "pull", true).await?;
        println!("shared {first} with public (pull, read-only)");
        report.shared = Some(first.to_string());
        expected.insert(("shares_changed".into(), first.into()));
    }

    let (listed, pages) = list_dashboards(&mut client).await?;
    for r in &listed {
        println!(
            "dashboard {} v{} panels={}",
            r.name,
            r.version,
            r.metadata.get("panels").map_or("?", |v| v)
        );
    }
    report.listed = listed.into_iter().map(|r| r.name).collect();
    report.pages = pages;

    // Follow the feed until every change of this run has come by.
    let deadline = Instant::now() + WATCH_DEADLINE;
    let mut seq = start_seq;
    let mut missing = expected.clone();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the change feed never showed {missing:?}");
        }
        let batch = client.changes(seq, left.min(Duration::from_secs(5))).await?;
        if !batch.complete {
            bail!("changes after {seq} were pruned before this run could read them");
        }
        for ch in batch.changes {
            let key = (ch.kind, ch.name);
            if missing.remove(&key) {
                println!("saw change {} {} {} v{}", ch.seq, key.0, key.1, ch.version);
                report.seen_changes.push(key);
            }
        }
        seq = batch.last_seq;
    }
    Ok(report)
}

#[derive(Parser)]
#[command(about = "An example monitoring subsystem that registers its dashboards with Causeway")]
struct Args {
    /// The node's data directory (its daemon must be running).
    #[arg(long, env = "CAUSEWAY_DATA_DIR")]
    data_dir: PathBuf,
    /// Where the dashboards' definition files are written (and published from).
    #[arg(long, default_value = "dashboards")]
    dashboards: PathBuf,
    /// Dashboard names to register.
    #[arg(required = true)]
    names: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    match run(&args.data_dir, &args.dashboards, &names).await {
        Ok(report) => {
            println!(
                "done: {} registered, {} already registered, {} dashboards listed in {} page(s), {} changes seen",
                report.registered.len(),
                report.already_registered.len(),
                report.listed.len(),
                report.pages,
                report.seen_changes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
