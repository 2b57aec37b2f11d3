//! The random workload of a run: admins publish versions, change share rules (grant, revoke,
//! read-only on and off, to one cluster, all linked or public), add and remove links, start
//! mirrors, commit into mirrors and write back (sometimes on a stale base, so divergent), and
//! the environment crashes members and partitions clusters and members.

use causeway_catalog::resources::ChangeKind;

use super::{
    engine::{Engine, note},
    net::Event,
    world::{Cid, Refs, Resource},
};

/// Relative weights of the actions, in the order `Engine::workload` matches them.
const WEIGHTS: [u32; 10] = [
    20, // publish a new version
    20, // change share rules
    6,  // add or remove a link
    8,  // start mirroring a peer's resource
    12, // commit into a mirror and write back
    3,  // crash a member
    3,  // partition two clusters
    3,  // partition the members of a cluster
    2,  // write back without a new commit (a retry)
    2,  // remove a resource, or register one (a new name or a removed one again)
];

impl Engine {
    pub(super) fn workload(&mut self) {
        let c = self.rng.below(u64::from(self.cfg.clusters)) as Cid;
        self.count("workload actions");
        match self.rng.weighted(&WEIGHTS) {
            0 => self.publish(c),
            1 => self.change_shares(c),
            2 => self.toggle_link(c),
            3 => self.sync_from(c),
            4 => self.commit_and_write_back(c, true),
            5 => self.crash(c),
            6 => self.partition_clusters(c),
            7 => self.partition_members(c),
            8 => self.commit_and_write_back(c, false),
            _ => self.remove_or_register(c),
        }
    }

    /// The member an admin's command reaches (any of the cluster's).
    fn admin_member(&mut self, c: Cid) -> u8 {
        self.rng.below(self.clusters[c as usize].members.len() as u64) as u8
    }

    fn some_resource(&mut self, c: Cid) -> Option<String> {
        let names: Vec<String> = self.clusters[c as usize].committed.resources.keys().cloned().collect();
        self.rng.pick(&names).cloned()
    }

    fn publish(&mut self, c: Cid) {
        let Some(name) = self.some_resource(c) else { return };
        let via = self.admin_member(c);
        let branch = if self.rng.chance(300) { "dev" } else { "main" };
        let mut refs = self.clusters[c as usize].committed.resources[&name].refs.clone();
        let commit = self.commit();
        refs.entry(branch.to_string()).or_default().push(commit);
        let content = self.store(&refs);
        let now = self.now;
        let done = self.clusters[c as usize].write(via, |s| {
            let r = s.resources.get_mut(&name).expect("resource exists");
            let before = r.shares.clone();
            r.refs = refs;
            r.version += 1;
            r.content = Some(content);
            let v = r.version;
            s.record_change(&name, ChangeKind::Published, before, now);
            v
        });
        self.count(if done.is_some() {
            "admin: published"
        } else {
            "admin: write refused, no quorum"
        });
        note!(self, "admin c{c}.{via}: publish {name} -> {done:?}");
    }

    fn change_shares(&mut self, c: Cid) {
        let Some(name) = self.some_resource(c) else { return };
        let via = self.admin_member(c);
        let r = &self.clusters[c as usize].committed.resources[&name];
        let (mut shares, mut read_only) = (r.shares.clone(), r.read_only);
        let what = match self.rng.weighted(&[5, 3, 1, 2]) {
            0 => {
                let rule = self.random_rule(c, read_only);
                shares.push(rule);
                format!("grant {rule}")
            }
            1 if !shares.is_empty() => {
                let i = self.rng.below(shares.len() as u64) as usize;
                format!("revoke {}", shares.remove(i))
            }
            2 => {
                shares.clear();
                "revoke all".to_string()
            }
            _ => {
                read_only = !read_only;
                for rule in &mut shares {
                    // On: every rule is read-only. Off: rules become writable again, some not.
                    rule.read_only = read_only || self.rng.chance(300);
                }
                format!("read-only {}", if read_only { "on" } else { "off" })
            }
        };
        let now = self.now;
        let done = self.clusters[c as usize].write(via, |s| {
            let r = s.resources.get_mut(&name).expect("resource exists");
            let before = std::mem::replace(&mut r.shares, shares);
            r.read_only = read_only;
            s.record_change(&name, ChangeKind::SharesChanged, before, now);
        });
        self.count(if done.is_some() {
            "admin: shares changed"
        } else {
            "admin: write refused, no quorum"
        });
        note!(self, "admin c{c}.{via}: {name} {what} -> {:?}", done.is_some());
    }

    fn toggle_link(&mut self, c: Cid) {
        let others: Vec<Cid> = (0..self.cfg.clusters).filter(|&p| p != c).collect();
        let Some(&peer) = self.rng.pick(&others) else { return };
        let via = self.admin_member(c);
        let done = self.clusters[c as usize].write(via, |s| {
            if s.links.remove(&peer) {
                // Removing a link forgets what the peer shared (`peer_views::clear`).
                s.views.remove(&peer);
                "removed"
            } else {
                s.links.insert(peer);
                "added"
            }
        });
        note!(self, "admin c{c}.{via}: link c{c}->c{peer} {done:?}");
    }

    /// `resource remove` of one of several resources, or `resource register` of a name that is
    /// new or was removed (its versions then start again from 0).
    fn remove_or_register(&mut self, c: Cid) {
        let via = self.admin_member(c);
        let state = &self.clusters[c as usize].committed;
        let count = state.resources.len() as u64;
        let (now, remove) = (self.now, count > 1 && self.rng.chance(500));
        if remove {
            let Some(name) = self.some_resource(c) else { return };
            let done = self.clusters[c as usize].write(via, |s| {
                let r = s.resources.remove(&name).expect("resource exists");
                s.record_change(&name, ChangeKind::Removed, r.shares, now);
            });
            self.count(if done.is_some() {
                "admin: removed"
            } else {
                "admin: write refused, no quorum"
            });
            return note!(self, "admin c{c}.{via}: remove {name} -> {:?}", done.is_some());
        }
        // Names are reused: c{c}r0, c{c}r1, ... the first one not taken.
        let name = (0..)
            .map(|k| format!("c{c}r{k}"))
            .find(|n| !state.resources.contains_key(n))
            .expect("a free name");
        let read_only = self.rng.chance(200);
        let shares = (0..self.rng.range(0, 2))
            .map(|_| self.random_rule(c, read_only))
            .collect();
        let resource = Resource {
            kind: "forge/repo".into(),
            owner: "forge".into(),
            version: 0,
            content: None,
            shares,
            read_only,
            refs: Refs::new(),
        };
        let done = self.clusters[c as usize].write(via, |s| {
            s.resources.insert(name.clone(), resource);
            s.record_change(&name, ChangeKind::Registered, Vec::new(), now);
        });
        self.count(if done.is_some() {
            "admin: registered"
        } else {
            "admin: write refused, no quorum"
        });
        note!(self, "admin c{c}.{via}: register {name} -> {:?}", done.is_some());
    }

    /// `causeway sync NAME --from PEER`: the first pull of a mirror (or a manual re-pull).
    fn sync_from(&mut self, c: Cid) {
        let others: Vec<Cid> = (0..self.cfg.clusters).filter(|&p| p != c).collect();
        let Some(&origin) = self.rng.pick(&others) else { return };
        let Some(name) = self.some_resource(origin) else { return };
        let Some(leader) = self.clusters[c as usize].leader else {
            return note!(self, "admin c{c}: sync {name} from c{origin}: no leader");
        };
        if self.clusters[c as usize]
            .leader_live()
            .is_some_and(|(_, live)| live.pulling(origin, &name))
        {
            return;
        }
        note!(self, "admin c{c}: sync {name} from c{origin}");
        self.start_pull(c, leader, origin, name, None);
    }

    /// A `git push` into a mirror (usually) and the write-back it triggers. The mirror may be
    /// behind its origin, so the offer may diverge.
    fn commit_and_write_back(&mut self, c: Cid, commit: bool) {
        let keys: Vec<(Cid, String)> = self.clusters[c as usize].committed.mirrors.keys().cloned().collect();
        let Some((origin, name)) = self.rng.pick(&keys).cloned() else {
            return;
        };
        if commit {
            let branch = if self.rng.chance(300) { "dev" } else { "main" };
            let id = self.commit();
            let via = self.admin_member(c);
            let key = (origin, name.clone());
            let done = self.clusters[c as usize].write(via, |s| {
                let m = s.mirrors.get_mut(&key).expect("mirror exists");
                m.refs.entry(branch.to_string()).or_default().push(id);
            });
            note!(
                self,
                "admin c{c}.{via}: commit {id} on mirror c{origin}/{name} {branch} -> {:?}",
                done.is_some()
            );
            if done.is_none() {
                return;
            }
        }
        self.start_write_back(c, origin, name);
    }

    fn crash(&mut self, c: Cid) {
        let m = self.admin_member(c);
        let member = &mut self.clusters[c as usize].members[m as usize];
        if !member.up {
            return;
        }
        member.up = false;
        member.incarnation += 1;
        member.live = None;
        self.count("fault: crash");
        note!(self, "crash c{c}.{m}");
        self.elect(c);
        let (lo, hi) = self.cfg.fault_ms;
        let at = self.now + self.rng.range(lo, hi);
        self.queue.push(at, Event::Restart(c, m));
    }

    pub(super) fn restart(&mut self, c: Cid, m: u8) {
        let member = &mut self.clusters[c as usize].members[m as usize];
        if member.up {
            return;
        }
        member.up = true;
        note!(self, "restart c{c}.{m}");
        self.elect(c);
    }

    fn partition_clusters(&mut self, a: Cid) {
        let others: Vec<Cid> = (0..self.cfg.clusters).filter(|&p| p != a).collect();
        let Some(&b) = self.rng.pick(&others) else { return };
        if !self.net.partition(a, b) {
            return;
        }
        self.count("fault: partition between clusters");
        note!(self, "partition c{a} <-> c{b}");
        let (lo, hi) = self.cfg.fault_ms;
        let at = self.now + self.rng.range(lo, hi);
        self.queue.push(at, Event::HealClusters(a, b));
    }

    fn partition_members(&mut self, c: Cid) {
        let n = self.clusters[c as usize].members.len();
        if n < 2 || self.clusters[c as usize].members.iter().any(|m| m.group != 0) {
            return;
        }
        let groups: Vec<u8> = (0..n).map(|_| self.rng.below(2) as u8).collect();
        for (m, g) in self.clusters[c as usize].members.iter_mut().zip(&groups) {
            m.group = *g;
        }
        self.count("fault: partition inside a cluster");
        note!(self, "partition inside c{c}: groups {groups:?}");
        self.elect(c);
        let (lo, hi) = self.cfg.fault_ms;
        let at = self.now + self.rng.range(lo, hi);
        self.queue.push(at, Event::HealMembers(c));
    }
}
