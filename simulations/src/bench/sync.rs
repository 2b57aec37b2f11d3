//! `sync`: an artifact moving between two linked clusters against a plain iroh-blobs fetch
//! between two bare endpoints, in the same run on loopback; and how long a new version published
//! at `a` takes to reach `b`'s mirror by itself (notification, then `b` pulls), with no one
//! asking `b` to sync.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, ensure};
use causeway::{Discovery, ShareMode, api::RegisterResource, content::store::parse_root};
use causeway_proto::ClusterId;
use iroh::{EndpointAddr, SecretKey, protocol::Router};
use iroh_blobs::{BlobsProtocol, HashAndFormat, store::fs::FsStore};
use serde::Serialize;

use super::common::{self, Align, Table, at_least, at_most, median, poll_until, stats, write_random_file};
use super::git::{git, path_str, remove_publish_hook};
use super::measure::Stats;
use super::pair::{Pair, TO_A, TO_B};
use super::report::Goal;

/// The sync must reach this fraction of the raw fetch's rate.
const RATE_FRACTION: f64 = 0.90;
/// A new version must reach the mirror within this (p50).
const LATENCY_LIMIT_MS: f64 = 500.0;
/// How often `b`'s catalog is polled for the new version.
const LATENCY_POLL: Duration = Duration::from_millis(5);
/// A version that has not arrived after this failed to.
const LATENCY_DEADLINE: Duration = Duration::from_secs(30);
/// Size of the artifact whose versions are timed when git is not available.
const LATENCY_ARTIFACT_BYTES: usize = 64 << 10;
const LATENCY_RESOURCE: &str = "latency";

/// How much content moves and how often.
#[derive(Clone, Debug)]
pub struct SyncPlan {
    pub bytes: usize,
    /// Transfers timed on each side (each with a new file); the medians are compared.
    pub rounds: usize,
    /// New versions timed from publish to `b`'s mirror.
    pub latency_rounds: usize,
}

impl SyncPlan {
    pub fn full() -> Self {
        SyncPlan {
            bytes: 256 << 20,
            rounds: 3,
            latency_rounds: 20,
        }
    }

    pub fn quick() -> Self {
        SyncPlan {
            bytes: 16 << 20,
            rounds: 1,
            latency_rounds: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub bytes: usize,
    pub raw_secs: Vec<f64>,
    pub sync_secs: Vec<f64>,
    /// `b` writing the mirror's file (the export a sync ends with), timed again after each sync:
    /// the part of the sync that is a local copy rather than the transfer.
    pub export_secs: Vec<f64>,
    /// Medians over the rounds.
    pub raw_mib_per_sec: f64,
    pub sync_mib_per_sec: f64,
    pub vs_raw: f64,
    pub goal: Goal,
    pub latency: Latency,
}

/// From a new version's publish at `a` to `b`'s catalog recording it in the mirror.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// "forge/repo" (a commit pushed, then published, as the repository's hook would) or
    /// "artifact" (a file rewritten, then published).
    pub via: &'static str,
    #[serde(flatten)]
    pub stats: Stats,
    /// The part of it spent in `publish` at `a` (for a repository: making the bundle).
    pub publish: Stats,
    /// Each round in order (a repository's versions are chains of one more bundle each time).
    pub rounds_ms: Vec<f64>,
    pub goal: Goal,
}

impl SyncReport {
    pub fn goals(&self) -> impl Iterator<Item = &Goal> {
        [&self.goal, &self.latency.goal].into_iter()
    }

    pub fn table(&self, mode: &str, dir: &str) -> String {
        let mut out = common::heading(
            "artifact sync between clusters vs a plain iroh-blobs fetch (loopback, same run)",
            mode,
            dir,
        );
        let bytes = self.bytes as f64;
        let mut t = Table::new(&[
            (&format!("transfer of {}", common::mib(bytes)), Align::Left),
            ("runs", Align::Right),
            ("time (median)", Align::Right),
            ("MiB/s", Align::Right),
            ("vs raw", Align::Right),
            ("goal", Align::Left),
        ]);
        let secs = |v: &[f64]| median(v.iter().map(|s| Duration::from_secs_f64(*s)).collect()).as_secs_f64();
        t.row(vec![
            "iroh-blobs fetch, bare endpoints".into(),
            self.raw_secs.len().to_string(),
            common::secs(secs(&self.raw_secs)),
            format!("{:.1}", self.raw_mib_per_sec),
            "1.00×".into(),
            "baseline".into(),
        ]);
        t.row(vec![
            "causeway sync_pull".into(),
            self.sync_secs.len().to_string(),
            common::secs(secs(&self.sync_secs)),
            format!("{:.1}", self.sync_mib_per_sec),
            common::times(self.vs_raw),
            common::goal(Some(&self.goal)),
        ]);
        let export = secs(&self.export_secs);
        t.row(vec![
            "  of which b writing the mirror's file".into(),
            self.export_secs.len().to_string(),
            common::secs(export),
            format!("{:.1}", common::mib_per_sec(bytes, export)),
            String::new(),
            format!(
                "(the same export timed again: {:.0}% of the sync)",
                100.0 * export / secs(&self.sync_secs)
            ),
        ]);
        out.push_str(&t.render());
        out.push('\n');
        let l = &self.latency;
        let mut lat = Table::new(&[
            ("new version → b's mirror", Align::Left),
            ("rounds", Align::Right),
            ("p50", Align::Right),
            ("p99", Align::Right),
            ("goal", Align::Left),
        ]);
        let label = match l.via {
            "forge/repo" => "forge/repo: git push, publish → mirror",
            _ => "artifact: publish → mirror",
        };
        lat.row(vec![
            label.into(),
            l.stats.count.to_string(),
            common::ms(l.stats.p50_ms),
            common::ms(l.stats.p99_ms),
            common::goal(Some(&l.goal)),
        ]);
        lat.row(vec![
            "  of which publish at a".into(),
            l.publish.count.to_string(),
            common::ms(l.publish.p50_ms),
            common::ms(l.publish.p99_ms),
            String::new(),
        ]);
        out.push_str(&lat.render());
        out.push_str(&format!(
            "(timed from the publish at a, which runs as soon as the push returns, until b's catalog records the version; b polled every {} ms)\n",
            LATENCY_POLL.as_millis()
        ));
        if let (Some(first), Some(last)) = (l.rounds_ms.first(), l.rounds_ms.last()) {
            let why = match l.via {
                "forge/repo" => " (each version's bundle chain is one bundle longer than the last)",
                _ => "",
            };
            out.push_str(&format!(
                "first round {}, last round {}{why}\n",
                common::ms(*first),
                common::ms(*last)
            ));
        }
        out.push('\n');
        let (met, total) = common::tally(self.goals());
        out.push_str(&common::goals_line(met, total));
        out
    }
}

/// Runs the transfers and the latency rounds under `root` on `pair`. Progress goes to stderr.
pub async fn measure(plan: &SyncPlan, root: &Path, pair: &Pair) -> Result<SyncReport> {
    let dir = root.join("sync");
    std::fs::create_dir_all(&dir)?;
    let mut raw = Vec::new();
    let mut synced = Vec::new();
    let mut exports = Vec::new();
    for round in 0..plan.rounds.max(1) {
        let file = dir.join(format!("artifact-{round}.bin"));
        let (f, len) = (file.clone(), plan.bytes);
        tokio::task::spawn_blocking(move || write_random_file(&f, len)).await??;
        eprintln!(
            "sync: round {}: {} over bare iroh-blobs endpoints and between the clusters",
            round + 1,
            common::mib(plan.bytes as f64)
        );
        // Alternate which side goes first, so neither always finds the disk busier.
        let (name, scratch) = (format!("artifact-{round}"), dir.join(format!("raw-{round}")));
        let (sync, export) = if round % 2 == 0 {
            raw.push(raw_fetch(&file, &scratch, plan.bytes).await?);
            causeway_pull(pair, &name, &file, plan.bytes).await?
        } else {
            let s = causeway_pull(pair, &name, &file, plan.bytes).await?;
            raw.push(raw_fetch(&file, &scratch, plan.bytes).await?);
            s
        };
        synced.push(sync);
        exports.push(export);
        std::fs::remove_file(&file)?;
    }
    let rate = |d: &[Duration]| common::mib_per_sec(plan.bytes as f64, median(d.to_vec()).as_secs_f64());
    let (raw_rate, sync_rate) = (rate(&raw), rate(&synced));

    let rounds = plan.latency_rounds.max(1);
    let (via, samples) = if causeway_sync::git::git_available() {
        eprintln!("sync: {rounds} commits pushed at a, until each is in b's mirror");
        ("forge/repo", latency_git(pair, &dir, rounds).await?)
    } else {
        eprintln!("sync: {rounds} artifact versions published at a, until each is in b's mirror");
        ("artifact", latency_artifact(pair, &dir, rounds).await?)
    };
    let (samples, publishes): (Vec<Duration>, Vec<Duration>) = samples.into_iter().unzip();
    let rounds_ms = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let elapsed = samples.iter().sum();
    let latency = stats(samples, elapsed);
    let publish = stats(publishes, elapsed);
    let latency_goal = at_most(
        format!("p50 ≤ {LATENCY_LIMIT_MS} ms"),
        LATENCY_LIMIT_MS,
        "ms",
        latency.p50_ms,
    );
    Ok(SyncReport {
        bytes: plan.bytes,
        raw_secs: raw.iter().map(Duration::as_secs_f64).collect(),
        sync_secs: synced.iter().map(Duration::as_secs_f64).collect(),
        export_secs: exports.iter().map(Duration::as_secs_f64).collect(),
        raw_mib_per_sec: raw_rate,
        sync_mib_per_sec: sync_rate,
        vs_raw: sync_rate / raw_rate,
        goal: at_least(
            format!("≥ {RATE_FRACTION} × raw"),
            RATE_FRACTION * raw_rate,
            "MiB/s",
            sync_rate,
        ),
        latency: Latency {
            via,
            stats: latency,
            publish,
            rounds_ms,
            goal: latency_goal,
        },
    })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Times a plain iroh-blobs fetch of `file` between two bare endpoints with a store each (in
/// `dir`): from dialling the provider until the blob is complete at the receiver.
async fn raw_fetch(file: &Path, dir: &Path, len: usize) -> Result<Duration> {
    let provider_store = FsStore::load(dir.join("provider"))
        .await
        .map_err(|e| anyhow!("provider store: {e}"))?;
    let receiver_store = FsStore::load(dir.join("receiver"))
        .await
        .map_err(|e| anyhow!("receiver store: {e}"))?;
    let provider = causeway::endpoint::bind(
        SecretKey::generate(),
        loopback(),
        Discovery::Static,
        vec![iroh_blobs::ALPN.to_vec()],
    )
    .await?;
    let receiver = causeway::endpoint::bind(SecretKey::generate(), loopback(), Discovery::Static, vec![]).await?;
    let router = Router::builder(provider.clone())
        .accept(iroh_blobs::ALPN, BlobsProtocol::new(&provider_store, None))
        .spawn();
    let result = async {
        let added = provider_store
            .blobs()
            .add_path(std::path::absolute(file)?)
            .await
            .map_err(|e| anyhow!("add {}: {e}", file.display()))?;
        let root = HashAndFormat::raw(added.hash);
        let mut addr = EndpointAddr::new(provider.id());
        for a in causeway::endpoint::advertised_addrs(&provider) {
            addr = addr.with_ip_addr(a);
        }
        let t = Instant::now();
        let conn = receiver
            .connect(addr, iroh_blobs::ALPN)
            .await
            .map_err(|e| anyhow!("connect to the provider: {e}"))?;
        let got = receiver_store
            .remote()
            .fetch(conn.clone(), root)
            .complete()
            .await
            .map_err(|e| anyhow!("fetch: {e}"))?;
        let elapsed = t.elapsed();
        conn.close(0u32.into(), b"done");
        ensure!(
            got.payload_bytes_read == len as u64,
            "fetched {} bytes of {len}",
            got.payload_bytes_read
        );
        let local = receiver_store
            .remote()
            .local(root)
            .await
            .map_err(|e| anyhow!("local: {e}"))?;
        ensure!(local.is_complete(), "the blob is incomplete after the fetch");
        Ok(elapsed)
    }
    .await;
    let _ = router.shutdown().await;
    receiver.close().await;
    let _ = provider_store.shutdown().await;
    let _ = receiver_store.shutdown().await;
    std::fs::remove_dir_all(dir)?;
    result
}

/// Registers `file` at `a` as the artifact `name`, publishes and shares it with `b`, then times
/// `b`'s `sync_pull` (catalog query, fetch, the mirror's file written, the mirror recorded), and
/// then the export that wrote the mirror's file once more on its own.
async fn causeway_pull(pair: &Pair, name: &str, file: &Path, len: usize) -> Result<(Duration, Duration)> {
    pair.a
        .register_resource(RegisterResource {
            name: name.into(),
            kind: "artifact".into(),
            owner: "bench".into(),
            path: Some(path_str(file)?.to_string()),
            metadata: Default::default(),
            on_register: causeway::OnRegister::RecordOnly,
        })
        .await?;
    pair.a.publish(name, None).await?;
    pair.a.share(name, TO_B, ShareMode::Pull, true).await?;
    let t = Instant::now();
    let mirror = pair.b.sync_pull(name, TO_A).await?;
    let elapsed = t.elapsed();
    ensure!(
        mirror.version == 1,
        "the mirror of {name} is at version {}",
        mirror.version
    );
    let origin = origin(mirror.mirror_of.as_deref(), name)?;
    let copy = causeway::transfer::mirror_path(pair.b.data_dir(), &origin, name, "artifact");
    let copied = std::fs::metadata(&copy)?.len();
    ensure!(copied == len as u64, "the mirror's file has {copied} bytes of {len}");
    let root = parse_root(mirror.content.as_deref().unwrap_or_default())?;
    let again = copy.with_extension("again");
    let t = Instant::now();
    pair.b.content().export_blob(root, &again).await?;
    let export = t.elapsed();
    std::fs::remove_file(&again)?;
    Ok((elapsed, export))
}

fn origin(mirror_of: Option<&str>, name: &str) -> Result<ClusterId> {
    mirror_of
        .ok_or_else(|| anyhow!("{name} at b is not a mirror"))?
        .parse()
        .map_err(|e| anyhow!("mirror origin: {e}"))
}

/// Publishes at `a` (the clock starts just before) and waits until `b`'s catalog records that
/// version. Returns the whole time and the publish's.
async fn publish_and_wait(pair: &Pair) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let version = pair.a.publish(LATENCY_RESOURCE, None).await?.version;
    let published = t.elapsed();
    poll_until(
        &format!("version {version} of {LATENCY_RESOURCE} at b"),
        LATENCY_POLL,
        LATENCY_DEADLINE,
        || async move {
            let r = pair.b.show_resource(LATENCY_RESOURCE).await.ok()?;
            (r.version >= version).then_some(())
        },
    )
    .await?;
    Ok((t.elapsed(), published))
}

/// Registers, publishes, shares and first-syncs the latency resource (untimed).
async fn first_sync(pair: &Pair, kind: &str, path: &Path) -> Result<ClusterId> {
    pair.a
        .register_resource(RegisterResource {
            name: LATENCY_RESOURCE.into(),
            kind: kind.into(),
            owner: "bench".into(),
            path: Some(path_str(path)?.to_string()),
            metadata: Default::default(),
            on_register: causeway::OnRegister::RecordOnly,
        })
        .await?;
    if kind == "forge/repo" {
        remove_publish_hook(path)?;
    }
    pair.a.publish(LATENCY_RESOURCE, None).await?;
    pair.a.share(LATENCY_RESOURCE, TO_B, ShareMode::Pull, true).await?;
    let mirror = pair.b.sync_pull(LATENCY_RESOURCE, TO_A).await?;
    origin(mirror.mirror_of.as_deref(), LATENCY_RESOURCE)
}

/// A commit pushed into a bare repository at `a`, then published (what its post-receive hook
/// would do), until `b`'s mirror has it.
async fn latency_git(pair: &Pair, dir: &Path, rounds: usize) -> Result<Vec<(Duration, Duration)>> {
    let origin_repo = dir.join("latency.git");
    let work = dir.join("latency-work");
    std::fs::create_dir_all(&work)?;
    let commit = |work: &Path, round: usize| -> Result<()> {
        std::fs::write(work.join("VERSION"), format!("{round} {}\n", rand::random::<u64>()))?;
        git(Some(work), &["add", "."])?;
        git(Some(work), &["commit", "-q", "-m", &format!("round {round}")])?;
        Ok(())
    };
    git(None, &["init", "-q", "--bare", path_str(&origin_repo)?])?;
    git(Some(&work), &["init", "-q"])?;
    commit(&work, 0)?;
    git(Some(&work), &["remote", "add", "origin", path_str(&origin_repo)?])?;
    git(Some(&work), &["push", "-q", "origin", "main"])?;
    let cluster = first_sync(pair, "forge/repo", &origin_repo).await?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        commit(&work, round)?;
        git(Some(&work), &["push", "-q", "origin", "main"])?;
        samples.push(publish_and_wait(pair).await?);
    }
    let mirror = causeway::transfer::mirror_path(pair.b.data_dir(), &cluster, LATENCY_RESOURCE, "forge/repo");
    ensure!(
        causeway_sync::git::refs(&mirror)? == causeway_sync::git::refs(&origin_repo)?,
        "b's mirror does not have the last commit"
    );
    Ok(samples)
}

/// An artifact rewritten and published at `a`, until `b`'s mirror has the new version.
async fn latency_artifact(pair: &Pair, dir: &Path, rounds: usize) -> Result<Vec<(Duration, Duration)>> {
    let file = dir.join("latency.bin");
    write_random_file(&file, LATENCY_ARTIFACT_BYTES)?;
    first_sync(pair, "artifact", &file).await?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        write_random_file(&file, LATENCY_ARTIFACT_BYTES)?;
        samples.push(publish_and_wait(pair).await?);
    }
    Ok(samples)
}
