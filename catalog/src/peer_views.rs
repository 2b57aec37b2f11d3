//! What each linked peer shares with this cluster, as last notified or resynced: replicated so
//! every member shows the same view and it survives restarts. Only peers this cluster links to
//! (pinned, not removed) are kept.

use causeway_policy::ShareMode;
use causeway_proto::ClusterId;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult, Rejection};
use crate::state::{CatalogError, PEER_CATALOG, decode, encode};
use crate::validate;

/// Most entries in one update or sync page.
pub const MAX_PEER_PAGE: usize = 1000;
/// Most entries this cluster keeps of one peer's view: a peer sharing more is seen only up to
/// here, in name order. Constants, not settings: every member must apply the same cap.
pub const MAX_PEER_VIEW_ENTRIES: usize = 10_000;
/// Most bytes (names and stored entries, see [`entry_bytes`]) kept of one peer's view.
pub const MAX_PEER_VIEW_BYTES: usize = 4 << 20;

/// One resource of a peer, as the peer lets us see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub content: Option<String>,
    pub mode: ShareMode,
    pub read_only: bool,
}

impl PeerEntry {
    pub fn validate(&self) -> Result<(), String> {
        validate::resource_name(&self.name)?;
        validate::kind(&self.kind)?;
        validate::owner(&self.owner)?;
        if self
            .content
            .as_ref()
            .is_some_and(|c| c.len() > validate::MAX_CONTENT_LEN)
        {
            return Err("content root too long".into());
        }
        // Version 0 is a resource with nothing published: an origin never pairs it with
        // content, and a peer that does would have it fetched yet reported as "nothing
        // published".
        if self.version == 0 && self.content.is_some() {
            return Err("version 0 with a content root".into());
        }
        Ok(())
    }
}

/// What one entry counts against [`MAX_PEER_VIEW_BYTES`]: its name and its stored encoding.
pub fn entry_bytes(e: &PeerEntry) -> usize {
    e.name.len() + postcard::experimental::serialized_size(e).unwrap_or(usize::MAX / 2)
}

/// Entries and bytes of a view (or of part of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewSize {
    pub entries: usize,
    pub bytes: usize,
}

impl ViewSize {
    pub fn add(&mut self, bytes: usize) {
        self.entries += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        self.entries = self.entries.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Whether a view of this size is over the caps.
    pub fn over_cap(&self) -> bool {
        self.entries > MAX_PEER_VIEW_ENTRIES || self.bytes > MAX_PEER_VIEW_BYTES
    }

    fn refusal(&self) -> Rejection {
        Rejection::Invalid(format!(
            "a peer's view may hold {MAX_PEER_VIEW_ENTRIES} entries and {MAX_PEER_VIEW_BYTES} bytes; \
             this would make it {} entries and {} bytes",
            self.entries, self.bytes
        ))
    }
}

/// The size of `cluster`'s stored entries with names up to `upto` (all of them for `None`).
fn stored_size(
    t: &redb::Table<'_, &'static [u8], &'static [u8]>,
    cluster: &ClusterId,
    upto: Option<&str>,
) -> Result<ViewSize, CatalogError> {
    let lo = cluster.as_bytes().to_vec();
    let hi = upto.map(|u| key(cluster, u));
    let range = match (&hi, upper(cluster)) {
        (Some(hi), _) => t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?,
        (None, Some(end)) => t.range::<&[u8]>(lo.as_slice()..end.as_slice())?,
        (None, None) => t.range::<&[u8]>(lo.as_slice()..)?,
    };
    let mut size = ViewSize::default();
    for row in range {
        let (k, v) = row?;
        size.add(k.value().len() - lo.len() + v.value().len());
    }
    Ok(size)
}

fn key(cluster: &ClusterId, name: &str) -> Vec<u8> {
    let mut k = cluster.as_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key range of one cluster's entries (names are non-empty, so 32 bytes is below them all).
fn upper(cluster: &ClusterId) -> Option<Vec<u8>> {
    let mut k = cluster.as_bytes().to_vec();
    // Increment the 32-byte prefix; an all-0xff cluster runs to the end of the table.
    for i in (0..k.len()).rev() {
        if k[i] == 0xff {
            k[i] = 0;
        } else {
            k[i] += 1;
            return Some(k);
        }
    }
    None
}

fn linked(txn: &WriteTransaction, cluster: &ClusterId) -> Result<bool, CatalogError> {
    let t = txn.open_table(crate::state::LINKS)?;
    for row in t.range::<&[u8]>(..)? {
        let l = crate::links::decode_link(row?.1.value())?;
        if !l.is_removed() && l.pinned == Some(*cluster) {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn clear(txn: &WriteTransaction, cluster: &ClusterId) -> Result<(), CatalogError> {
    let mut t = txn.open_table(PEER_CATALOG)?;
    let lo = cluster.as_bytes().to_vec();
    match upper(cluster) {
        Some(hi) => t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?,
        None => t.retain_in::<&[u8], _>(lo.as_slice().., |_, _| false)?,
    }
    Ok(())
}

pub(crate) fn apply(txn: &WriteTransaction, cmd: &Command) -> Result<CommandResult, CatalogError> {
    match cmd {
        Command::PeerCatalogUpdate { cluster, changes } => {
            if !linked(txn, cluster)? {
                return Ok(CommandResult::Rejected(Rejection::NoLinkForCluster(*cluster)));
            }
            if changes.len() > MAX_PEER_PAGE {
                return Ok(CommandResult::Rejected(Rejection::Invalid("too many changes".into())));
            }
            if let Some(e) = changes.iter().find_map(|(n, e)| {
                validate::resource_name(n)
                    .err()
                    .or_else(|| e.as_ref().and_then(|e| e.validate().err()))
                    .or_else(|| e.as_ref().filter(|e| e.name != *n).map(|_| "name mismatch".to_string()))
            }) {
                return Ok(CommandResult::Rejected(Rejection::Invalid(e)));
            }
            let mut t = txn.open_table(PEER_CATALOG)?;
            // The view after the changes, counted before any is written (a refusal writes none).
            let mut size = stored_size(&t, cluster, None)?;
            let mut seen: std::collections::HashMap<&str, Option<usize>> = std::collections::HashMap::new();
            for (name, entry) in changes {
                let before = match seen.get(name.as_str()) {
                    Some(b) => *b,
                    None => t
                        .get(key(cluster, name).as_slice())?
                        .map(|v| name.len() + v.value().len()),
                };
                if let Some(b) = before {
                    size.sub(b);
                }
                let after = entry.as_ref().map(entry_bytes);
                if let Some(a) = after {
                    size.add(a);
                }
                seen.insert(name, after);
            }
            if size.over_cap() {
                return Ok(CommandResult::Rejected(size.refusal()));
            }
            for (name, entry) in changes {
                let k = key(cluster, name);
                match entry {
                    Some(e) => {
                        t.insert(k.as_slice(), encode(e)?.as_slice())?;
                    }
                    None => {
                        t.remove(k.as_slice())?;
                    }
                }
            }
            Ok(CommandResult::Applied)
        }
        Command::PeerCatalogSync {
            cluster,
            after,
            upto,
            entries,
        } => {
            if !linked(txn, cluster)? {
                return Ok(CommandResult::Rejected(Rejection::NoLinkForCluster(*cluster)));
            }
            if entries.len() > MAX_PEER_PAGE {
                return Ok(CommandResult::Rejected(Rejection::Invalid("page too large".into())));
            }
            if let Some(e) = entries.iter().find_map(|e| e.validate().err()) {
                return Ok(CommandResult::Rejected(Rejection::Invalid(e)));
            }
            let in_range = |n: &str| after.as_deref().is_none_or(|a| n > a) && upto.as_deref().is_none_or(|u| n <= u);
            if entries.iter().any(|e| !in_range(&e.name)) {
                return Ok(CommandResult::Rejected(Rejection::Invalid(
                    "entry outside the page's range".into(),
                )));
            }
            let mut t = txn.open_table(PEER_CATALOG)?;
            // The view up to this page's end: what is kept before the page, and the page. (A
            // stale tail past it is replaced by the following pages, the last one clears it.)
            let mut size = match after {
                Some(a) => stored_size(&t, cluster, Some(a))?,
                None => ViewSize::default(),
            };
            entries.iter().for_each(|e| size.add(entry_bytes(e)));
            if size.over_cap() {
                return Ok(CommandResult::Rejected(size.refusal()));
            }
            let lo = match after {
                Some(a) => {
                    let mut k = key(cluster, a);
                    k.push(0);
                    k
                }
                None => cluster.as_bytes().to_vec(),
            };
            let hi = upto.as_ref().map(|u| key(cluster, u)).or_else(|| upper(cluster));
            match hi {
                Some(hi) if upto.is_some() => t.retain_in::<&[u8], _>(lo.as_slice()..=hi.as_slice(), |_, _| false)?,
                Some(hi) => t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?,
                None => t.retain_in::<&[u8], _>(lo.as_slice().., |_, _| false)?,
            }
            for e in entries {
                t.insert(key(cluster, &e.name).as_slice(), encode(e)?.as_slice())?;
            }
            Ok(CommandResult::Applied)
        }
        _ => Ok(CommandResult::Rejected(Rejection::Invalid(
            "not a peer view command".into(),
        ))),
    }
}

/// One entry of a peer's view.
pub fn get(txn: &ReadTransaction, cluster: &ClusterId, name: &str) -> Result<Option<PeerEntry>, CatalogError> {
    let t = match txn.open_table(PEER_CATALOG) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    t.get(key(cluster, name).as_slice())?
        .map(|v| decode(v.value()))
        .transpose()
}

/// A page of a peer's view in name order, after `after`.
pub fn list(
    txn: &ReadTransaction,
    cluster: &ClusterId,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<PeerEntry>, CatalogError> {
    let t = match txn.open_table(PEER_CATALOG) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let lo = match after {
        Some(a) => {
            let mut k = key(cluster, a);
            k.push(0);
            k
        }
        None => cluster.as_bytes().to_vec(),
    };
    let mut out = Vec::new();
    let range = match upper(cluster) {
        Some(hi) => t.range::<&[u8]>(lo.as_slice()..hi.as_slice())?,
        None => t.range::<&[u8]>(lo.as_slice()..)?,
    };
    for row in range {
        out.push(decode(row?.1.value())?);
        if out.len() >= limit.clamp(1, crate::state::MAX_PAGE) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run;
    use causeway_proto::{
        EndpointKey,
        card::{CardMember, ClusterCard, SignedCard, cluster_id_of},
    };
    use redb::{Database, ReadableDatabase};

    #[test]
    fn version_zero_with_content_is_refused() {
        let mut e = entry("x", 0);
        assert!(e.validate().is_ok());
        e.content = Some("c".into());
        assert!(e.validate().is_err());
        e.version = 1;
        assert!(e.validate().is_ok());
    }

    fn entry(name: &str, version: u64) -> PeerEntry {
        PeerEntry {
            name: name.into(),
            kind: "artifact".into(),
            owner: "x".into(),
            version,
            content: None,
            mode: ShareMode::Pull,
            read_only: true,
        }
    }

    fn names(db: &Database, c: &ClusterId) -> Vec<String> {
        list(&db.begin_read().unwrap(), c, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn updates_and_paged_resync_only_for_linked_peers() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("p.redb")).unwrap();
        let secret = [4u8; 32];
        let cluster = cluster_id_of(&secret);
        let update = |changes| Command::PeerCatalogUpdate { cluster, changes };
        assert!(matches!(
            run(&db, update(vec![("a".into(), Some(entry("a", 1)))])),
            CommandResult::Rejected(Rejection::NoLinkForCluster(_))
        ));
        let e = EndpointKey([1; 32]);
        run(
            &db,
            Command::AddLink {
                name: "p".into(),
                endpoint: e,
                addrs: vec![],
                now_ms: 0,
            },
        );
        let card = SignedCard::sign(
            ClusterCard {
                cluster_id: cluster,
                name: "p".into(),
                members: vec![CardMember {
                    endpoint: e,
                    addrs: vec![],
                }],
                epoch: 1,
                issued_at_ms: 0,
            },
            &secret,
        );
        run(&db, Command::PinLink { name: "p".into(), card });
        assert_eq!(
            run(
                &db,
                update(vec![
                    ("a".into(), Some(entry("a", 1))),
                    ("c".into(), Some(entry("c", 1)))
                ])
            ),
            CommandResult::Applied
        );
        assert_eq!(names(&db, &cluster), ["a", "c"]);
        run(&db, update(vec![("a".into(), None)]));
        assert_eq!(names(&db, &cluster), ["c"]);
        // A resync page over (None, "m"] replaces everything up to "m".
        let sync = Command::PeerCatalogSync {
            cluster,
            after: None,
            upto: Some("m".into()),
            entries: vec![entry("b", 2)],
        };
        assert_eq!(run(&db, sync), CommandResult::Applied);
        assert_eq!(names(&db, &cluster), ["b"]);
        let bad = Command::PeerCatalogSync {
            cluster,
            after: Some("m".into()),
            upto: None,
            entries: vec![entry("a", 1)],
        };
        assert!(matches!(run(&db, bad), CommandResult::Rejected(Rejection::Invalid(_))));
        // Removing the link forgets the view.
        run(
            &db,
            Command::RemoveLink {
                name: "p".into(),
                now_ms: 1,
            },
        );
        assert!(names(&db, &cluster).is_empty());
    }

    #[test]
    fn a_view_is_capped_in_updates_and_in_resync_pages() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("p.redb")).unwrap();
        let secret = [5u8; 32];
        let cluster = cluster_id_of(&secret);
        let e = EndpointKey([1; 32]);
        run(
            &db,
            Command::AddLink {
                name: "p".into(),
                endpoint: e,
                addrs: vec![],
                now_ms: 0,
            },
        );
        let card = SignedCard::sign(
            ClusterCard {
                cluster_id: cluster,
                name: "p".into(),
                members: vec![CardMember {
                    endpoint: e,
                    addrs: vec![],
                }],
                epoch: 1,
                issued_at_ms: 0,
            },
            &secret,
        );
        run(&db, Command::PinLink { name: "p".into(), card });
        let name = |i: usize| format!("r{i:06}");
        // Resync pages up to the cap are kept; a page past it is refused whole.
        let pages = MAX_PEER_VIEW_ENTRIES / MAX_PEER_PAGE;
        for p in 0..=pages {
            let sync = Command::PeerCatalogSync {
                cluster,
                after: (p > 0).then(|| name(p * MAX_PEER_PAGE - 1)),
                upto: Some(name((p + 1) * MAX_PEER_PAGE - 1)),
                entries: (p * MAX_PEER_PAGE..(p + 1) * MAX_PEER_PAGE)
                    .map(|i| entry(&name(i), 1))
                    .collect(),
            };
            let r = run(&db, sync);
            if p < pages {
                assert_eq!(r, CommandResult::Applied, "page {p}");
            } else {
                assert!(matches!(r, CommandResult::Rejected(Rejection::Invalid(_))), "{r:?}");
            }
        }
        let count = || {
            let txn = db.begin_read().unwrap();
            let mut n = 0;
            let mut after = None;
            loop {
                let page = list(&txn, &cluster, after.as_deref(), 1000).unwrap();
                n += page.len();
                match page.last() {
                    Some(l) if page.len() == 1000 => after = Some(l.name.clone()),
                    _ => return n,
                }
            }
        };
        assert_eq!(count(), MAX_PEER_VIEW_ENTRIES);
        // A notification adding one more is refused and writes nothing; replacing and removing
        // entries at the cap still works.
        let update = |changes| Command::PeerCatalogUpdate { cluster, changes };
        let r = run(
            &db,
            update(vec![("a".into(), None), ("zz".into(), Some(entry("zz", 1)))]),
        );
        assert!(matches!(r, CommandResult::Rejected(Rejection::Invalid(_))), "{r:?}");
        assert_eq!(count(), MAX_PEER_VIEW_ENTRIES);
        let r = run(
            &db,
            update(vec![
                (name(0), None),
                ("zz".into(), Some(entry("zz", 1))),
                (name(1), Some(entry(&name(1), 2))),
            ]),
        );
        assert_eq!(r, CommandResult::Applied);
        assert_eq!(count(), MAX_PEER_VIEW_ENTRIES);
        // Bytes are capped too: the largest entries reach the byte cap long before the count.
        let clear = Command::PeerCatalogSync {
            cluster,
            after: None,
            upto: None,
            entries: vec![],
        };
        assert_eq!(run(&db, clear), CommandResult::Applied);
        let big = |i: usize| {
            let mut e = entry(&format!("b{i:06}{}", "x".repeat(190)), 1);
            e.owner = "o".repeat(crate::validate::MAX_OWNER_LEN);
            e.content = Some("c".repeat(crate::validate::MAX_CONTENT_LEN));
            e
        };
        let mut kept = 0;
        loop {
            let page: Vec<_> = (kept..kept + MAX_PEER_PAGE).map(big).collect();
            let sync = Command::PeerCatalogSync {
                cluster,
                after: (kept > 0).then(|| big(kept - 1).name),
                upto: page.last().map(|e| e.name.clone()),
                entries: page,
            };
            match run(&db, sync) {
                CommandResult::Applied => kept += MAX_PEER_PAGE,
                CommandResult::Rejected(Rejection::Invalid(_)) => break,
                other => panic!("{other:?}"),
            }
            assert!(kept < MAX_PEER_VIEW_ENTRIES, "no byte cap");
        }
        assert!(kept * entry_bytes(&big(0)) <= MAX_PEER_VIEW_BYTES);
        assert_eq!(count(), kept);
    }
}
