//! Links: the leader heartbeats each outbound link through the real `LinkHealth` (poll, ack,
//! failure), and any member of the peer answers with whether its cluster links back. Link
//! health lives in the leader's memory: a crash or a change of leader starts it afresh.
//!
//! As in the node's supervisor, a link has one heartbeat outstanding at a time: nothing is
//! polled until it is answered, fails to dial, or times out (`request_timeout_ms`), and that
//! outcome is what `on_ack` / `on_failure` hear.

use causeway::federation::health::{LinkHealth, LinkState};

use super::{
    config::SimConfig,
    engine::{Engine, note},
    msg::Body,
    net::{Addr, Event},
    world::{Cid, Health},
};

/// The state `link list` shows for a link. The `stale_link_state` fault reads it as of the
/// link's last heartbeat event instead of now.
pub fn reported_state(h: &Health, now: u64, cfg: &SimConfig) -> LinkState {
    let at = if cfg.faults.stale_link_state {
        h.last_event_ms
    } else {
        now
    };
    h.link.state(at, &cfg.health)
}

impl Engine {
    /// Sends the heartbeats that are due on every link of cluster `c`.
    pub(super) fn heartbeats(&mut self, c: Cid, leader: u8) {
        let (now, cfg, timeout) = (self.now, self.cfg.health, self.cfg.request_timeout_ms);
        let links = self.clusters[c as usize].committed.links.clone();
        let Some((_, live)) = self.clusters[c as usize].leader_live() else {
            return;
        };
        let instance = live.instance;
        live.health.retain(|peer, _| links.contains(peer));
        let mut due = Vec::new();
        for &peer in &links {
            let h = live.health.entry(peer).or_insert_with(|| Health {
                link: LinkHealth::new(),
                last_ack_ms: None,
                last_event_ms: now,
                busy: None,
            });
            match h.busy {
                Some((_, deadline)) if now < deadline => continue,
                Some((seq, _)) => {
                    h.link.on_failure(seq, "request timed out");
                    h.last_event_ms = now;
                    h.busy = None;
                }
                None => {}
            }
            if let Some(seq) = h.link.poll(now, &cfg) {
                h.last_event_ms = now;
                h.busy = Some((seq, now + timeout));
                due.push((peer, seq));
            }
        }
        let failing = live
            .health
            .values()
            .filter(|h| h.link.state(now, &cfg) == LinkState::Failing)
            .count();
        for _ in 0..failing {
            self.count("link: reads failing (per tick)");
        }
        for (peer, seq) in due {
            if !self.send((c, leader), peer, Body::Heartbeat { instance, seq }) {
                let at = self.addr(c, leader);
                let when = self.now + self.cfg.dial_timeout_ms;
                self.queue.push(
                    when,
                    Event::DialFailed {
                        at,
                        instance,
                        peer,
                        seq,
                    },
                );
            }
        }
    }

    /// Any member answers a heartbeat, from its own replica.
    pub(super) fn on_heartbeat(&mut self, from: Addr, to: Addr, instance: u64, seq: u64) {
        let links_back = self.clusters[to.cluster as usize].members[to.member as usize]
            .state
            .links
            .contains(&from.cluster);
        self.reply(
            from,
            to,
            Body::HeartbeatAck {
                instance,
                seq,
                links_back,
            },
        );
    }

    /// The health this address holds for `peer`, if it is still the leader of that term.
    fn health_at(&mut self, at: Addr, instance: u64, peer: Cid) -> Option<&mut Health> {
        if !self.alive(at) || self.clusters[at.cluster as usize].leader != Some(at.member) {
            return None;
        }
        let live = self.clusters[at.cluster as usize].members[at.member as usize]
            .live
            .as_mut()?;
        if live.instance != instance {
            return None;
        }
        live.health.get_mut(&peer)
    }

    pub(super) fn on_heartbeat_ack(&mut self, at: Addr, peer: Cid, instance: u64, seq: u64, links_back: bool) {
        let now = self.now;
        if let Some(h) = self.health_at(at, instance, peer) {
            // The answer arrives on its request's stream; a duplicate finds nothing waiting.
            if h.busy.is_some_and(|(s, _)| s == seq) {
                h.busy = None;
            }
            h.link.on_ack(now, seq, links_back);
            h.last_ack_ms = Some(now);
            h.last_event_ms = now;
        }
    }

    pub(super) fn on_dial_failed(&mut self, at: Addr, instance: u64, peer: Cid, seq: u64) {
        let now = self.now;
        if let Some(h) = self.health_at(at, instance, peer) {
            if h.busy.is_some_and(|(s, _)| s == seq) {
                h.busy = None;
            }
            h.link.on_failure(seq, "peer unreachable");
            h.last_event_ms = now;
            self.count("heartbeat: dial failed");
            note!(self, "c{}: heartbeat {seq} to c{peer} failed: unreachable", at.cluster);
        }
    }
}
