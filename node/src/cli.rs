//! The `causeway` command line: parses arguments, talks to the daemon through `Client` (or runs
//! `init`, `join` and `run` directly), prints human text or one JSON document with `--json`,
//! and reports errors as one line on stderr with a non-zero exit.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::api::{IdInfo, OnRegister, RegisterResource, ResourceView};
use crate::client::Client;
use crate::config::{self, Config, DEFAULT_PORT, Discovery};
use crate::datadir;
use crate::progress::{self, Follower};

#[derive(Parser, Debug)]
#[command(
    name = "causeway",
    version,
    about = "Peer-to-peer federation node for independent clusters"
)]
pub struct Cli {
    /// The node's data directory.
    #[arg(long, global = true, env = "CAUSEWAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new node that forms a new single-node cluster.
    Init {
        /// The new cluster's name.
        #[arg(long)]
        name: Option<String>,
        /// UDP address to listen on.
        #[arg(long, value_name = "IP:PORT", value_parser = config::parse_bind)]
        bind: Option<SocketAddr>,
        /// How peers are found: static (explicit addresses only), n0 (iroh discovery +
        /// relays), dht (Mainline DHT; publishes the node's direct addresses) or n0+dht.
        #[arg(long, value_enum, default_value = "n0")]
        discovery: DiscoveryArg,
    },
    /// Run the daemon (systemd ExecStart).
    Run {
        /// Config file (it must name data_dir, unless --data-dir is given).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print this node's endpoint ID, cluster ID and addresses.
    Id,
    /// Membership of this node's cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Resources registered for federation.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Federation links to other clusters.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Share a resource: `share NAME --with PEER|linked|public --mode pull|push|bidirectional
    /// [--read-only]`; also `share remove NAME --with ...` and `share preview PEER`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Share(ShareArgs),
    /// Two clusters on loopback, linked, sharing a git repository and an artifact: the whole
    /// federation in one command. Data dirs are kept and printed.
    Demo {
        /// Where to put the data dirs (default: a new folder under the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Stop at the end instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Replicate a peer's resource: `sync NAME --from PEER`, or `sync status`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sync(SyncArgs),
    /// What PEER (a link name, cluster ID or endpoint ID) shares with this cluster.
    Catalog {
        peer: String,
        /// Show the replicated view kept current by the peer's notifications, without asking it.
        #[arg(long)]
        cached: bool,
    },
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[command(subcommand)]
    pub action: Option<SyncCommand>,
    /// The resource to replicate.
    #[arg(required = true)]
    pub name: Option<String>,
    /// The peer that shares it (link name, cluster ID or endpoint ID). Without it, an existing
    /// mirror syncs from its origin.
    #[arg(long = "from", conflicts_with = "to")]
    pub from: Option<String>,
    /// Offer this mirror's new commits back to its origin (bidirectional shares).
    #[arg(long = "to")]
    pub to: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Every transfer: resource, peer, direction, state, version, lag, bytes, reason.
    Status,
}

#[derive(Args, Debug)]
pub struct ShareArgs {
    #[command(subcommand)]
    pub action: Option<ShareCommand>,
    /// The resource to share.
    #[arg(required = true)]
    pub name: Option<String>,
    /// A peer (link name, cluster ID or endpoint ID), `linked` (every cluster we link to) or
    /// `public` (any cluster, linked or not).
    #[arg(long, required = true)]
    pub with: Option<String>,
    #[arg(long, value_parser = ["pull", "push", "bidirectional"], required = true)]
    pub mode: Option<String>,
    /// The peer may not write back.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Subcommand, Debug)]
pub enum ShareCommand {
    /// Remove the share of NAME with an audience.
    Remove {
        name: String,
        #[arg(long)]
        with: String,
    },
    /// Exactly what PEER would see and may do, and which rule grants each item. PEER may be a
    /// link, a cluster ID (an unlinked cluster) or `public` (an unknown endpoint).
    Preview { peer: String },
}

#[derive(Subcommand, Debug)]
pub enum LinkCommand {
    /// Federate with the cluster behind ENDPOINT_ID (any node of it).
    Add {
        endpoint_id: String,
        /// Where to reach that endpoint (needed with static discovery); repeatable.
        #[arg(long = "addr", value_name = "IP:PORT", value_parser = config::parse_bind)]
        addrs: Vec<SocketAddr>,
        /// A local name for the link (default: peer-<endpoint prefix>).
        #[arg(long)]
        name: Option<String>,
        /// Take the peer's push offers: under its push shares, new resources and versions
        /// arrive here as mirrors without a `sync`. Off by default (see `link set`).
        #[arg(long)]
        accept_pushes: bool,
        /// How long to wait for the first handshake, which pins the peer's cluster ID; the
        /// command fails, saying why, if the link is not up by then.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LINK_WAIT_SECS,
              value_parser = clap::value_parser!(u64).range(0..=MAX_LINK_WAIT_SECS))]
        wait: u64,
        /// Return at once (the link reads `pending` until its first handshake).
        #[arg(long, conflicts_with = "wait")]
        no_wait: bool,
    },
    /// Links and their health, plus peers that connect to us without our linking to them.
    List,
    /// Remove a link: PEER is its name, the peer's cluster ID or any of its endpoint IDs.
    Remove { peer: String },
    /// Change a link's options: `link set PEER --accept-pushes on|off`.
    Set {
        peer: String,
        /// Whether the peer's push offers are taken.
        #[arg(long, value_name = "on|off", value_parser = parse_on_off, action = clap::ArgAction::Set, required = true)]
        accept_pushes: bool,
    },
}

/// How long `link add` waits for the first handshake by default.
pub const DEFAULT_LINK_WAIT_SECS: u64 = 10;
/// Longest `link add --wait`.
pub const MAX_LINK_WAIT_SECS: u64 = 3600;

/// `on` / `off` for a link option.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected \"on\" or \"off\", not {s:?}")),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DiscoveryArg {
    Static,
    N0,
    Dht,
    #[value(name = "n0+dht", alias = "dht+n0")]
    N0Dht,
}

impl From<DiscoveryArg> for Discovery {
    fn from(d: DiscoveryArg) -> Self {
        match d {
            DiscoveryArg::Static => Discovery::Static,
            DiscoveryArg::N0 => Discovery::N0,
            DiscoveryArg::Dht => Discovery::Dht,
            DiscoveryArg::N0Dht => Discovery::N0Dht,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Make a one-time invite ticket for a new node.
    Invite {
        /// How long the ticket stays valid, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Create a node in --data-dir that joins the ticket's cluster (then start it with `run`).
    Join {
        ticket: String,
        /// UDP address the new node will listen on.
        #[arg(long, value_name = "IP:PORT", value_parser = config::parse_bind)]
        bind: Option<SocketAddr>,
        /// How peers are found: static, n0, dht or n0+dht (as for `init`).
        #[arg(long, value_enum, default_value = "n0")]
        discovery: DiscoveryArg,
    },
    /// Leader, term, commit index and members.
    Status,
    /// Remove a member (by endpoint ID) from the cluster.
    Remove { node: String },
    /// Replace the cluster key: signed by the current key and a majority of the members, and
    /// sent to every linked peer (also done automatically after `cluster remove`).
    RotateKey,
}

#[derive(Subcommand, Debug)]
pub enum ResourceCommand {
    /// Register a resource for federation.
    Register(RegisterArgs),
    /// List resources, a page at a time.
    List {
        /// Start after this name.
        #[arg(long)]
        after: Option<String>,
        /// Page size; without it every resource is listed.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one resource.
    Show { name: String },
    /// Record a new version (version + 1).
    Publish {
        name: String,
        /// Content root (an iroh-blobs hash) of the new version.
        #[arg(long)]
        content: Option<String>,
    },
    /// Remove a resource from the catalog.
    Remove { name: String },
    /// Set (`--set KEY=VALUE`) or remove (`--unset KEY`) metadata.
    Meta {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Follow the catalog's change feed (one line or JSON document per change).
    Watch {
        /// Start after this change sequence number (default: now).
        #[arg(long)]
        after: Option<u64>,
        /// Print what is there and stop instead of following.
        #[arg(long)]
        once: bool,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    #[arg(long)]
    pub kind: String,
    #[arg(long)]
    pub name: String,
    /// Local path of the resource's content (a file, directory or bare repository). Its
    /// current content is imported and recorded as version 1 (a repository: its current refs),
    /// so a peer it is shared with can sync it at once.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Record the resource at version 0 without importing the path's content; a later
    /// `resource publish` (or a push into a registered repository) publishes it.
    #[arg(long, requires = "path")]
    pub no_publish: bool,
    #[arg(long, default_value = "")]
    pub owner: String,
    /// Metadata entries; repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub meta: Vec<(String, String)>,
}

/// Entry point of the binary: runs the CLI and turns errors into one line and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Run { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<NothingPublished>() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_NOTHING_PUBLISHED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(daemon: bool) {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let default = if daemon {
        "info,openraft=warn"
    } else {
        "warn,openraft=error"
    };
    // RUST_LOG takes `target=level` directives (`info`, `causeway=debug,openraft=warn`); one
    // that does not parse falls back to the default rather than silence the logs.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| default.parse().unwrap_or_default());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .try_init();
}

fn data_dir(cli: &Cli) -> Result<PathBuf> {
    cli.data_dir
        .clone()
        .ok_or_else(|| anyhow!("no data directory: pass --data-dir DIR or set CAUSEWAY_DATA_DIR"))
}

fn existing_data_dir(cli: &Cli) -> Result<PathBuf> {
    let dir = data_dir(cli)?;
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist (create a node with `causeway init --data-dir {}`)",
            dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn client(cli: &Cli) -> Result<Client> {
    let dir = existing_data_dir(cli)?;
    datadir::require_node(&dir)?;
    Ok(Client::connect(&dir).await?)
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Init { name, bind, discovery } => {
            let dir = data_dir(&cli)?;
            let info = crate::init::init(
                &dir,
                name.clone(),
                bind.unwrap_or_else(default_bind),
                (*discovery).into(),
            )
            .await
            .with_context(|| format!("init {}", dir.display()))?;
            if cli.json {
                print_json(&info)?;
            } else {
                println!("initialized node in {}", dir.display());
                print_id(&info);
                println!("start it with: causeway run --data-dir {}", dir.display());
            }
        }
        Command::Run { config } => {
            let (dir, config) = match (config, &cli.data_dir) {
                (Some(file), dir) => {
                    let c = Config::load(file).map_err(|e| anyhow!(e))?;
                    let dir = dir.clone().or_else(|| c.data_dir.clone()).ok_or_else(|| {
                        anyhow!(
                            "config {} names no data_dir and no --data-dir was given",
                            file.display()
                        )
                    })?;
                    (dir, c)
                }
                (None, Some(_)) => {
                    let dir = existing_data_dir(&cli)?;
                    let c = Config::load(&dir.join(datadir::CONFIG_FILE)).map_err(|e| anyhow!(e))?;
                    (dir, c)
                }
                (None, None) => bail!("no data directory: pass --data-dir DIR, --config FILE or set CAUSEWAY_DATA_DIR"),
            };
            for warning in config.warnings() {
                tracing::warn!("{warning}");
            }
            crate::daemon::run(&dir, config).await.context("daemon")?;
        }
        Command::Id => {
            let dir = existing_data_dir(&cli)?;
            let info = match Client::connect(&dir).await {
                Ok(mut c) => c.id().await?,
                Err(_) => offline_id(&dir)?,
            };
            if cli.json {
                print_json(&info)?;
            } else {
                print_id(&info);
            }
        }
        Command::Cluster(cmd) => cluster(&cli, cmd).await?,
        Command::Resource(cmd) => resource(&cli, cmd).await?,
        Command::Link(cmd) => link(&cli, cmd).await?,
        Command::Share(args) => share(&cli, args).await?,
        Command::Sync(args) => sync(&cli, args).await?,
        Command::Demo { dir, exit } => crate::demo::run(dir.clone(), *exit).await?,
        Command::Catalog { peer, cached } => {
            let rows = client(&cli).await?.peer_catalog(peer, *cached).await?;
            if cli.json {
                print_json(
                    &rows
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "name": r.name, "kind": r.kind, "owner": r.owner, "version": r.version,
                                "mode": r.mode, "read_only": r.read_only, "content": r.content,
                            })
                        })
                        .collect::<Vec<_>>(),
                )?;
            } else if rows.is_empty() {
                println!("{peer} shares nothing with this cluster");
            } else {
                for r in &rows {
                    println!(
                        "{:<32} {:<24} v{:<4} {:<13} {}",
                        r.name,
                        r.kind,
                        r.version,
                        r.mode,
                        if r.read_only { "read-only" } else { "" }
                    );
                }
            }
        }
    }
    Ok(())
}

/// `id` without a running daemon: from the key, state and config files.
fn offline_id(dir: &Path) -> Result<IdInfo> {
    let state = datadir::require_node(dir)?;
    let key = datadir::read_key(dir)?;
    let config = Config::load(&dir.join(datadir::CONFIG_FILE)).map_err(|e| anyhow!(e))?;
    Ok(IdInfo {
        endpoint_id: crate::node::endpoint_key(&key.public()).to_string(),
        cluster_id: state.cluster_id.to_string(),
        cluster_name: state.cluster_name,
        addrs: vec![config.bind.to_string()],
    })
}

fn print_id(info: &IdInfo) {
    println!("endpoint id:  {}", info.endpoint_id);
    println!("cluster id:   {}", info.cluster_id);
    println!("cluster name: {}", info.cluster_name);
    println!("addresses:    {}", info.addrs.join(", "));
}

async fn cluster(cli: &Cli, cmd: &ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Invite { ttl } => {
            let invite = client(cli).await?.invite(Some(Duration::from_secs(*ttl))).await?;
            if cli.json {
                print_json(&serde_json::json!({ "ticket": invite.ticket, "expires_at_ms": invite.expires_at_ms }))?;
            } else {
                println!("{}", invite.ticket);
            }
        }
        ClusterCommand::Join {
            ticket,
            bind,
            discovery,
        } => {
            let dir = data_dir(cli)?;
            let ticket: causeway_proto::InviteTicket = ticket.parse().context("invalid invite ticket")?;
            let joined =
                crate::join::join_cluster(&dir, &ticket, bind.unwrap_or_else(default_bind), (*discovery).into())
                    .await
                    .context("join")?;
            if cli.json {
                print_json(&joined)?;
            } else {
                println!(
                    "joined cluster {} ({}) as {}",
                    joined.cluster_name, joined.cluster_id, joined.endpoint_id
                );
                println!("start the node with: causeway run --data-dir {}", dir.display());
            }
        }
        ClusterCommand::Status => {
            let s = client(cli).await?.cluster_status().await?;
            if cli.json {
                print_json(&serde_json::json!({
                    "cluster_id": s.cluster_id,
                    "leader": s.leader,
                    "term": s.term,
                    "commit_index": s.commit_index,
                    "applied_index": s.applied_index,
                    "reported_by": s.reported_by,
                    "snapshot_index": s.snapshot_index,
                    "purged_index": s.purged_index,
                    "members": s.members.iter().map(|m| serde_json::json!({
                        "endpoint_id": m.endpoint_id,
                        "role": m.role,
                        "reachable": m.reachable,
                        "addrs": m.addrs,
                    })).collect::<Vec<_>>(),
                }))?;
            } else {
                println!("cluster {}", s.cluster_id);
                println!(
                    "leader {}  term {}  commit {}",
                    s.leader.as_deref().unwrap_or("none"),
                    s.term,
                    s.commit_index
                );
                for m in &s.members {
                    println!(
                        "  {}  {:<7}  {}  {}",
                        m.endpoint_id,
                        m.role,
                        if m.reachable { "reachable  " } else { "unreachable" },
                        m.addrs.join(",")
                    );
                }
            }
        }
        ClusterCommand::Remove { node } => {
            node.parse::<causeway_proto::EndpointKey>()
                .map_err(|e| anyhow!("{e}"))?;
            client(cli).await?.remove_member(node).await?;
            if cli.json {
                print_json(&serde_json::json!({ "removed": node }))?;
            } else {
                println!("removed {node}");
            }
        }
        ClusterCommand::RotateKey => {
            let v = client(cli).await?.rotate_key().await?;
            if cli.json {
                print_json(&v)?;
            } else {
                println!(
                    "rotated the cluster key to generation {} ({} of {} members signed)",
                    v.generation, v.signers, v.members
                );
                if !v.majority {
                    println!(
                        "no majority of the previous members signed: linked peers follow the new key only after their admin confirms this cluster with `link add` again"
                    );
                }
            }
        }
    }
    Ok(())
}

async fn link(cli: &Cli, cmd: &LinkCommand) -> Result<()> {
    match cmd {
        LinkCommand::Add {
            endpoint_id,
            addrs,
            name,
            accept_pushes,
            wait,
            no_wait,
        } => {
            endpoint_id
                .parse::<causeway_proto::EndpointKey>()
                .map_err(|e| anyhow!("{e}"))?;
            let mut c = client(cli).await?;
            let added = c
                .link_add(endpoint_id, addrs.clone(), name.clone(), *accept_pushes)
                .await?;
            if *no_wait {
                if cli.json {
                    print_json(&link_json(&added))?;
                } else {
                    println!(
                        "added link {} to {endpoint_id}: {}; `causeway link list` shows when it is up",
                        added.name, added.state
                    );
                }
                return Ok(());
            }
            let waited = Duration::from_secs(*wait);
            let v = c
                .wait_link_up(&added.name, waited)
                .await?
                .ok_or_else(|| anyhow!("link {} vanished while waiting for its first handshake", added.name))?;
            if cli.json {
                print_json(&link_json(&v))?;
            } else if v.is_up() {
                println!("linked {} ({endpoint_id}): {}", v.name, link_summary(&v));
            }
            if !v.is_up() {
                bail!(
                    "link {} is added but not up after {} s: {}; it keeps trying (`causeway link list` shows its state)",
                    v.name,
                    waited.as_secs(),
                    link_summary(&v)
                );
            }
        }
        LinkCommand::List => {
            let links = client(cli).await?.link_list().await?;
            if cli.json {
                print_json(&links.iter().map(link_json).collect::<Vec<_>>())?;
            } else if links.is_empty() {
                println!("no links");
            } else {
                for l in &links {
                    println!(
                        "{:<20} {:<8} {:<8} mutual={:<5} last={}ms  peer={}{}",
                        l.name,
                        l.direction,
                        l.state,
                        l.mutual,
                        l.last_heartbeat_ms_ago
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        l.peer.as_deref().unwrap_or("(not pinned yet)"),
                        l.reason
                            .as_deref()
                            .map(|r| format!("  reason: {r}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
        LinkCommand::Set { peer, accept_pushes } => {
            let v = client(cli).await?.link_set_pushes(peer, *accept_pushes).await?;
            if cli.json {
                print_json(&link_json(&v))?;
            } else {
                let word = if v.accept_pushes { "on" } else { "off" };
                println!("link {}: accept-pushes {word}", v.name);
            }
        }
        LinkCommand::Remove { peer } => {
            client(cli).await?.link_remove(peer).await?;
            if cli.json {
                print_json(&serde_json::json!({ "removed": peer }))?;
            } else {
                println!("removed link {peer}");
            }
        }
    }
    Ok(())
}

/// One line on how a link stands: the pinned cluster when it is up, else its state and the
/// reason the supervisor recorded.
fn link_summary(l: &crate::federation::LinkView) -> String {
    use crate::federation::health::LinkState;
    if l.is_up() {
        return format!(
            "cluster {} ({}) is pinned, link active",
            l.peer.as_deref().unwrap_or("?"),
            l.cluster_name.as_deref().unwrap_or("unnamed"),
        );
    }
    let why = match (&l.reason, l.state) {
        (Some(r), _) => r.clone(),
        (None, LinkState::Pending) if l.peer.is_none() => "waiting for its first handshake (no answer yet)".into(),
        (None, LinkState::Pending) => "waiting for a heartbeat".into(),
        (None, _) => "no reason recorded".into(),
    };
    format!("{} ({why})", l.state)
}

/// A link in the contract's JSON shape.
fn link_json(l: &crate::federation::LinkView) -> serde_json::Value {
    serde_json::json!({
        "peer": l.peer,
        "name": l.name,
        "endpoints": l.endpoints,
        "state": l.state,
        "mutual": l.mutual,
        "last_heartbeat_ms_ago": l.last_heartbeat_ms_ago,
        "rtt_ms": l.rtt_ms,
        "direction": l.direction,
        "card_epoch": l.card_epoch,
        "key_generation": l.key_generation,
        "reason": l.reason,
        "accept_pushes": l.accept_pushes,
        "cluster_name": l.cluster_name,
    })
}

/// Exit code of `sync NAME --from PEER` when PEER has published no version of NAME yet:
/// `EX_TEMPFAIL`, "try again later", so a script tells it from a refusal (exit code 1).
pub const EXIT_NOTHING_PUBLISHED: u8 = 75;

/// The peer registered the resource but published no version yet: this cluster follows it and
/// fetches the first version when it is published, but has nothing now.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name}: nothing published yet at {peer} (version 0); this cluster follows it and fetches the first version when it is published"
)]
pub struct NothingPublished {
    pub name: String,
    pub peer: String,
}

async fn sync(cli: &Cli, args: &SyncArgs) -> Result<()> {
    match &args.action {
        Some(SyncCommand::Status) => {
            let rows = client(cli).await?.sync_status().await?;
            if cli.json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                println!("no transfers");
            } else {
                for r in &rows {
                    let total = match r.bytes_total_known {
                        true => r.bytes_total.to_string(),
                        false => "?".into(),
                    };
                    println!(
                        "{:<24} {:<5} {:<12} v{:<4} {:>12}/{:<12} lag {}ms{}",
                        r.resource,
                        r.direction,
                        r.state,
                        r.version,
                        r.bytes_done,
                        total,
                        r.lag_ms,
                        r.reason.as_deref().map(|x| format!("  ({x})")).unwrap_or_default()
                    );
                }
            }
        }
        None if args.to.is_some() => {
            let (Some(name), Some(to)) = (&args.name, &args.to) else {
                bail!("usage: causeway sync NAME --to PEER");
            };
            let r = client(cli).await?.sync_push(name, to).await?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!("{} offered back to {to}", r.name);
            }
        }
        None => {
            let Some(name) = &args.name else {
                bail!("usage: causeway sync NAME [--from PEER] | causeway sync NAME --to PEER | causeway sync status");
            };
            let mut c = client(cli).await?;
            let from = match &args.from {
                Some(f) => f.clone(),
                None => match c.show_resource(name).await.ok().and_then(|r| r.mirror_of) {
                    Some(origin) => origin,
                    None => bail!("{name:?} is not a mirror here yet: name the peer with --from PEER"),
                },
            };
            let from = &from;
            let progress = match cli.json {
                true => None,
                false => Some(Follower::start(
                    name,
                    progress::transfer_samples(client(cli).await?, name.clone()),
                )),
            };
            let result = c.sync_pull(name, from).await;
            if let Some(p) = progress {
                p.stop().await;
            }
            let r = result?;
            if cli.json {
                print_json(&r)?;
            }
            if !r.has_version() {
                return Err(NothingPublished {
                    name: r.name,
                    peer: from.clone(),
                }
                .into());
            }
            if !cli.json {
                println!(
                    "{} is a mirror of {} at version {}",
                    r.name,
                    r.mirror_of.as_deref().unwrap_or("?"),
                    r.version
                );
            }
        }
    }
    Ok(())
}

async fn share(cli: &Cli, args: &ShareArgs) -> Result<()> {
    match &args.action {
        Some(ShareCommand::Remove { name, with }) => {
            let r = client(cli).await?.unshare(name, with).await?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!("{name} is no longer shared with {with}");
            }
        }
        Some(ShareCommand::Preview { peer }) => {
            let rows = client(cli).await?.share_preview(peer).await?;
            if cli.json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                println!("{peer} would see nothing");
            } else {
                for r in &rows {
                    println!(
                        "{:<32} {:<24} may {:<28} granted by: {}",
                        r.name,
                        r.kind,
                        r.may.join(", "),
                        r.rule
                    );
                }
            }
        }
        None => {
            let (Some(name), Some(with), Some(mode)) = (&args.name, &args.with, &args.mode) else {
                bail!(
                    "usage: causeway share NAME --with PEER|linked|public --mode pull|push|bidirectional [--read-only]"
                );
            };
            let r = client(cli).await?.share(name, with, mode, args.read_only).await?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!(
                    "shared {name} with {with} ({mode}{})",
                    if args.read_only { ", read-only" } else { "" }
                );
            }
        }
    }
    Ok(())
}

async fn resource(cli: &Cli, cmd: &ResourceCommand) -> Result<()> {
    match cmd {
        ResourceCommand::Register(a) => {
            causeway_catalog::validate::resource_name(&a.name)
                .and_then(|_| causeway_catalog::validate::kind(&a.kind))
                .and_then(|_| causeway_catalog::validate::owner(&a.owner))
                .map_err(|e| anyhow!(e))?;
            if let Some(p) = &a.path
                && !p.exists()
            {
                bail!("path {} does not exist", p.display());
            }
            // The daemon resolves the path, from its own working directory: send it absolute.
            let path = match &a.path {
                Some(p) => Some(
                    std::path::absolute(p)
                        .with_context(|| format!("path {}", p.display()))?
                        .display()
                        .to_string(),
                ),
                None => None,
            };
            let req = RegisterResource {
                name: a.name.clone(),
                kind: a.kind.clone(),
                owner: a.owner.clone(),
                path,
                metadata: a.meta.iter().cloned().collect(),
                on_register: if a.no_publish {
                    OnRegister::RecordOnly
                } else {
                    OnRegister::Publish
                },
            };
            // Importing a large file or directory takes a while: shown as it goes.
            let progress = match cli.json || req.path.is_none() || a.no_publish {
                true => None,
                false => Some(Follower::start(
                    &a.name,
                    progress::import_samples(client(cli).await?, a.name.clone()),
                )),
            };
            let result = client(cli).await?.register_resource(req).await;
            if let Some(p) = progress {
                p.stop().await;
            }
            let r = result?;
            if cli.json {
                print_json(&r)?;
            } else if r.has_version() {
                println!(
                    "registered {} ({}) at version {}, content {}",
                    r.name,
                    r.kind,
                    r.version,
                    r.content.as_deref().unwrap_or("none")
                );
            } else if a.path.is_none() {
                println!("registered {} ({})", r.name, r.kind);
            } else if a.no_publish {
                println!(
                    "registered {} ({}) at version 0, not published: `causeway resource publish {}` publishes its content",
                    r.name, r.kind, r.name
                );
            } else {
                println!(
                    "registered {} ({}) at version 0: the repository has no refs yet; its first push publishes version 1",
                    r.name, r.kind
                );
            }
        }
        ResourceCommand::List { after, limit } => {
            let mut c = client(cli).await?;
            let mut rows: Vec<ResourceView> = Vec::new();
            match limit {
                Some(n) => rows = c.list_resources(after.as_deref(), *n).await?,
                None => c.all_resources(crate::control::DEFAULT_PAGE, |r| rows.push(r)).await?,
            }
            if cli.json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                println!("no resources");
            } else {
                for r in &rows {
                    println!("{:<32} {:<24} v{:<4} {}", r.name, r.kind, r.version, r.owner);
                }
            }
        }
        ResourceCommand::Publish { name, content } => {
            // A large file or directory takes a while to import: shown as it goes.
            let progress = match cli.json {
                true => None,
                false => Some(Follower::start(
                    name,
                    progress::import_samples(client(cli).await?, name.clone()),
                )),
            };
            let result = client(cli).await?.publish(name, content.clone()).await;
            if let Some(p) = progress {
                p.stop().await;
            }
            let r = result?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!("published {} version {}", r.name, r.version);
            }
        }
        ResourceCommand::Remove { name } => {
            client(cli).await?.remove_resource(name).await?;
            if cli.json {
                print_json(&serde_json::json!({ "removed": name }))?;
            } else {
                println!("removed {name}");
            }
        }
        ResourceCommand::Meta { name, set, unset } => {
            let r = client(cli)
                .await?
                .update_metadata(name, set.iter().cloned().collect(), unset.clone())
                .await?;
            if cli.json {
                print_json(&r)?;
            } else {
                for (k, v) in &r.metadata {
                    println!("{k}={v}");
                }
            }
        }
        ResourceCommand::Watch { after, once } => {
            let mut c = client(cli).await?;
            let mut seq = match after {
                Some(s) => *s,
                None if *once => 0,
                None => c.newest_change_seq().await?,
            };
            loop {
                let batch = c
                    .changes(seq, if *once { Duration::ZERO } else { Duration::from_secs(25) })
                    .await?;
                if !batch.complete {
                    eprintln!("warning: changes after {seq} were pruned; re-list resources to catch up");
                }
                for ch in &batch.changes {
                    if cli.json {
                        println!("{}", serde_json::to_string(ch)?);
                    } else {
                        println!("{:>8} {:<18} {} v{}", ch.seq, ch.kind, ch.name, ch.version);
                    }
                }
                seq = batch.last_seq;
                if *once {
                    return Ok(());
                }
            }
        }
        ResourceCommand::Show { name } => {
            let r = client(cli).await?.show_resource(name).await?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!("name:    {}", r.name);
                println!("kind:    {}", r.kind);
                println!("owner:   {}", r.owner);
                println!("version: {}", r.version);
                if let Some(p) = &r.path {
                    println!("path:    {p}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The write-back hook passes a peer's resource name after `--`: whatever the name, it is
    /// read as the name, never as an option or the `status` subcommand.
    #[test]
    fn a_name_after_the_separator_is_only_a_name() {
        for name in ["status", "-h", "--json", "--from=x"] {
            let cli = Cli::try_parse_from(["causeway", "sync", "--to", "origin", "--", name]).expect(name);
            match cli.command {
                Command::Sync(args) => {
                    assert!(args.action.is_none(), "{name} read as a subcommand");
                    assert_eq!(args.name.as_deref(), Some(name));
                    assert_eq!(args.to.as_deref(), Some("origin"));
                }
                other => panic!("{name}: parsed as {other:?}"),
            }
        }
    }
}
