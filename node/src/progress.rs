//! The CLI's progress display for long requests (a sync's transfer, the import of a large file
//! or directory): a bar with bytes, rate and ETA when stderr is a terminal (a spinner with bytes
//! and rate while the total is unknown), plain lines otherwise. It shows samples of
//! `(state, bytes done, total if known)`; [`transfer_samples`] and [`import_samples`] read them
//! from the daemon, and any other stream of [`Sample`]s can be shown with [`Follower`].

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::Client;

/// How often the samples are read from the daemon.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// At most one plain line this often while only the byte count moves.
pub const PLAIN_LINE_EVERY: Duration = Duration::from_secs(1);
/// How often the spinner turns while the total is unknown.
const SPINNER_TICK: Duration = Duration::from_millis(120);

const BAR_TEMPLATE: &str = "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const SPINNER_TEMPLATE: &str = "{spinner} {prefix}: {msg} {bytes} {binary_bytes_per_sec}";

/// How far an operation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// What it is doing ("transferring", "stalled", "importing").
    pub state: String,
    pub done: u64,
    /// `None` while unknown: never shown as 0.
    pub total: Option<u64>,
}

impl Sample {
    /// Percent done, only with a known, non-zero total.
    pub fn percent(&self) -> Option<u64> {
        let total = self.total.filter(|t| *t > 0)?;
        Some((u128::from(self.done.min(total)) * 100 / u128::from(total)) as u64)
    }
}

/// One plain line: `NAME: STATE DONE / TOTAL bytes (P%)`, or `NAME: STATE DONE bytes` while the
/// total is unknown.
pub fn plain_line(label: &str, s: &Sample) -> String {
    match (s.total, s.percent()) {
        (Some(total), Some(pct)) => format!("{label}: {} {} / {total} bytes ({pct}%)", s.state, s.done),
        (Some(total), None) => format!("{label}: {} {} / {total} bytes", s.state, s.done),
        (None, _) => format!("{label}: {} {} bytes", s.state, s.done),
    }
}

/// When a plain line is due: on a change of state or of the total at once, otherwise at most
/// every [`PLAIN_LINE_EVERY`] and only when the bytes moved.
#[derive(Debug, Default)]
struct PlainLines {
    last: Option<(Sample, Instant)>,
}

impl PlainLines {
    fn next_line(&mut self, label: &str, s: &Sample, now: Instant) -> Option<String> {
        let due = match &self.last {
            None => true,
            Some((prev, at)) => {
                prev.state != s.state
                    || prev.total != s.total
                    || (prev.done != s.done && now.duration_since(*at) >= PLAIN_LINE_EVERY)
            }
        };
        if !due {
            return None;
        }
        self.last = Some((s.clone(), now));
        Some(plain_line(label, s))
    }
}

enum Output {
    Bar { bar: ProgressBar, sized: bool },
    Lines(PlainLines),
}

/// Shows one operation's samples on stderr.
pub struct Display {
    label: String,
    out: Output,
}

impl Display {
    /// A bar when `terminal`, plain lines otherwise.
    pub fn new(label: &str, terminal: bool) -> Self {
        let out = if terminal {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(SPINNER_TEMPLATE));
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(SPINNER_TICK);
            Output::Bar { bar, sized: false }
        } else {
            Output::Lines(PlainLines::default())
        };
        Self {
            label: label.to_string(),
            out,
        }
    }

    /// A bar if stderr is a terminal.
    pub fn for_stderr(label: &str) -> Self {
        Self::new(label, std::io::stderr().is_terminal())
    }

    pub fn show(&mut self, s: &Sample) {
        match &mut self.out {
            Output::Bar { bar, sized } => {
                match s.total {
                    Some(total) => {
                        if !*sized {
                            bar.disable_steady_tick();
                            bar.set_style(style(BAR_TEMPLATE));
                            *sized = true;
                        }
                        bar.set_length(total.max(s.done));
                    }
                    None if *sized => {
                        bar.unset_length();
                        bar.set_style(style(SPINNER_TEMPLATE));
                        bar.enable_steady_tick(SPINNER_TICK);
                        *sized = false;
                    }
                    None => {}
                }
                bar.set_message(s.state.clone());
                bar.set_position(s.done);
            }
            Output::Lines(lines) => {
                if let Some(line) = lines.next_line(&self.label, s, Instant::now()) {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Clears the bar (the caller prints the outcome).
    pub fn finish(self) {
        if let Output::Bar { bar, .. } = self.out {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Shows a stream of samples on stderr in the background until [`Follower::stop`].
pub struct Follower {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    pub fn start(label: &str, samples: impl Stream<Item = Sample> + Send + 'static) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let label = label.to_string();
        let task = tokio::spawn(async move {
            let mut display: Option<Display> = None;
            let mut samples = std::pin::pin!(samples);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    next = samples.next() => match next {
                        // Nothing is drawn until there is something to show.
                        Some(s) => display.get_or_insert_with(|| Display::for_stderr(&label)).show(&s),
                        None => {
                            let _ = (&mut stopped).await;
                            break;
                        }
                    },
                }
            }
            if let Some(d) = display {
                d.finish();
            }
        });
        Self { stop, task }
    }

    /// Stops showing and clears the bar.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Polls `read` every [`POLL_INTERVAL`], yielding the samples it finds.
fn poll_samples<F>(client: Client, read: F) -> impl Stream<Item = Sample> + Send + 'static
where
    F: for<'a> Fn(&'a mut Client) -> futures::future::BoxFuture<'a, Option<Sample>> + Send + Sync + 'static,
{
    futures::stream::unfold((client, read), |(mut client, read)| async move {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            if let Some(s) = read(&mut client).await {
                return Some((s, (client, read)));
            }
        }
    })
}

/// The pull of `name` as `sync status` reports it, while bytes move.
pub fn transfer_samples(client: Client, name: String) -> impl Stream<Item = Sample> + Send + 'static {
    use causeway_sync::status::{Direction, TransferState};
    poll_samples(client, move |c| {
        let name = name.clone();
        Box::pin(async move {
            let rows = c.sync_status().await.ok()?;
            let t = rows.into_iter().find(|r| {
                r.resource == name
                    && r.direction == Direction::Pull
                    && matches!(r.state, TransferState::Transferring | TransferState::Stalled)
            })?;
            Some(Sample {
                state: t.state.to_string(),
                done: t.bytes_done,
                total: t.bytes_total_known.then_some(t.bytes_total),
            })
        })
    })
}

/// The import of resource `name`'s content on the node `client` talks to, while it runs.
pub fn import_samples(client: Client, name: String) -> impl Stream<Item = Sample> + Send + 'static {
    poll_samples(client, move |c| {
        let name = name.clone();
        Box::pin(async move {
            let v = c.import_status(&name).await.ok()??;
            Some(Sample {
                state: "importing".into(),
                done: v.bytes_done,
                total: Some(v.bytes_total),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(state: &str, done: u64, total: Option<u64>) -> Sample {
        Sample {
            state: state.into(),
            done,
            total,
        }
    }

    #[test]
    fn an_unknown_total_is_never_shown_as_zero() {
        let line = plain_line("model", &sample("transferring", 39_600_128, None));
        assert_eq!(line, "model: transferring 39600128 bytes");
        assert!(!line.contains("/ 0") && !line.contains('%'), "{line}");
    }

    #[test]
    fn percent_only_with_a_known_total() {
        assert_eq!(sample("x", 5, None).percent(), None);
        assert_eq!(sample("x", 0, Some(0)).percent(), None);
        assert_eq!(sample("x", 25, Some(100)).percent(), Some(25));
        // More done than the total (a late total) reads 100%, never more.
        assert_eq!(sample("x", 150, Some(100)).percent(), Some(100));
        assert_eq!(sample("x", u64::MAX, Some(u64::MAX)).percent(), Some(100));
        assert_eq!(
            plain_line("model", &sample("transferring", 25, Some(100))),
            "model: transferring 25 / 100 bytes (25%)"
        );
        assert_eq!(
            plain_line("empty", &sample("importing", 0, Some(0))),
            "empty: importing 0 / 0 bytes"
        );
    }

    #[test]
    fn plain_lines_on_changes_and_at_most_once_a_second_otherwise() {
        let mut lines = PlainLines::default();
        let t0 = Instant::now();
        assert!(lines.next_line("m", &sample("transferring", 1, None), t0).is_some());
        // Bytes moved, but within the second: nothing.
        assert!(
            lines
                .next_line("m", &sample("transferring", 2, None), t0 + Duration::from_millis(300))
                .is_none()
        );
        // The total became known: at once.
        let l = lines.next_line(
            "m",
            &sample("transferring", 2, Some(10)),
            t0 + Duration::from_millis(400),
        );
        assert_eq!(l.as_deref(), Some("m: transferring 2 / 10 bytes (20%)"));
        // Nothing moved for a while: nothing new to say.
        assert!(
            lines
                .next_line("m", &sample("transferring", 2, Some(10)), t0 + Duration::from_secs(5))
                .is_none()
        );
        assert!(
            lines
                .next_line("m", &sample("transferring", 3, Some(10)), t0 + Duration::from_secs(6))
                .is_some()
        );
        // A change of state: at once.
        assert!(
            lines
                .next_line("m", &sample("stalled", 3, Some(10)), t0 + Duration::from_secs(6))
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_follower_shows_samples_until_stopped() {
        let samples = futures::stream::iter(vec![sample("importing", 1, Some(2))]);
        let f = Follower::start("x", samples);
        tokio::time::timeout(Duration::from_secs(5), f.stop())
            .await
            .expect("stops");
    }
}
