//! Fuzz targets for every Causeway decoder of network input (see README.md).
//!
//! The target logic lives here, in plain functions, so the same code runs three ways:
//! under libFuzzer (`cargo fuzz run TARGET`, binaries in `fuzz_targets/`), over the seed corpus
//! and deterministic mutations of it in `cargo test` (stable, no cargo-fuzz needed), and on
//! single files with `cargo run --example replay -- TARGET FILE...`.

pub mod catalog_db;
pub mod check;
pub mod findings;
pub mod seeds;
pub mod targets;

/// A target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo fuzz list` shows them.
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", targets::frames),
    ("ticket", targets::ticket),
    ("card", targets::card),
    ("fed_messages", targets::fed_messages),
    ("join_messages", targets::join_messages),
    ("raft_wire", targets::raft_wire),
    ("catalog_command", targets::catalog_command),
    ("alpn_ids", targets::alpn_ids),
];

/// The target function named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Deterministic byte mutations (xorshift), for the stable smoke run without libFuzzer.
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `input` with 1 to 4 random edits: bit flips, interesting bytes, truncation, insertion,
    /// deletion, duplication of a slice.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x40, 0x10, 0x02];
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = v.len();
            match self.below(6) {
                0 if len > 0 => {
                    let i = self.below(len);
                    v[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    v[i] = INTERESTING[self.below(INTERESTING.len())];
                }
                2 => v.truncate(self.below(len + 1)),
                3 => {
                    let i = self.below(len + 1);
                    v.insert(i, self.next() as u8);
                }
                4 if len > 0 => {
                    let i = self.below(len);
                    v.remove(i);
                }
                _ if len > 1 => {
                    let a = self.below(len);
                    let b = a + self.below(len - a).min(64);
                    let copy = v[a..b].to_vec();
                    let at = self.below(len + 1);
                    v.splice(at..at, copy);
                }
                _ => v.push(self.next() as u8),
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_target_has_seeds_and_a_binary() {
        let seeds = seeds::all();
        for (name, _) in TARGETS {
            assert!(seeds.iter().any(|(t, _, _)| t == name), "no seed for {name}");
            let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz_targets/{name}.rs"));
            assert!(bin.exists(), "missing {}", bin.display());
        }
        for (t, _, _) in &seeds {
            assert!(target(t).is_some(), "seed for unknown target {t}");
        }
    }

    #[test]
    fn seeds_run_clean() {
        for (t, name, bytes) in seeds::all() {
            eprintln!("{t}/{name}");
            target(t).unwrap()(&bytes);
        }
    }

    #[test]
    fn seeds_decode_as_meant() {
        use causeway_proto::decode;
        for (t, name, bytes) in seeds::all() {
            let ok = match t {
                "card" => decode::<causeway_proto::card::SignedCard>(&bytes, usize::MAX)
                    .map(|c| c.verify().is_ok())
                    .unwrap_or(false),
                "join_messages" => {
                    decode::<causeway_proto::join::JoinRequest>(&bytes, usize::MAX).is_ok()
                        || decode::<causeway_proto::join::JoinResponse>(&bytes, usize::MAX).is_ok()
                }
                "ticket" if name == "printed" => std::str::from_utf8(&bytes)
                    .unwrap()
                    .parse::<causeway_proto::InviteTicket>()
                    .is_ok(),
                "raft_wire" if name.starts_with("request-") => {
                    decode::<causeway_raft::wire::RaftRequest>(&bytes[1..], usize::MAX).is_ok()
                }
                "raft_wire" => decode::<causeway_raft::wire::RaftResponse>(&bytes, usize::MAX).is_ok(),
                "alpn_ids" if name.starts_with("alpn-") && name != "alpn-raft-9" => {
                    causeway_proto::alpn::check(&bytes).is_ok()
                }
                _ => true,
            };
            assert!(ok, "seed {t}/{name} does not decode");
        }
    }

    /// Every file of the committed corpus, through its target.
    #[test]
    fn corpus_replays_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, f) in TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in dir {
                let path = entry.unwrap().path();
                f(&std::fs::read(&path).unwrap());
            }
        }
    }

    /// The known findings (README.md, "Findings"): ignored until they are fixed in the project.
    #[test]
    #[ignore = "known findings in the project's code, see README.md"]
    fn known_findings() {
        let failing: Vec<String> = findings::all()
            .into_iter()
            .filter(|(t, _, bytes)| std::panic::catch_unwind(|| target(t).unwrap()(bytes)).is_err())
            .map(|(t, name, _)| format!("{t}/{name}"))
            .collect();
        assert!(failing.is_empty(), "still failing: {failing:?}");
    }

    /// The stable fallback for a quick fuzz: FUZZ_SMOKE_ITERS mutations (default 300) of every
    /// seed through its target.
    #[test]
    fn mutated_seeds_run_clean() {
        let iters: usize = std::env::var("FUZZ_SMOKE_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let mut m = Mutator::new(0x5eed);
        for (t, name, bytes) in seeds::all() {
            let f = target(t).unwrap();
            let mut input = bytes.clone();
            for i in 0..iters {
                // Half the time mutate the seed afresh, half the time keep mutating.
                if i % 2 == 0 {
                    input = bytes.clone();
                }
                input = m.mutate(&input);
                let r = std::panic::catch_unwind(|| f(&input));
                assert!(
                    r.is_ok(),
                    "{t} panicked on a mutation of seed {name}: input hex {}",
                    input.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
            }
        }
    }
}
