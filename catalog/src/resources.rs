//! Resources and their share rules as replicated records, and the change feed: every change to
//! a resource appends a numbered `Change`, so subsystems can watch and peers can be notified.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult, Rejection, Resource};
use crate::state::{CHANGES, CatalogError, decode, encode};
use crate::{StateWriter, mirror_index, share_index, validate};
use causeway_policy::ShareRule;

/// Changes kept in the feed at least; older ones are pruned (a watcher that falls further
/// behind re-lists instead).
pub const MAX_CHANGES: u64 = 100_000;
/// How many changes beyond [`MAX_CHANGES`] the feed may hold before the oldest are pruned, all
/// in one range removal: pruning one change per write cost a third of recording it.
pub const CHANGE_PRUNE_STEP: u64 = 1_024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Registered,
    MetadataUpdated,
    Published,
    Removed,
    SharesChanged,
}

/// One entry of the change feed. It carries the share rules before and after, so a notifier
/// can tell exactly which peers could see the resource before or after the change (and tell no
/// one else).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub name: String,
    pub kind: ChangeKind,
    pub version: u64,
    pub at_ms: u64,
    pub shares_before: Vec<ShareRule>,
    /// The resource after the change; `None` once removed.
    pub after: Option<ResourceSummary>,
}

/// What a peer's catalog view shows of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSummary {
    pub kind: String,
    pub owner: String,
    pub version: u64,
    pub content: Option<String>,
    pub shares: Vec<ShareRule>,
}

impl From<&Resource> for ResourceSummary {
    fn from(r: &Resource) -> Self {
        Self {
            kind: r.kind.clone(),
            owner: r.owner.clone(),
            version: r.version,
            content: r.content.clone(),
            shares: r.shares.clone(),
        }
    }
}

fn reject(r: Rejection) -> Result<CommandResult, CatalogError> {
    Ok(CommandResult::Rejected(r))
}

fn record_change(
    w: &mut StateWriter<'_>,
    name: &str,
    kind: ChangeKind,
    before: Option<&Resource>,
    after: Option<&Resource>,
    at_ms: u64,
) -> Result<(), CatalogError> {
    let version = after.or(before).map(|r| r.version).unwrap_or(0);
    let seq = w.next_change_seq()?;
    let change = Change {
        seq,
        name: name.to_string(),
        kind,
        version,
        at_ms,
        shares_before: before.map(|r| r.shares.clone()).unwrap_or_default(),
        after: after.map(ResourceSummary::from),
    };
    w.push_change(seq, encode(&change)?)?;
    if seq % CHANGE_PRUNE_STEP == 0 && seq > MAX_CHANGES {
        // Every replica prunes at the same sequence numbers, so their feeds stay identical.
        w.flush_changes()?;
        let cutoff = (seq - MAX_CHANGES + 1).to_be_bytes();
        w.changes()?.retain_in(..cutoff.as_slice(), |_, _| false)?;
    }
    Ok(())
}

fn load(w: &mut StateWriter<'_>, name: &str) -> Result<Option<Resource>, CatalogError> {
    w.resources()?
        .get(name.as_bytes())?
        .map(|v| decode(v.value()))
        .transpose()
}

/// Writes `r`, which was `before` (`None`: new), keeping the share index in step.
fn store(w: &mut StateWriter<'_>, before: Option<&Resource>, r: &Resource) -> Result<(), CatalogError> {
    w.resources()?.insert(r.name.as_bytes(), encode(r)?.as_slice())?;
    let old_shares = before.map(|b| b.shares.as_slice()).unwrap_or_default();
    share_index::update(w.txn(), &r.name, old_shares, &r.shares)?;
    mirror_index::update(w.txn(), &r.name, before, Some(r))
}

/// Writes `r` as a new resource unless one of its name exists, which then stays as it was; says
/// whether it wrote. One B-tree walk instead of a lookup and an insert: a register is most of
/// what a busy catalog applies, and a name taken is the rare case that puts the old row back.
fn store_new(w: &mut StateWriter<'_>, r: &Resource) -> Result<bool, CatalogError> {
    let t = w.resources()?;
    let replaced = t
        .insert(r.name.as_bytes(), encode(r)?.as_slice())?
        .map(|old| old.value().to_vec());
    if let Some(old) = replaced {
        t.insert(r.name.as_bytes(), old.as_slice())?;
        return Ok(false);
    }
    share_index::update(w.txn(), &r.name, &[], &r.shares)?;
    mirror_index::update(w.txn(), &r.name, None, Some(r))?;
    Ok(true)
}

/// Removes `r`'s row, keeping the indexes and the change feed in step.
fn remove(w: &mut StateWriter<'_>, r: &Resource, now_ms: u64) -> Result<(), CatalogError> {
    w.resources()?.remove(r.name.as_bytes())?;
    share_index::update(w.txn(), &r.name, &r.shares, &[])?;
    mirror_index::update(w.txn(), &r.name, Some(r), None)?;
    record_change(w, &r.name, ChangeKind::Removed, Some(r), None, now_ms)
}

/// The fields of a registration; `content` is its first version's root, if it has one.
struct Registration<'a> {
    name: &'a String,
    kind: &'a String,
    owner: &'a String,
    path: &'a Option<String>,
    metadata: &'a BTreeMap<String, String>,
    registered_at_ms: u64,
    content: Option<&'a String>,
}

/// A new local resource: version 0 without content, version 1 with it (registered and published
/// in one step).
fn register(w: &mut StateWriter<'_>, reg: Registration<'_>) -> Result<CommandResult, CatalogError> {
    let Registration {
        name,
        kind,
        owner,
        path,
        metadata,
        registered_at_ms,
        content,
    } = reg;
    if let Err(e) = validate::resource_name(name)
        .and_then(|_| validate::kind(kind))
        .and_then(|_| validate::owner(owner))
        .and_then(|_| validate::metadata(metadata))
    {
        return reject(Rejection::Invalid(e));
    }
    if path.as_ref().is_some_and(|p| p.len() > validate::MAX_PATH_LEN) {
        return reject(Rejection::Invalid("path too long".into()));
    }
    if content.is_some_and(|c| c.is_empty() || c.len() > validate::MAX_CONTENT_LEN) {
        return reject(Rejection::Invalid("content root must be 1..=128 bytes".into()));
    }
    let resource = Resource {
        name: name.clone(),
        kind: kind.clone(),
        owner: owner.clone(),
        version: u64::from(content.is_some()),
        content: content.cloned(),
        path: path.clone(),
        metadata: metadata.clone(),
        shares: Vec::new(),
        registered_at_ms,
        updated_at_ms: registered_at_ms,
        mirror_of: None,
    };
    if !store_new(w, &resource)? {
        // A mirror never holds a name against a local resource: names are this
        // cluster's own, and a mirror (which a peer's push may have created) is a copy
        // that gives way. Its content and files stay; only the record goes.
        match load(w, name)? {
            Some(mirror) if mirror.mirror_of.is_some() => {
                remove(w, &mirror, registered_at_ms)?;
                store_new(w, &resource)?;
            }
            _ => return reject(Rejection::ResourceExists(name.clone())),
        }
    }
    record_change(w, name, ChangeKind::Registered, None, Some(&resource), registered_at_ms)?;
    Ok(CommandResult::ResourceRegistered(resource))
}

pub(crate) fn apply(w: &mut StateWriter<'_>, cmd: &Command) -> Result<CommandResult, CatalogError> {
    match cmd {
        Command::RegisterResource {
            name,
            kind,
            owner,
            path,
            metadata,
            registered_at_ms,
        } => register(
            w,
            Registration {
                name,
                kind,
                owner,
                path,
                metadata,
                registered_at_ms: *registered_at_ms,
                content: None,
            },
        ),
        Command::RegisterPublished {
            name,
            kind,
            owner,
            path,
            metadata,
            registered_at_ms,
            content,
        } => register(
            w,
            Registration {
                name,
                kind,
                owner,
                path,
                metadata,
                registered_at_ms: *registered_at_ms,
                content: Some(content),
            },
        ),
        Command::UpdateMetadata {
            name,
            set,
            remove,
            now_ms,
        } => {
            let Some(mut r) = load(w, name)? else {
                return reject(Rejection::NoSuchResource(name.clone()));
            };
            let before = r.clone();
            let mut next: BTreeMap<String, String> = r.metadata.clone();
            for k in remove {
                next.remove(k);
            }
            next.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Err(e) = validate::metadata(&next) {
                return reject(Rejection::Invalid(e));
            }
            r.metadata = next;
            r.updated_at_ms = *now_ms;
            store(w, Some(&before), &r)?;
            record_change(w, name, ChangeKind::MetadataUpdated, Some(&before), Some(&r), *now_ms)?;
            Ok(CommandResult::Resource(r))
        }
        Command::PublishResource {
            name,
            content,
            base_version,
            now_ms,
        } => {
            let Some(mut r) = load(w, name)? else {
                return reject(Rejection::NoSuchResource(name.clone()));
            };
            if let Some(base) = *base_version
                && base != r.version
            {
                return reject(Rejection::VersionMoved {
                    name: name.clone(),
                    base,
                    have: r.version,
                });
            }
            if content
                .as_ref()
                .is_some_and(|c| c.is_empty() || c.len() > validate::MAX_CONTENT_LEN)
            {
                return reject(Rejection::Invalid("content root must be 1..=128 bytes".into()));
            }
            if r.mirror_of.is_some() {
                return reject(Rejection::Invalid("a mirror's versions come from its origin".into()));
            }
            let before = r.clone();
            let Some(next) = r.version.checked_add(1) else {
                return reject(Rejection::Invalid("version counter exhausted".into()));
            };
            r.version = next;
            r.content = content.clone();
            r.updated_at_ms = *now_ms;
            store(w, Some(&before), &r)?;
            record_change(w, name, ChangeKind::Published, Some(&before), Some(&r), *now_ms)?;
            Ok(CommandResult::Resource(r))
        }
        Command::RemoveResource { name, now_ms } => {
            let Some(r) = load(w, name)? else {
                return reject(Rejection::NoSuchResource(name.clone()));
            };
            remove(w, &r, *now_ms)?;
            Ok(CommandResult::ResourceRemoved(name.clone()))
        }
        Command::SetShare { name, rule, now_ms } => {
            // Checked here, where every path to a stored rule passes, not only in the CLI.
            if let Err(e) = rule.check() {
                return reject(Rejection::BadShare(e));
            }
            let Some(mut r) = load(w, name)? else {
                return reject(Rejection::NoSuchResource(name.clone()));
            };
            let before = r.clone();
            let count = r.shares.len();
            match r.shares.iter_mut().find(|s| s.audience == rule.audience) {
                Some(existing) => *existing = *rule,
                None if count >= validate::MAX_SHARES => {
                    return reject(Rejection::Invalid(format!(
                        "at most {} shares per resource",
                        validate::MAX_SHARES
                    )));
                }
                None => r.shares.push(*rule),
            }
            r.updated_at_ms = *now_ms;
            store(w, Some(&before), &r)?;
            record_change(w, name, ChangeKind::SharesChanged, Some(&before), Some(&r), *now_ms)?;
            Ok(CommandResult::Resource(r))
        }
        Command::RemoveShare { name, audience, now_ms } => {
            let Some(mut r) = load(w, name)? else {
                return reject(Rejection::NoSuchResource(name.clone()));
            };
            let before = r.clone();
            r.shares.retain(|s| s.audience != *audience);
            if r.shares.len() == before.shares.len() {
                return reject(Rejection::NoSuchShare(name.clone()));
            }
            r.updated_at_ms = *now_ms;
            store(w, Some(&before), &r)?;
            record_change(w, name, ChangeKind::SharesChanged, Some(&before), Some(&r), *now_ms)?;
            Ok(CommandResult::Resource(r))
        }
        Command::RecordMirror {
            name,
            origin,
            kind,
            owner,
            version,
            content,
            now_ms,
        } => {
            if let Err(e) = validate::resource_name(name)
                .and_then(|_| validate::kind(kind))
                .and_then(|_| validate::owner(owner))
            {
                return reject(Rejection::Invalid(e));
            }
            let existing = load(w, name)?;
            let before = existing.clone();
            let mut r = match existing {
                Some(r) if r.mirror_of != Some(*origin) => return reject(Rejection::MirrorNameTaken(name.clone())),
                // Only an exact repeat is refused: a lower version is what an origin that
                // removed and registered the name again publishes, and reconcile pulls until
                // the mirror equals the origin's view, so an older record is repaired.
                Some(r) if r.version == *version && r.content == *content => {
                    return reject(Rejection::MirrorUnchanged {
                        name: name.clone(),
                        version: r.version,
                    });
                }
                Some(r) => r,
                None => Resource {
                    name: name.clone(),
                    kind: kind.clone(),
                    owner: owner.clone(),
                    version: 0,
                    content: None,
                    path: None,
                    metadata: BTreeMap::new(),
                    shares: Vec::new(),
                    registered_at_ms: *now_ms,
                    updated_at_ms: *now_ms,
                    mirror_of: Some(*origin),
                },
            };
            r.version = *version;
            r.content = content.clone();
            r.kind = kind.clone();
            r.owner = owner.clone();
            r.updated_at_ms = *now_ms;
            store(w, before.as_ref(), &r)?;
            let kind = if before.is_some() {
                ChangeKind::Published
            } else {
                ChangeKind::Registered
            };
            record_change(w, name, kind, before.as_ref(), Some(&r), *now_ms)?;
            Ok(CommandResult::Resource(r))
        }
        _ => reject(Rejection::Invalid("not a resource command".into())),
    }
}

/// The newest change sequence number (0 before any change).
pub fn last_change_seq(txn: &ReadTransaction) -> Result<u64, CatalogError> {
    match txn.open_table(CHANGES) {
        Ok(t) => newest_seq(&t),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The sequence number of the newest change in the feed (0 while it is empty).
pub(crate) fn newest_seq(feed: &impl ReadableTable<&'static [u8], &'static [u8]>) -> Result<u64, CatalogError> {
    let Some((key, _)) = feed.last()? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = key
        .value()
        .try_into()
        .map_err(|_| CatalogError::Corrupt("change feed key is not a sequence number".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Up to `limit` changes with a sequence number above `after`, oldest first. The second value
/// is false when changes after `after` were already pruned (the watcher must re-list).
pub fn changes_after(txn: &ReadTransaction, after: u64, limit: usize) -> Result<(Vec<Change>, bool), CatalogError> {
    let t = match txn.open_table(CHANGES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), true)),
        Err(e) => return Err(e.into()),
    };
    let Some(next) = after.checked_add(1) else {
        return Ok((Vec::new(), true));
    };
    let start = next.to_be_bytes();
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(start.as_slice()..)? {
        out.push(decode::<Change>(row?.1.value())?);
        if out.len() >= limit {
            break;
        }
    }
    let complete = match out.first() {
        Some(first) => first.seq == next,
        None => true,
    };
    Ok((out, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run;
    use causeway_policy::{Audience, ShareMode, ShareRule};
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    #[test]
    fn a_local_registration_takes_the_name_from_a_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        let origin = causeway_proto::ClusterId([4; 32]);
        let mirror = Command::RecordMirror {
            name: "tools".into(),
            origin,
            kind: "artifact".into(),
            owner: "peer".into(),
            version: 3,
            content: Some("c".into()),
            now_ms: 1,
        };
        assert!(matches!(run(&db, mirror.clone()), CommandResult::Resource(_)));
        let register = Command::RegisterResource {
            name: "tools".into(),
            kind: "artifact".into(),
            owner: "local".into(),
            path: None,
            metadata: Default::default(),
            registered_at_ms: 2,
        };
        assert!(matches!(
            run(&db, register.clone()),
            CommandResult::ResourceRegistered(r) if r.mirror_of.is_none() && r.owner == "local"
        ));
        let r = db.begin_read().unwrap();
        assert!(crate::mirror_index::list_mirrors(&r, None, 10).unwrap().is_empty());
        let (changes, _) = changes_after(&r, 1, 10).unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ChangeKind::Removed, ChangeKind::Registered]);
        drop(r);
        // The peer cannot take it back, and a local resource still refuses a second one.
        assert_eq!(
            run(&db, mirror),
            CommandResult::Rejected(Rejection::MirrorNameTaken("tools".into()))
        );
        assert_eq!(
            run(&db, register),
            CommandResult::Rejected(Rejection::ResourceExists("tools".into()))
        );
    }

    #[test]
    fn a_registration_with_content_is_version_one_in_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        let register = |name: &str, content: &str| Command::RegisterPublished {
            name: name.into(),
            kind: "artifact".into(),
            owner: "ci".into(),
            path: Some("/srv/model.bin".into()),
            metadata: Default::default(),
            registered_at_ms: 5,
            content: content.into(),
        };
        let r = match run(&db, register("model", "root")) {
            CommandResult::ResourceRegistered(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!((r.version, r.content.as_deref()), (1, Some("root")));
        let read = db.begin_read().unwrap();
        let (changes, _) = changes_after(&read, 0, 10).unwrap();
        assert_eq!(changes.len(), 1, "one change: registered at version 1");
        assert_eq!((changes[0].kind, changes[0].version), (ChangeKind::Registered, 1));
        drop(read);
        // Refused whole: a taken name, an empty or oversized root.
        assert_eq!(
            run(&db, register("model", "other")),
            CommandResult::Rejected(Rejection::ResourceExists("model".into()))
        );
        for bad in [String::new(), "x".repeat(validate::MAX_CONTENT_LEN + 1)] {
            assert!(matches!(
                run(&db, register("other", &bad)),
                CommandResult::Rejected(Rejection::Invalid(_))
            ));
        }
        let read = db.begin_read().unwrap();
        assert!(crate::state::get_resource(&read, "other").unwrap().is_none());
    }

    #[test]
    fn a_public_share_with_write_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        run(&db, crate::test_support::register("x"));
        let share = |read_only| Command::SetShare {
            name: "x".into(),
            rule: ShareRule::new(Audience::Public, ShareMode::Bidirectional, read_only),
            now_ms: 1,
        };
        assert!(matches!(
            run(&db, share(false)),
            CommandResult::Rejected(Rejection::BadShare(causeway_policy::ShareRuleError::PublicWriteBack))
        ));
        assert!(matches!(run(&db, share(true)), CommandResult::Resource(r) if r.shares.len() == 1));
    }

    #[test]
    fn the_change_feed_keeps_only_the_newest_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        // The first pruning is at the first multiple of the step above the minimum.
        let written = MAX_CHANGES.next_multiple_of(CHANGE_PRUNE_STEP);
        for _ in 0..written {
            record_change(
                &mut StateWriter::new(&txn),
                "dash",
                ChangeKind::Registered,
                None,
                None,
                1,
            )
            .unwrap();
        }
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(r.open_table(CHANGES).unwrap().len().unwrap(), MAX_CHANGES);
        assert_eq!(last_change_seq(&r).unwrap(), written);
        // The oldest fell out: a watcher behind them is told to re-list.
        let first = written - MAX_CHANGES + 1;
        let (changes, complete) = changes_after(&r, 0, 1).unwrap();
        assert_eq!((changes[0].seq, complete), (first, false));
        let (changes, complete) = changes_after(&r, first - 1, 1).unwrap();
        assert_eq!((changes[0].seq, complete), (first, true));
        drop(r);
        // Between two prunings the feed grows past the minimum, then shrinks back to it.
        let feed_len = || db.begin_read().unwrap().open_table(CHANGES).unwrap().len().unwrap();
        let record = |n: u64| {
            let txn = db.begin_write().unwrap();
            let mut w = StateWriter::new(&txn);
            for _ in 0..n {
                record_change(&mut w, "dash", ChangeKind::Registered, None, None, 1).unwrap();
            }
            w.finish().unwrap();
            txn.commit().unwrap();
        };
        record(CHANGE_PRUNE_STEP - 1);
        assert_eq!(feed_len(), MAX_CHANGES + CHANGE_PRUNE_STEP - 1);
        record(1);
        assert_eq!(feed_len(), MAX_CHANGES);
    }

    #[test]
    fn a_publish_from_a_base_version_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        let reg = Command::RegisterResource {
            name: "dash".into(),
            kind: "artifact".into(),
            owner: "o".into(),
            path: None,
            metadata: BTreeMap::new(),
            registered_at_ms: 1,
        };
        assert!(matches!(run(&db, reg), CommandResult::ResourceRegistered(_)));
        // Made from version 0, it applies once; the same command again (a retry after a lost
        // answer) finds the version moved and changes nothing.
        let from_0 = Command::PublishResource {
            name: "dash".into(),
            content: Some("h1".into()),
            base_version: Some(0),
            now_ms: 2,
        };
        assert!(matches!(run(&db, from_0.clone()), CommandResult::Resource(r) if r.version == 1));
        assert!(matches!(
            run(&db, from_0),
            CommandResult::Rejected(Rejection::VersionMoved { base: 0, have: 1, .. })
        ));
        let r = db.begin_read().unwrap();
        assert_eq!(last_change_seq(&r).unwrap(), 2);
    }

    #[test]
    fn versions_metadata_shares_and_the_change_feed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        let reg = Command::RegisterResource {
            name: "dash".into(),
            kind: "monitoring/dashboard".into(),
            owner: "grafana".into(),
            path: None,
            metadata: BTreeMap::from([("team".into(), "sre".into())]),
            registered_at_ms: 1,
        };
        assert!(matches!(run(&db, reg), CommandResult::ResourceRegistered(_)));
        let publish = |c: &str| Command::PublishResource {
            name: "dash".into(),
            content: Some(c.into()),
            base_version: None,
            now_ms: 2,
        };
        assert!(matches!(run(&db, publish("h1")), CommandResult::Resource(r) if r.version == 1));
        assert!(
            matches!(run(&db, publish("h2")), CommandResult::Resource(r) if r.version == 2 && r.content.as_deref() == Some("h2"))
        );
        let share = Command::SetShare {
            name: "dash".into(),
            rule: ShareRule::new(Audience::Public, ShareMode::Pull, true),
            now_ms: 3,
        };
        assert!(matches!(run(&db, share), CommandResult::Resource(r) if r.shares.len() == 1));
        let replace = Command::SetShare {
            name: "dash".into(),
            rule: ShareRule::new(Audience::Public, ShareMode::Bidirectional, true),
            now_ms: 3,
        };
        assert!(
            matches!(run(&db, replace), CommandResult::Resource(r) if r.shares.len() == 1 && r.shares[0].mode == ShareMode::Bidirectional)
        );
        let meta = Command::UpdateMetadata {
            name: "dash".into(),
            set: BTreeMap::from([("tier".into(), "1".into())]),
            remove: vec!["team".into()],
            now_ms: 4,
        };
        assert!(matches!(run(&db, meta), CommandResult::Resource(r) if r.metadata.len() == 1 && r.version == 2));
        let too_big = Command::UpdateMetadata {
            name: "dash".into(),
            set: BTreeMap::from([("k".into(), "v".repeat(validate::MAX_METADATA_VALUE + 1))]),
            remove: vec![],
            now_ms: 4,
        };
        assert!(matches!(
            run(&db, too_big),
            CommandResult::Rejected(Rejection::Invalid(_))
        ));
        let unshare = Command::RemoveShare {
            name: "dash".into(),
            audience: Audience::Linked,
            now_ms: 5,
        };
        assert!(matches!(
            run(&db, unshare),
            CommandResult::Rejected(Rejection::NoSuchShare(_))
        ));
        let rm = Command::RemoveResource {
            name: "dash".into(),
            now_ms: 6,
        };
        assert_eq!(run(&db, rm.clone()), CommandResult::ResourceRemoved("dash".into()));
        assert!(matches!(
            run(&db, rm),
            CommandResult::Rejected(Rejection::NoSuchResource(_))
        ));

        let r = db.begin_read().unwrap();
        assert_eq!(last_change_seq(&r).unwrap(), 7);
        let (changes, complete) = changes_after(&r, 0, 100).unwrap();
        assert!(complete);
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Registered,
                ChangeKind::Published,
                ChangeKind::Published,
                ChangeKind::SharesChanged,
                ChangeKind::SharesChanged,
                ChangeKind::MetadataUpdated,
                ChangeKind::Removed
            ]
        );
        let (tail, _) = changes_after(&r, 5, 1).unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].seq, 6);
    }
}
