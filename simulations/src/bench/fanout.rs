//! `fanout`: one origin cluster linked both ways with many single-node peer clusters on
//! loopback, all in this process. Each round publishes a new version of a resource the origin
//! shares with every linked cluster and times it until the last peer's replicated view of the
//! origin's catalog (what `catalog ORIGIN --cached` shows there) records that version. The
//! baseline in the same run is the same round with one linked peer: the notify path of a single
//! link (the part of a push reaching a peer's mirror that comes before the pull).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use causeway::{Node, ShareMode, api::RegisterResource, federation::health::LinkState};
use serde::Serialize;
use tokio::task::JoinSet;

use super::cluster::LocalCluster;
use super::common::{self, Align, Table, at_most, poll_until, stats};
use super::measure::Stats;
use super::report::Goal;

/// The figure the goal is about: p99 at the largest number of peers.
const GOAL_P99_MS: f64 = 1000.0;
/// The name every peer gives its link to the origin.
const TO_ORIGIN: &str = "origin";
const RESOURCE: &str = "fanout";
/// Clusters formed at the same time while setting up.
const FORM_CONCURRENCY: usize = 8;
/// How long links may take to become active (handshakes, first heartbeats) after adding them.
const LINK_DEADLINE: Duration = Duration::from_secs(120);
/// A version that has not reached every peer after this failed to.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// A waiter re-reads its peer's view at least this often even if no applied entry woke it.
const VIEW_RECHECK: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(50);

/// How many peers and rounds.
#[derive(Clone, Debug)]
pub struct FanoutPlan {
    /// Numbers of linked peers, measured in increasing order (links are added, never removed).
    pub sizes: Vec<usize>,
    /// Timed rounds per size, after one untimed round.
    pub rounds: usize,
}

impl FanoutPlan {
    pub fn full() -> Self {
        FanoutPlan {
            sizes: vec![20, 50, 100],
            rounds: 30,
        }
    }

    pub fn quick() -> Self {
        FanoutPlan {
            sizes: vec![5, 10],
            rounds: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    /// One linked peer: the in-run baseline.
    pub baseline: FanoutRow,
    pub rows: Vec<FanoutRow>,
    pub goal: Goal,
}

/// The rounds at one number of linked peers.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutRow {
    pub peers: usize,
    /// From the publish at the origin until the last peer's view records the version.
    #[serde(flatten)]
    pub last: Stats,
    /// Until the first peer's view records it.
    pub first: Stats,
    /// The origin's `publish` alone (its Raft commit).
    pub publish: Stats,
    pub p50_vs_one: f64,
    pub p99_vs_one: f64,
}

impl FanoutReport {
    pub fn goals(&self) -> impl Iterator<Item = &Goal> {
        std::iter::once(&self.goal)
    }

    pub fn table(&self, mode: &str, dir: &str) -> String {
        let mut out = common::heading(
            "federation fan-out: a new version at the origin → every linked peer's view (loopback, same run)",
            mode,
            dir,
        );
        let mut t = Table::new(&[
            ("linked peers", Align::Right),
            ("rounds", Align::Right),
            ("last peer p50", Align::Right),
            ("last peer p99", Align::Right),
            ("first peer p50", Align::Right),
            ("publish p50", Align::Right),
            ("p50 vs 1 peer", Align::Right),
            ("p99 vs 1 peer", Align::Right),
            ("goal", Align::Left),
        ]);
        let largest = self.rows.last().map(|r| r.peers);
        for (i, r) in std::iter::once(&self.baseline).chain(&self.rows).enumerate() {
            let goal = if i == 0 {
                "baseline".to_string()
            } else if Some(r.peers) == largest && i == self.rows.len() {
                common::goal(Some(&self.goal))
            } else {
                String::new()
            };
            t.row(vec![
                r.peers.to_string(),
                r.last.count.to_string(),
                common::ms(r.last.p50_ms),
                common::ms(r.last.p99_ms),
                common::ms(r.first.p50_ms),
                common::ms(r.publish.p50_ms),
                common::times(r.p50_vs_one),
                common::times(r.p99_vs_one),
                goal,
            ]);
        }
        out.push_str(&t.render());
        out.push_str(
            "(timed from the publish at the origin until each peer's replicated view of the origin's catalog records the version; every peer is a single-node cluster in this process)\n\n",
        );
        let (met, total) = common::tally(self.goals());
        out.push_str(&common::goals_line(met, total));
        out
    }
}

/// Forms the clusters under `root`, links them in steps and times the rounds. Every cluster is
/// shut down again whatever happens. Progress goes to stderr.
pub async fn measure(plan: &FanoutPlan, root: &Path) -> Result<FanoutReport> {
    let mut sizes = plan.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.retain(|&n| n > 1);
    let most = sizes.last().copied().unwrap_or(1);
    eprintln!("fanout: forming {} single-node clusters", most + 1);
    let dir = root.join("fanout");
    std::fs::create_dir_all(&dir)?;
    let mut clusters = Vec::new();
    let formed = form_clusters(&dir, most + 1, &mut clusters).await;
    let result = match formed {
        Ok(()) => run_rounds(plan, &sizes, &clusters).await,
        Err(e) => Err(e),
    };
    eprintln!("fanout: stopping {} clusters", clusters.len());
    // All at once: closing an endpoint can wait up to 3 s for its peers to acknowledge.
    let mut stopping = JoinSet::new();
    for mut c in clusters {
        stopping.spawn(async move { c.shutdown().await });
    }
    while stopping.join_next().await.is_some() {}
    // A hundred nodes' stores are worth freeing before the next benchmark.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("fanout: could not remove {}: {e}", dir.display());
    }
    result
}

/// Forms `count` clusters (`dir/c<i>`), a few at a time, into `out` (also on failure, so the
/// caller can stop the ones that started).
async fn form_clusters(dir: &Path, count: usize, out: &mut Vec<LocalCluster>) -> Result<()> {
    let mut pending = (0..count).map(|i| (i, dir.to_path_buf()));
    let mut running: JoinSet<(usize, Result<LocalCluster>)> = JoinSet::new();
    let mut formed: Vec<(usize, LocalCluster)> = Vec::with_capacity(count);
    let mut first_error = None;
    loop {
        while running.len() < FORM_CONCURRENCY && first_error.is_none() {
            let Some((i, d)) = pending.next() else { break };
            running.spawn(async move { (i, LocalCluster::start(&d, &format!("c{i}"), 1).await) });
        }
        let Some(done) = running.join_next().await else { break };
        match done {
            Ok((i, Ok(c))) => formed.push((i, c)),
            Ok((i, Err(e))) => {
                first_error.get_or_insert(e.context(format!("forming cluster c{i}")));
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("a cluster's setup panicked: {e}"));
            }
        }
    }
    formed.sort_by_key(|(i, _)| *i);
    out.extend(formed.into_iter().map(|(_, c)| c));
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn run_rounds(plan: &FanoutPlan, sizes: &[usize], clusters: &[LocalCluster]) -> Result<FanoutReport> {
    let nodes: Vec<Node> = clusters.iter().map(|c| c.leader().cloned()).collect::<Result<_>>()?;
    let (origin, peers) = nodes.split_first().ok_or_else(|| anyhow!("no origin"))?;
    origin
        .register_resource(RegisterResource {
            name: RESOURCE.into(),
            kind: "artifact".into(),
            owner: "bench".into(),
            path: None,
            metadata: Default::default(),
            on_register: causeway::OnRegister::RecordOnly,
        })
        .await?;
    origin.share(RESOURCE, "linked", ShareMode::Pull, true).await?;
    let rounds = plan.rounds.max(1);
    let mut linked = 0;
    let mut rows = Vec::new();
    for &size in std::iter::once(&1).chain(sizes) {
        let size = size.min(peers.len());
        eprintln!("fanout: linking {} more peers ({size} in all)", size - linked);
        link(origin, &peers[linked..size], linked).await?;
        linked = size;
        eprintln!("fanout: {rounds} rounds with {size} linked peers");
        rows.push(time_rounds(origin, &peers[..size], rounds).await?);
    }
    let mut rows = rows.into_iter();
    let baseline = rows.next().ok_or_else(|| anyhow!("no baseline row"))?;
    let rows: Vec<FanoutRow> = rows
        .map(|mut r| {
            r.p50_vs_one = r.last.p50_ms / baseline.last.p50_ms;
            r.p99_vs_one = r.last.p99_ms / baseline.last.p99_ms;
            r
        })
        .collect();
    let at = rows.last().unwrap_or(&baseline);
    let goal = at_most(
        format!("p99 at {} peers ≤ {GOAL_P99_MS} ms", at.peers),
        GOAL_P99_MS,
        "ms",
        at.last.p99_ms,
    );
    Ok(FanoutReport { baseline, rows, goal })
}

/// Links the origin with each of `peers` both ways (the origin names them `p<index>`) and waits
/// until every new link is active at both ends with the peer's card pinned.
async fn link(origin: &Node, peers: &[Node], first_index: usize) -> Result<()> {
    for (i, peer) in peers.iter().enumerate() {
        let name = peer_link(first_index + i);
        origin
            .link_add(peer.endpoint_id(), peer.addrs(), Some(name.clone()))
            .await
            .with_context(|| format!("origin: link add {name}"))?;
        peer.link_add(origin.endpoint_id(), origin.addrs(), Some(TO_ORIGIN.into()))
            .await
            .with_context(|| format!("{name}: link add origin"))?;
    }
    let wanted: Vec<String> = (first_index..first_index + peers.len()).map(peer_link).collect();
    poll_until("the origin's new links to become active", POLL, LINK_DEADLINE, || {
        let wanted = &wanted;
        async move {
            let links = origin.link_list().await.ok()?;
            wanted
                .iter()
                .all(|w| links.iter().any(|l| is_active(l, w)))
                .then_some(())
        }
    })
    .await?;
    for peer in peers {
        poll_until(
            "a peer's link to the origin to become active",
            POLL,
            LINK_DEADLINE,
            || async move {
                let links = peer.link_list().await.ok()?;
                links.iter().any(|l| is_active(l, TO_ORIGIN)).then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

fn peer_link(i: usize) -> String {
    format!("p{i}")
}

fn is_active(l: &causeway::federation::LinkView, name: &str) -> bool {
    l.name == name && l.direction == "outbound" && l.state == LinkState::Active && l.peer.is_some()
}

/// One untimed round (it also brings newly linked peers' views up to date), then `rounds` timed.
async fn time_rounds(origin: &Node, peers: &[Node], rounds: usize) -> Result<FanoutRow> {
    let mut last = Vec::with_capacity(rounds);
    let mut first = Vec::with_capacity(rounds);
    let mut publish = Vec::with_capacity(rounds);
    let started = Instant::now();
    for round in 0..=rounds {
        let (to_last, to_first, published) = one_round(origin, peers).await?;
        if round > 0 {
            last.push(to_last);
            first.push(to_first);
            publish.push(published);
        }
    }
    let elapsed = started.elapsed();
    Ok(FanoutRow {
        peers: peers.len(),
        last: stats(last, elapsed),
        first: stats(first, elapsed),
        publish: stats(publish, elapsed),
        p50_vs_one: 1.0,
        p99_vs_one: 1.0,
    })
}

/// Publishes the next version at the origin and waits until every peer's view records it.
/// Returns the time to the last peer, to the first peer, and of the publish alone.
async fn one_round(origin: &Node, peers: &[Node]) -> Result<(Duration, Duration, Duration)> {
    let version = origin.show_resource(RESOURCE).await?.version + 1;
    let start = Instant::now();
    let mut waiters = JoinSet::new();
    for peer in peers {
        let peer = peer.clone();
        waiters.spawn(async move { wait_for_version(&peer, version, start).await });
    }
    let published = origin.publish(RESOURCE, None).await;
    let publish_time = start.elapsed();
    let outcome = async {
        let got = published?.version;
        if got != version {
            bail!("the origin published version {got}, expected {version}");
        }
        let mut arrivals = Vec::with_capacity(peers.len());
        while let Some(done) = waiters.join_next().await {
            arrivals.push(done.map_err(|e| anyhow!("a waiter failed: {e}"))??);
        }
        let to_last = arrivals.iter().max().copied().unwrap_or_default();
        let to_first = arrivals.iter().min().copied().unwrap_or_default();
        Ok((to_last, to_first, publish_time))
    }
    .await;
    waiters.abort_all();
    outcome
}

/// Waits until `peer`'s view of the origin's catalog records `version`; returns the time since
/// `start`. Woken by every entry the peer applies (that is how the view changes), and re-reads
/// now and then besides.
async fn wait_for_version(peer: &Node, version: u64, start: Instant) -> Result<Duration> {
    let deadline = start + ROUND_DEADLINE;
    loop {
        // Read before the view: an entry applied from here on ends the wait below.
        let applied = peer.cluster().local_status().applied_index;
        let seen = peer
            .federation()
            .cached_peer_catalog(TO_ORIGIN)?
            .iter()
            .any(|e| e.name == RESOURCE && e.version >= version);
        if seen {
            return Ok(start.elapsed());
        }
        if Instant::now() >= deadline {
            bail!(
                "version {version} did not reach {} within {ROUND_DEADLINE:?}",
                peer.endpoint_id()
            );
        }
        // Times out after VIEW_RECHECK, which is fine: the view is read again either way.
        let _ = peer.cluster().wait_applied(applied + 1, VIEW_RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three peers, two rounds: it must run, produce figures and remove its data dirs. Figures
    /// are not checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_fanout_runs_and_reports_figures() {
        let plan = FanoutPlan {
            sizes: vec![3],
            rounds: 2,
        };
        let dir = tempfile::tempdir().unwrap();
        let report = measure(&plan, dir.path()).await.unwrap();
        assert_eq!(report.baseline.peers, 1);
        assert_eq!(report.rows.iter().map(|r| r.peers).collect::<Vec<_>>(), [3]);
        for r in std::iter::once(&report.baseline).chain(&report.rows) {
            assert_eq!((r.last.count, r.first.count, r.publish.count), (2, 2, 2));
            assert!(r.last.p50_ms.is_finite() && r.last.p99_ms >= r.first.p50_ms.min(r.last.p99_ms));
        }
        assert!(report.rows[0].p50_vs_one.is_finite());
        assert!(report.goal.rule.contains("3 peers"), "{}", report.goal.rule);
        let table = report.table("test", "dir");
        assert!(table.contains("linked peers") && table.contains("goals met"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["baseline"]["p50_ms"].is_number());
        assert!(
            !dir.path().join("fanout").exists(),
            "the nodes' data dirs are left behind"
        );
    }
}
