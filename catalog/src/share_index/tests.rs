use std::collections::BTreeSet;

use causeway_proto::ClusterId;
use proptest::prelude::*;
use redb::{Database, ReadableDatabase};

use super::*;
use crate::command::Command;
use crate::state::{self, create_tables, export, import, list_resources};
use crate::test_support::{db, register, run};

const A: ClusterId = ClusterId([0xa; 32]);
const B: ClusterId = ClusterId([0xb; 32]);
const C: ClusterId = ClusterId([0xc; 32]);
const D: ClusterId = ClusterId([0xd; 32]);

fn share(name: &str, audience: Audience, mode: ShareMode, read_only: bool) -> Command {
    Command::SetShare {
        name: name.into(),
        rule: ShareRule::new(audience, mode, read_only),
        now_ms: 2,
    }
}

fn index_rows(db: &Database) -> BTreeSet<Vec<u8>> {
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(SHARE_INDEX).unwrap();
    t.range::<&[u8]>(..)
        .unwrap()
        .map(|row| row.unwrap().0.value().to_vec())
        .collect()
}

fn all_resources(txn: &ReadTransaction) -> Vec<Resource> {
    let mut all: Vec<Resource> = Vec::new();
    loop {
        let page = list_resources(txn, all.last().map(|r| r.name.as_str()), MAX_PAGE).unwrap();
        let done = page.len() < MAX_PAGE;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// The index a from-scratch derivation of the resources gives.
fn derived_rows(db: &Database) -> BTreeSet<Vec<u8>> {
    let txn = db.begin_read().unwrap();
    all_resources(&txn)
        .iter()
        .flat_map(|r| r.shares.iter().map(|s| key(&s.audience, &r.name)))
        .collect()
}

/// The page by brute force: every resource, filtered by the policy.
fn brute_page(db: &Database, peer: &PeerRelation, after: Option<&str>, limit: usize) -> (Vec<VisibleEntry>, bool) {
    let txn = db.begin_read().unwrap();
    let limit = limit.clamp(1, MAX_PAGE);
    let mut visible: Vec<VisibleEntry> = all_resources(&txn)
        .into_iter()
        .filter(|r| after.is_none_or(|a| r.name.as_str() > a))
        .filter_map(|resource| {
            visible_mode(peer, &resource.shares).map(|(mode, read_only)| VisibleEntry {
                resource,
                mode,
                read_only,
            })
        })
        .collect();
    let more = visible.len() > limit;
    visible.truncate(limit);
    (visible, more)
}

fn page(db: &Database, peer: &PeerRelation, after: Option<&str>, limit: usize) -> VisiblePage {
    visible_page(&db.begin_read().unwrap(), peer, after, limit).unwrap()
}

fn names(entries: &[VisibleEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.resource.name.as_str()).collect()
}

#[test]
fn index_follows_shares_and_removals() {
    let (_d, db) = db();
    for n in ["a", "b", "c"] {
        run(&db, register(n));
    }
    assert!(index_rows(&db).is_empty(), "registered resources are private");
    run(&db, share("a", Audience::Public, ShareMode::Pull, false));
    run(&db, share("a", Audience::Cluster(A), ShareMode::Push, false));
    run(&db, share("b", Audience::Linked, ShareMode::Pull, true));
    // Replacing a rule for the same audience keeps one row.
    run(&db, share("b", Audience::Linked, ShareMode::Bidirectional, false));
    assert_eq!(
        index_rows(&db),
        BTreeSet::from([
            key(&Audience::Public, "a"),
            key(&Audience::Cluster(A), "a"),
            key(&Audience::Linked, "b"),
        ])
    );
    run(
        &db,
        &Command::RemoveShare {
            name: "a".into(),
            audience: Audience::Public,
            now_ms: 3,
        },
    );
    run(
        &db,
        &Command::RemoveResource {
            name: "b".into(),
            now_ms: 4,
        },
    );
    assert_eq!(index_rows(&db), BTreeSet::from([key(&Audience::Cluster(A), "a")]));

    let linked_a = page(&db, &PeerRelation::Linked(A), None, 10);
    assert_eq!(names(&linked_a.entries), ["a"]);
    assert_eq!((linked_a.entries[0].mode, linked_a.more), (ShareMode::Push, false));
    // A cluster share covers its cluster only through our link.
    assert!(page(&db, &PeerRelation::Unlinked(A), None, 10).entries.is_empty());
    assert!(page(&db, &PeerRelation::Linked(B), None, 10).entries.is_empty());
}

#[test]
fn more_is_false_only_at_the_true_end() {
    let (_d, db) = db();
    for n in ["a", "b", "c", "d"] {
        run(&db, register(n));
    }
    for n in ["a", "c", "d"] {
        run(&db, share(n, Audience::Public, ShareMode::Pull, false));
    }
    // "d" is visible only through the link, and also publicly: counted once.
    run(&db, share("d", Audience::Linked, ShareMode::Pull, false));
    let peer = PeerRelation::Linked(A);
    let first = page(&db, &peer, None, 2);
    assert_eq!((names(&first.entries), first.more), (vec!["a", "c"], true));
    let last = page(&db, &peer, Some("c"), 2);
    assert_eq!((names(&last.entries), last.more), (vec!["d"], false));
    let exact = page(&db, &peer, Some("a"), 2);
    assert_eq!((names(&exact.entries), exact.more), (vec!["c", "d"], false));
    // A hidden name and a missing name as cursors behave as any other name.
    assert_eq!(page(&db, &peer, Some("b"), 2), page(&db, &peer, Some("bb"), 2));
    // Only rows the peer may see are read: at most limit + 1 per covering audience.
    assert!(first.rows_read <= 3 * 3, "{}", first.rows_read);
}

/// The cost of a page does not depend on what is hidden from the peer.
#[test]
fn hidden_resources_are_never_read() {
    let (_d, db) = db();
    for i in 0..50 {
        let n = format!("hidden{i:02}");
        run(&db, register(&n));
        run(&db, share(&n, Audience::Cluster(B), ShareMode::Pull, false));
    }
    run(&db, register("shown"));
    run(&db, share("shown", Audience::Linked, ShareMode::Pull, false));
    let p = page(&db, &PeerRelation::Linked(A), None, 10);
    assert_eq!((names(&p.entries), p.more), (vec!["shown"], false));
    assert_eq!(p.rows_read, 1);
}

/// A database written before the index existed gets it built when its tables are opened.
#[test]
fn missing_index_is_built_on_open() {
    let (_d, db) = db();
    for n in ["a", "b", "c"] {
        run(&db, register(n));
    }
    run(&db, share("b", Audience::Public, ShareMode::Pull, false));
    run(&db, share("c", Audience::Cluster(A), ShareMode::Pull, false));
    let txn = db.begin_write().unwrap();
    assert!(txn.delete_table(SHARE_INDEX).unwrap());
    txn.commit().unwrap();
    assert!(page(&db, &PeerRelation::Linked(A), None, 10).entries.is_empty());

    let txn = db.begin_write().unwrap();
    create_tables(&txn).unwrap();
    txn.commit().unwrap();
    assert_eq!(index_rows(&db), derived_rows(&db));
    assert_eq!(
        names(&page(&db, &PeerRelation::Linked(A), None, 10).entries),
        ["b", "c"]
    );

    // Opening again leaves a present index alone (a stray row stays: no rebuild on every open).
    let stray = key(&Audience::Public, "zz");
    let txn = db.begin_write().unwrap();
    txn.open_table(SHARE_INDEX)
        .unwrap()
        .insert(stray.as_slice(), ())
        .unwrap();
    create_tables(&txn).unwrap();
    txn.commit().unwrap();
    assert!(index_rows(&db).contains(&stray));
    // A stray row never shows anything.
    assert_eq!(
        names(&page(&db, &PeerRelation::Linked(A), None, 10).entries),
        ["b", "c"]
    );
}

#[test]
fn import_rebuilds_the_index_and_export_leaves_it_out() {
    let (_d, db) = db();
    run(&db, register("a"));
    run(&db, share("a", Audience::Public, ShareMode::Pull, false));
    let snap = export(&db.begin_read().unwrap()).unwrap();
    assert!(
        snap.tables
            .iter()
            .flatten()
            .all(|(k, _)| k != &key(&Audience::Public, "a")),
        "the derived index is not snapshotted"
    );
    let (_d2, other) = self::db();
    run(&other, register("stale"));
    run(&other, share("stale", Audience::Public, ShareMode::Pull, false));
    let txn = other.begin_write().unwrap();
    import(&txn, &snap).unwrap();
    txn.commit().unwrap();
    assert_eq!(index_rows(&other), BTreeSet::from([key(&Audience::Public, "a")]));
}

const NAMES: [&str; 8] = ["a", "ab", "b", "ba", "bb", "c", "cab", "d"];
/// Cursors: every name, plus names never registered and the bounds.
const CURSORS: [&str; 6] = ["", "aa", "b0", "bz", "ca", "zzz"];

fn audience(i: u8) -> Audience {
    match i % 5 {
        0 => Audience::Public,
        1 => Audience::Linked,
        2 => Audience::Cluster(A),
        3 => Audience::Cluster(B),
        _ => Audience::Cluster(C),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Register(usize),
    Share(usize, u8, u8, bool),
    Unshare(usize, u8),
    Remove(usize),
    Mirror(usize),
    /// Export and import into the same database (the Raft snapshot path).
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        3 => n.clone().prop_map(Op::Register),
        5 => (n.clone(), any::<u8>(), 0u8..3, any::<bool>()).prop_map(|(n, a, m, r)| Op::Share(n, a, m, r)),
        2 => (n.clone(), any::<u8>()).prop_map(|(n, a)| Op::Unshare(n, a)),
        1 => n.clone().prop_map(Op::Remove),
        1 => n.prop_map(Op::Mirror),
        1 => Just(Op::Snapshot),
    ]
}

fn to_command(op: &Op) -> Option<Command> {
    let modes = [ShareMode::Pull, ShareMode::Push, ShareMode::Bidirectional];
    Some(match *op {
        Op::Register(n) => register(NAMES[n]),
        Op::Share(n, a, m, r) => share(NAMES[n], audience(a), modes[usize::from(m) % 3], r),
        Op::Unshare(n, a) => Command::RemoveShare {
            name: NAMES[n].into(),
            audience: audience(a),
            now_ms: 3,
        },
        Op::Remove(n) => Command::RemoveResource {
            name: NAMES[n].into(),
            now_ms: 4,
        },
        Op::Mirror(n) => Command::RecordMirror {
            name: NAMES[n].into(),
            origin: D,
            kind: "artifact".into(),
            owner: "peer".into(),
            version: 1,
            content: None,
            now_ms: 5,
        },
        Op::Snapshot => return None,
    })
}

fn peers() -> [PeerRelation; 6] {
    [
        PeerRelation::Unknown,
        PeerRelation::Unlinked(A),
        PeerRelation::Linked(A),
        PeerRelation::Linked(B),
        PeerRelation::Linked(C),
        PeerRelation::Linked(D),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// For any history of commands, every index-backed page equals the brute-force filter over
    /// all resources, for every peer, cursor and page size, and paging to the end lists exactly
    /// what the peer may see.
    #[test]
    fn index_page_equals_brute_force(ops in prop::collection::vec(op(), 0..60), limit in 1usize..5) {
        let (_d, db) = db();
        for op in &ops {
            match to_command(op) {
                Some(cmd) => {
                    run(&db, &cmd);
                }
                None => {
                    let snap = export(&db.begin_read().unwrap()).unwrap();
                    let txn = db.begin_write().unwrap();
                    import(&txn, &snap).unwrap();
                    txn.commit().unwrap();
                }
            }
        }
        prop_assert_eq!(index_rows(&db), derived_rows(&db));
        for peer in peers() {
            let cursors = std::iter::once(None).chain(NAMES.iter().chain(CURSORS.iter()).map(|c| Some(*c)));
            for after in cursors {
                let got = page(&db, &peer, after, limit);
                let (want, want_more) = brute_page(&db, &peer, after, limit);
                prop_assert_eq!(&got.entries, &want, "{} after {:?}", peer, after);
                prop_assert_eq!(got.more, want_more, "{} after {:?}", peer, after);
                prop_assert!(got.rows_read <= 3 * (limit + 1), "{} read {} rows", peer, got.rows_read);
            }
            let mut walked = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let p = page(&db, &peer, after.as_deref(), limit);
                prop_assert!(p.more || p.entries.len() <= limit);
                walked.extend(p.entries.iter().map(|e| e.resource.name.clone()));
                after = p.entries.last().map(|e| e.resource.name.clone());
                if !p.more {
                    break;
                }
            }
            let (all, _) = brute_page(&db, &peer, None, MAX_PAGE);
            let want: Vec<String> = all.into_iter().map(|e| e.resource.name).collect();
            prop_assert_eq!(walked, want, "{}", peer);
        }
    }
}

#[test]
fn prefix_ends_bound_exactly_their_prefix() {
    assert_eq!(prefix_end(&[0]), Some(vec![1]));
    assert_eq!(prefix_end(&[2, 0xff, 0xff]), Some(vec![3]));
    assert_eq!(prefix_end(&[2, 7, 0xff]), Some(vec![2, 8]));
    assert_eq!(prefix_end(&[0xff]), None);
}

#[test]
fn export_of_state_tables_is_unchanged_by_the_index() {
    // The snapshot layout (table positions) is fixed: the index adds no table to it.
    let (_d, db) = db();
    run(&db, register("a"));
    run(&db, share("a", Audience::Linked, ShareMode::Pull, false));
    let snap = export(&db.begin_read().unwrap()).unwrap();
    assert_eq!(snap.tables.len(), 6);
    let _ = state::MAX_PAGE;
}
