//! What the catalog, sync and git benches share: latency figures from samples, goals, the
//! process's memory, and the plain-text table (also used by the raft bench's report).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::measure::Stats;
use super::report::Goal;

const MIB: f64 = (1u64 << 20) as f64;

/// Latency percentiles and rate of a series of samples taken over `elapsed`.
pub fn stats(samples: Vec<Duration>, elapsed: Duration) -> Stats {
    Stats::new(samples, elapsed)
}

/// The median of a few timed runs (the lower middle one for an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// A goal that holds when the figure is at most `limit`.
pub fn at_most(rule: String, limit: f64, unit: &'static str, figure: f64) -> Goal {
    Goal {
        rule,
        limit,
        unit,
        met: figure <= limit,
    }
}

/// A goal that holds when the figure is at least `limit`.
pub fn at_least(rule: String, limit: f64, unit: &'static str, figure: f64) -> Goal {
    Goal {
        rule,
        limit,
        unit,
        met: figure >= limit,
    }
}

/// (met, total) over some goals.
pub fn tally<'a>(goals: impl IntoIterator<Item = &'a Goal>) -> (usize, usize) {
    goals
        .into_iter()
        .fold((0, 0), |(met, total), g| (met + usize::from(g.met), total + 1))
}

/// This process's resident set size (`VmRSS` in /proc/self/status), if the system reports it,
/// after the allocators have handed their free memory back: otherwise RSS would go on counting
/// memory that an earlier benchmark freed and nothing uses (mimalloc keeps it a while for reuse,
/// see `causeway::allocator::PURGE_DELAY`).
pub fn rss_bytes() -> Option<u64> {
    trim_heap();
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Hands the allocators' free memory back to the system: mimalloc's (Rust's allocations) and
/// glibc's (C libraries'), which keep it otherwise.
fn trim_heap() {
    causeway::allocator::release_all();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lets the next benchmark start from a quiet process and disk: the memory the previous one
/// freed goes back to the system (a process that still maps it pays for that on every `fork`,
/// and the node forks `git`), and every dirty page is written out (`sync(2)`), so it does not
/// pay for the previous one's write-back with slower fsyncs of its own.
pub async fn settle() {
    trim_heap();
    #[cfg(unix)]
    // SAFETY: sync(2) takes no arguments and cannot fail.
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
}

/// Polls `done` every `every` until it yields a value, failing after `deadline`.
pub async fn poll_until<T, F, Fut>(what: &str, every: Duration, deadline: Duration, mut done: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = done().await {
            return Ok(v);
        }
        if Instant::now() >= until {
            bail!("waited {deadline:?} for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Writes `len` random (incompressible) bytes to `path`.
pub fn write_random_file(path: &Path, len: usize) -> Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        rand::fill(&mut chunk[..n]);
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// A duration in milliseconds, in microseconds below one millisecond.
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 1.0 {
        format!("{:.1} µs", v * 1e3)
    } else if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub fn secs(v: f64) -> String {
    if v.is_nan() { "-".into() } else { format!("{v:.2} s") }
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB)
}

pub fn mib_per_sec(bytes: f64, secs: f64) -> f64 {
    if secs > 0.0 { bytes / MIB / secs } else { f64::NAN }
}

pub fn rate(v: f64) -> String {
    if v.is_finite() { format!("{v:.0}") } else { "-".into() }
}

pub fn times(v: f64) -> String {
    if v.is_finite() { format!("{v:.2}×") } else { "-".into() }
}

pub fn goal(g: Option<&Goal>) -> String {
    let Some(g) = g else { return String::new() };
    let limit = match g.unit {
        "ms" => ms(g.limit),
        "s" => secs(g.limit),
        "MiB" => mib(g.limit * MIB),
        "MiB/s" => format!("{:.1} MiB/s", g.limit),
        unit => format!("{} {unit}", rate(g.limit)),
    };
    let verdict = if g.met { "✓ met" } else { "✗ missed" };
    format!("{} = {limit}: {verdict}", g.rule)
}

#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

/// Columns sized to their widest cell; widths count characters, as '×' and '≤' are one column
/// but several bytes.
pub struct Table {
    header: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[(&str, Align)]) -> Self {
        Table {
            header: header.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| width(c))
                    .chain([width(h)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.header.iter().map(|(h, _)| h.clone()).collect();
        let mut out = String::new();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = " ".repeat(widths[i].saturating_sub(width(cell)));
                if i > 0 {
                    line.push_str("  ");
                }
                match self.header[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The heading every section's table starts with, as the raft bench's does.
pub fn heading(title: &str, mode: &str, dir: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("causeway bench — {title}\n{mode} run, {cpus} cpus, data in {dir}\n\n")
}

/// The closing line of a section.
pub fn goals_line(met: usize, total: usize) -> String {
    format!("goals met: {met} of {total}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_units() {
        let ms_ = Duration::from_millis;
        assert_eq!(median(vec![ms_(3), ms_(1), ms_(2)]), ms_(2));
        assert_eq!(median(vec![ms_(4), ms_(1), ms_(2), ms_(3)]), ms_(2));
        assert_eq!(median(Vec::new()), Duration::ZERO);
        assert_eq!(ms(0.0123), "12.3 µs");
        assert_eq!(ms(3.0), "3.00 ms");
        assert_eq!(mib(3.0 * MIB), "3.0 MiB");
        let s = stats((1..=100).map(ms_).collect(), Duration::from_secs(1));
        assert_eq!((s.count, s.p50_ms, s.p99_ms), (100, 50.0, 99.0));
    }
}
