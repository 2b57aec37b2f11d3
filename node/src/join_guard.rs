//! What a join request must pass before it may cost the cluster a Raft entry: attempt budgets per
//! endpoint and per address (bounded maps), a cap on join exchanges at once, and the ticket
//! checked against this member's copy of the invites. Raft still redeems each ticket once.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use causeway_catalog::{Invite, InviteState, Rejection};
use causeway_proto::EndpointKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Join attempts one endpoint may make at once before it has to wait.
pub const JOIN_BURST_PER_ENDPOINT: u32 = 3;
/// Time after which an endpoint gets one more attempt.
pub const JOIN_REFILL_PER_ENDPOINT: Duration = Duration::from_secs(20);
/// Join attempts one address may make at once (several nodes of one host may join together).
pub const JOIN_BURST_PER_ADDRESS: u32 = 10;
/// Time after which an address gets one more attempt.
pub const JOIN_REFILL_PER_ADDRESS: Duration = Duration::from_secs(2);
/// Most endpoints, and most addresses, whose budgets are tracked; beyond it the sources whose
/// budget refilled are forgotten, and if none has, new sources are refused until one does.
pub const MAX_TRACKED_JOIN_SOURCES: usize = 4096;
/// Join exchanges served at once; more are refused.
pub const MAX_CONCURRENT_JOINS: usize = 16;
/// Least time between two log lines about refused joins.
pub const JOIN_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a join was refused before its ticket was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    #[error("too many join attempts from this node or address; try again later")]
    TooMany,
    #[error("too many joins at once; try again later")]
    Busy,
}

/// An address as budgets count it: an IPv6 host usually owns a whole /64, so that is one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket was created full).
    at: Instant,
}

/// Token buckets keyed by source, at most `cap` of them.
#[derive(Debug)]
struct Budgets<K> {
    burst: u32,
    refill: Duration,
    cap: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> Budgets<K> {
    fn new(burst: u32, refill: Duration, cap: usize) -> Self {
        Self {
            burst,
            refill,
            cap,
            buckets: HashMap::new(),
        }
    }

    /// The bucket of `key` refilled up to `now`, if tracked.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(b.at);
        let steps = (elapsed.as_nanos() / self.refill.as_nanos().max(1)).min(u128::from(self.burst)) as u32;
        if b.tokens + steps >= self.burst {
            return Bucket {
                tokens: self.burst,
                at: now,
            };
        }
        Bucket {
            tokens: b.tokens + steps,
            at: b.at + self.refill * steps,
        }
    }

    /// Whether `key` has an attempt left (without taking it); false also when the map is full
    /// of sources still waiting for their budget.
    fn has(&mut self, key: &K, now: Instant) -> bool {
        if let Some(b) = self.buckets.get(key).copied() {
            return self.refilled(b, now).tokens > 0;
        }
        if self.buckets.len() >= self.cap {
            let burst = self.burst;
            let fresh: Vec<K> = self
                .buckets
                .iter()
                .filter(|(_, b)| self.refilled(**b, now).tokens >= burst)
                .map(|(k, _)| *k)
                .collect();
            for k in fresh {
                self.buckets.remove(&k);
            }
        }
        self.buckets.len() < self.cap
    }

    fn take(&mut self, key: K, now: Instant) {
        let full = Bucket {
            tokens: self.burst,
            at: now,
        };
        let current = self.buckets.get(&key).copied().unwrap_or(full);
        let mut b = self.refilled(current, now);
        b.tokens = b.tokens.saturating_sub(1);
        self.buckets.insert(key, b);
    }
}

/// The join service's guard: who may try now, and how many at once.
#[derive(Debug)]
pub struct JoinGuard {
    budgets: Mutex<(Budgets<EndpointKey>, Budgets<AddressKey>)>,
    running: Arc<Semaphore>,
    /// Refusals anyone can provoke are logged at most once per [`JOIN_LOG_EVERY`].
    pub log: causeway_raft::LogLimit,
}

impl Default for JoinGuard {
    fn default() -> Self {
        Self {
            budgets: Mutex::new((
                Budgets::new(
                    JOIN_BURST_PER_ENDPOINT,
                    JOIN_REFILL_PER_ENDPOINT,
                    MAX_TRACKED_JOIN_SOURCES,
                ),
                Budgets::new(
                    JOIN_BURST_PER_ADDRESS,
                    JOIN_REFILL_PER_ADDRESS,
                    MAX_TRACKED_JOIN_SOURCES,
                ),
            )),
            running: Arc::new(Semaphore::new(MAX_CONCURRENT_JOINS)),
            log: causeway_raft::LogLimit::new(JOIN_LOG_EVERY),
        }
    }
}

impl JoinGuard {
    /// Admits one join attempt from `joiner` at `address` (None when it came through a relay:
    /// then only its endpoint's budget applies), or says why not. The permit is held for the
    /// whole exchange.
    pub fn admit(&self, joiner: EndpointKey, address: Option<IpAddr>) -> Result<OwnedSemaphorePermit, Throttled> {
        let now = Instant::now();
        {
            let mut guard = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
            let (endpoints, addresses) = &mut *guard;
            let address = address.map(AddressKey::from);
            let allowed = endpoints.has(&joiner, now) && address.is_none_or(|a| addresses.has(&a, now));
            if !allowed {
                return Err(Throttled::TooMany);
            }
            endpoints.take(joiner, now);
            if let Some(a) = address {
                addresses.take(a, now);
            }
        }
        self.running.clone().try_acquire_owned().map_err(|_| Throttled::Busy)
    }
}

/// Checks a presented ticket against this member's copy of the invite, in the order the catalog
/// applies `RedeemInvite`, so the joiner gets the same answer Raft would give. Local state may be
/// behind, never ahead: an unknown invite deserves a second look at current state (the caller's);
/// a forged, used or expired one stays so.
pub fn check_ticket(invite: Option<&Invite>, secret_hash: &[u8; 32], now_ms: u64) -> Result<(), Rejection> {
    let invite = invite.ok_or(Rejection::InviteUnknown)?;
    if invite.secret_hash != *secret_hash {
        return Err(Rejection::InviteForged);
    }
    match invite.state {
        InviteState::Open => {}
        InviteState::Used { .. } => return Err(Rejection::InviteUsed),
        InviteState::Revoked { .. } => return Err(Rejection::InviteRevoked),
    }
    if now_ms > invite.expires_at_ms {
        return Err(Rejection::InviteExpired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refill_and_stay_bounded() {
        let t0 = Instant::now();
        let mut b = Budgets::<u32>::new(2, Duration::from_secs(1), 3);
        for _ in 0..2 {
            assert!(b.has(&1, t0));
            b.take(1, t0);
        }
        assert!(!b.has(&1, t0));
        assert!(b.has(&1, t0 + Duration::from_secs(1)));
        // Full of sources still waiting: a new one is refused until one refills.
        b.take(2, t0);
        b.take(3, t0);
        assert!(!b.has(&4, t0));
        assert!(b.has(&4, t0 + Duration::from_secs(3)));
        assert!(b.buckets.len() < 3);
    }

    #[test]
    fn guard_limits_an_endpoint_and_an_address() {
        let guard = JoinGuard::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let one = EndpointKey([1; 32]);
        let mut permits = Vec::new();
        for _ in 0..JOIN_BURST_PER_ENDPOINT {
            permits.push(guard.admit(one, Some(ip)).unwrap());
        }
        assert_eq!(guard.admit(one, Some(ip)).unwrap_err(), Throttled::TooMany);
        // Fresh endpoints from the same address run out at the address's budget.
        let mut n = JOIN_BURST_PER_ENDPOINT;
        let mut k = 2u8;
        while guard.admit(EndpointKey([k; 32]), Some(ip)).is_ok() {
            n += 1;
            k += 1;
        }
        assert_eq!(n, JOIN_BURST_PER_ADDRESS);
        // The same /64 is one IPv6 source.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(AddressKey::from(a), AddressKey::from(b));
    }

    #[test]
    fn tickets_are_checked_like_the_catalog_does() {
        let hash = [5; 32];
        let open = Invite {
            secret_hash: hash,
            expires_at_ms: 100,
            created_by: EndpointKey([1; 32]),
            state: InviteState::Open,
        };
        assert_eq!(check_ticket(None, &hash, 0), Err(Rejection::InviteUnknown));
        assert_eq!(check_ticket(Some(&open), &[6; 32], 0), Err(Rejection::InviteForged));
        assert_eq!(check_ticket(Some(&open), &hash, 101), Err(Rejection::InviteExpired));
        assert_eq!(check_ticket(Some(&open), &hash, 100), Ok(()));
        let used = Invite {
            state: InviteState::Used {
                by: EndpointKey([2; 32]),
                at_ms: 1,
            },
            ..open
        };
        assert_eq!(check_ticket(Some(&used), &hash, 0), Err(Rejection::InviteUsed));
    }
}
