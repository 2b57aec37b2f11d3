//! Caps on what peers can make this node hold on `causeway/fed/1`: connections in total and per
//! endpoint, concurrent streams per connection, request bytes being received (which grow only
//! as they arrive, under a deadline), and how many change notifications a peer can turn into
//! Raft writes. Anyone can complete the handshake with a self-made cluster key, so none of
//! this may depend on the peer's good will.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use causeway_proto::{
    ClusterId, EndpointKey,
    fed::{FedRequest, MAX_FED_FRAME},
    frame::{self, BodyBuf},
};
use causeway_raft::wire;
use iroh::endpoint::RecvStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Federation connections held at once, from everyone.
pub const MAX_FED_CONNECTIONS: usize = 256;
/// Federation connections held at once from one endpoint (a peer's leader keeps one session;
/// queries and write-backs open short-lived ones).
pub const MAX_FED_CONNECTIONS_PER_ENDPOINT: usize = 8;
/// Requests served at once on one connection; further streams are refused until one ends.
pub const MAX_STREAMS_PER_CONNECTION: usize = 16;
/// Largest request from a cluster we do not link to: it gets the public view only, whose
/// largest request is a card update (at most `MAX_CARD_BYTES`).
pub const MAX_UNLINKED_FRAME: usize = 32 << 10;
/// Request bytes (announced lengths) received and being served at once, over all peers.
pub const MAX_INFLIGHT_REQUEST_BYTES: usize = 64 << 20;
/// How long a request may take to arrive whole once its stream is open (the sender's own
/// deadline, `session::REQUEST_TIMEOUT`, is shorter).
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the peer may take to read our answer.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Change notifications a peer may send in a burst before being held to the rate below.
pub const NOTIFY_BURST: f64 = 20.0;
/// Change notifications (Raft writes) per second a peer may cause over time.
pub const NOTIFY_PER_SEC: f64 = 5.0;
/// Longest a notification waits for its turn before it is refused (the sender then folds more
/// changes into its next one, or the periodic resync repairs the view).
pub const NOTIFY_MAX_WAIT: Duration = Duration::from_secs(2);
/// Peers whose notification rate is tracked; past it, idle entries are dropped.
const MAX_NOTIFY_PEERS: usize = 1024;

/// QUIC close code for a connection over the caps.
pub const CLOSE_BUSY: u32 = 429;
/// QUIC stream error code for a stream over the per-connection cap.
pub const STREAM_REFUSED: u32 = 429;

#[derive(Default)]
struct ConnCounts {
    total: usize,
    per_endpoint: HashMap<EndpointKey, usize>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The live counters behind the caps (per node, in memory).
pub(crate) struct FedLimits {
    conns: Arc<Mutex<ConnCounts>>,
    inflight: Arc<Semaphore>,
    notify: Mutex<HashMap<ClusterId, Bucket>>,
    /// Whether a catalog resync is running (a slow peer must not make them pile up).
    resyncing: Arc<AtomicBool>,
}

/// The one catalog resync running, until dropped.
pub(crate) struct ResyncGuard(Arc<AtomicBool>);

impl Drop for ResyncGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Default for FedLimits {
    fn default() -> Self {
        Self {
            conns: Arc::default(),
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_REQUEST_BYTES)),
            notify: Mutex::new(HashMap::new()),
            resyncing: Arc::default(),
        }
    }
}

/// One connection counted against the caps until dropped.
pub(crate) struct ConnSlot {
    conns: Arc<Mutex<ConnCounts>>,
    remote: EndpointKey,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.conns);
        c.total -= 1;
        if let Some(n) = c.per_endpoint.get_mut(&self.remote) {
            *n -= 1;
            if *n == 0 {
                c.per_endpoint.remove(&self.remote);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request read whole, with its share of the in-flight byte budget (held while it is served).
pub(crate) struct Request {
    pub req: FedRequest,
    _budget: OwnedSemaphorePermit,
}

/// Why a request was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("bad request: {0}")]
    Wire(#[from] wire::WireError),
    #[error("bad request: {0}")]
    Frame(#[from] causeway_proto::FrameError),
    #[error("busy: too many request bytes in flight; try again shortly")]
    Busy,
}

impl FedLimits {
    /// Marks the catalog resync as running, or `None` when one already is.
    pub(crate) fn resync(&self) -> Option<ResyncGuard> {
        (!self.resyncing.swap(true, Ordering::AcqRel)).then(|| ResyncGuard(self.resyncing.clone()))
    }

    /// Counts a new connection from `remote`, or `None` when it would pass a cap.
    pub(crate) fn connection(&self, remote: EndpointKey) -> Option<ConnSlot> {
        let mut c = lock(&self.conns);
        let mine = c.per_endpoint.get(&remote).copied().unwrap_or(0);
        if c.total >= MAX_FED_CONNECTIONS || mine >= MAX_FED_CONNECTIONS_PER_ENDPOINT {
            return None;
        }
        c.total += 1;
        *c.per_endpoint.entry(remote).or_insert(0) += 1;
        Some(ConnSlot {
            conns: self.conns.clone(),
            remote,
        })
    }

    /// Reads one request of at most `limit` bytes within [`REQUEST_READ_TIMEOUT`]. Its announced
    /// length is taken from the in-flight budget before the body is read, and the body grows
    /// only as bytes arrive.
    pub(crate) async fn read_request(&self, recv: &mut RecvStream, limit: usize) -> Result<Request, ReadError> {
        let read = async {
            let len = wire::read_len_or_end(recv, limit)
                .await?
                .ok_or_else(|| wire::WireError::Stream("the stream ended before a request".into()))?;
            let budget = u32::try_from(len)
                .ok()
                .and_then(|n| self.inflight.clone().try_acquire_many_owned(n).ok())
                .ok_or(ReadError::Busy)?;
            let mut body = BodyBuf::new(len, limit);
            wire::read_body(recv, &mut body).await?;
            let req = frame::decode(&body.into_inner(), limit)?;
            Ok(Request { req, _budget: budget })
        };
        tokio::time::timeout(REQUEST_READ_TIMEOUT, read)
            .await
            .map_err(|_| ReadError::Wire(wire::WireError::TimedOut(REQUEST_READ_TIMEOUT)))?
    }

    /// Waits for `cluster`'s turn to have a change notification written, up to
    /// [`NOTIFY_MAX_WAIT`]; `false` when its turn is further away (refused).
    pub(crate) async fn notify_turn(&self, cluster: ClusterId) -> bool {
        match self.reserve_notify(cluster, Instant::now()) {
            Some(wait) if wait.is_zero() => true,
            Some(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            None => false,
        }
    }

    /// Takes `cluster`'s next turn (a token bucket), returning how long until it comes, or
    /// `None` when that is past [`NOTIFY_MAX_WAIT`].
    fn reserve_notify(&self, cluster: ClusterId, now: Instant) -> Option<Duration> {
        let mut buckets = lock(&self.notify);
        if buckets.len() >= MAX_NOTIFY_PEERS && !buckets.contains_key(&cluster) {
            buckets.retain(|_, b| refill(b, now) < NOTIFY_BURST);
        }
        let b = buckets.entry(cluster).or_insert(Bucket {
            tokens: NOTIFY_BURST,
            at: now,
        });
        b.tokens = refill(b, now);
        b.at = now;
        let wait = Duration::from_secs_f64((1.0 - b.tokens).max(0.0) / NOTIFY_PER_SEC);
        if wait > NOTIFY_MAX_WAIT {
            return None;
        }
        // Taken now, even when owed: later callers then wait behind this one.
        b.tokens -= 1.0;
        Some(wait)
    }
}

fn refill(b: &Bucket, now: Instant) -> f64 {
    (b.tokens + now.duration_since(b.at).as_secs_f64() * NOTIFY_PER_SEC).min(NOTIFY_BURST)
}

/// The largest request a peer of this relation may send: the full federation frame for a
/// cluster we link to, a small one for anyone else.
pub(crate) fn request_limit(linked: bool) -> usize {
    if linked { MAX_FED_FRAME } else { MAX_UNLINKED_FRAME }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_endpoint_and_released_on_drop() {
        let l = FedLimits::default();
        let a = EndpointKey([1; 32]);
        let held: Vec<_> = (0..MAX_FED_CONNECTIONS_PER_ENDPOINT)
            .map(|_| l.connection(a).expect("under the cap"))
            .collect();
        assert!(l.connection(a).is_none(), "one more from the same endpoint is refused");
        assert!(l.connection(EndpointKey([2; 32])).is_some(), "another endpoint is not");
        drop(held);
        assert!(l.connection(a).is_some());
        assert!(lock(&l.conns).per_endpoint.len() <= 1);
    }

    #[test]
    fn connections_are_capped_in_total() {
        let l = FedLimits::default();
        let held: Vec<_> = (0..MAX_FED_CONNECTIONS)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                l.connection(EndpointKey(k)).expect("under the cap")
            })
            .collect();
        assert!(l.connection(EndpointKey([0xee; 32])).is_none());
        drop(held);
        assert_eq!(lock(&l.conns).total, 0);
    }

    #[test]
    fn notifications_past_the_burst_wait_their_turn_or_are_refused() {
        let l = FedLimits::default();
        let c = ClusterId([7; 32]);
        let now = Instant::now();
        for _ in 0..NOTIFY_BURST as usize {
            assert_eq!(l.reserve_notify(c, now), Some(Duration::ZERO));
        }
        // Owed turns queue up to the longest wait; past it, refused at once.
        let owed = (NOTIFY_MAX_WAIT.as_secs_f64() * NOTIFY_PER_SEC) as usize;
        let waits: Vec<_> = (0..owed + 3).map(|_| l.reserve_notify(c, now)).collect();
        assert!(
            waits[..owed].iter().all(|w| w.is_some_and(|w| w <= NOTIFY_MAX_WAIT)),
            "{waits:?}"
        );
        assert!(waits[owed + 1..].iter().all(Option::is_none), "{waits:?}");
        assert_eq!(
            l.reserve_notify(ClusterId([8; 32]), now),
            Some(Duration::ZERO),
            "another peer has its own bucket"
        );
        // Time gives turns back.
        let later = now + Duration::from_secs(10);
        assert_eq!(l.reserve_notify(c, later), Some(Duration::ZERO));
    }
}
