//! The mirror index: a derived table of the names of resources that are mirrors of a peer's, so
//! the leader's reconcile visits only mirrors instead of the whole catalog. Like the share
//! index, it is kept in step inside every write transaction that stores or removes a resource,
//! is never part of a snapshot, and is rebuilt on import and for a database made before it.

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::command::Resource;
use crate::state::{CatalogError, MAX_PAGE, RESOURCES, decode};

/// Resource name (UTF-8) of every mirror.
pub(crate) const MIRROR_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("catalog_mirror_index");

/// Keeps `name`'s row in step with whether it is a mirror now (`after`: `None` once removed).
pub(crate) fn update(
    txn: &WriteTransaction,
    name: &str,
    before: Option<&Resource>,
    after: Option<&Resource>,
) -> Result<(), CatalogError> {
    let was = before.is_some_and(|r| r.mirror_of.is_some());
    let is = after.is_some_and(|r| r.mirror_of.is_some());
    if was == is {
        return Ok(());
    }
    let mut t = txn.open_table(MIRROR_INDEX)?;
    if is {
        t.insert(name.as_bytes(), ())?;
    } else {
        t.remove(name.as_bytes())?;
    }
    Ok(())
}

/// Replaces the index with one derived from the resources table.
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<(), CatalogError> {
    txn.delete_table(MIRROR_INDEX)?;
    let mut index = txn.open_table(MIRROR_INDEX)?;
    let resources = txn.open_table(RESOURCES)?;
    for row in resources.range::<&[u8]>(..)? {
        let (k, v) = row?;
        let r: Resource = decode(v.value())?;
        if r.mirror_of.is_some() {
            index.insert(k.value(), ())?;
        }
    }
    Ok(())
}

/// Builds the index once for a database made by a version without it.
pub(crate) fn ensure(txn: &WriteTransaction) -> Result<(), CatalogError> {
    if !txn.list_tables()?.any(|t| t.name() == MIRROR_INDEX.name()) {
        rebuild(txn)?;
    }
    Ok(())
}

/// Up to `limit` mirrors (clamped to `1..=MAX_PAGE`) named strictly after `after`, in name order.
pub fn list_mirrors(txn: &ReadTransaction, after: Option<&str>, limit: usize) -> Result<Vec<Resource>, CatalogError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let index = match txn.open_table(MIRROR_INDEX) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let resources = txn.open_table(RESOURCES)?;
    let range = match after {
        Some(a) => index.range::<&[u8]>((std::ops::Bound::Excluded(a.as_bytes()), std::ops::Bound::Unbounded))?,
        None => index.range::<&[u8]>(..)?,
    };
    let mut out = Vec::with_capacity(limit.min(64));
    for row in range {
        let (k, _) = row?;
        // A row without its resource would be a bug elsewhere; skip it rather than fail reconcile.
        if let Some(v) = resources.get(k.value())? {
            out.push(decode(v.value())?);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use causeway_proto::ClusterId;

    use super::*;
    use crate::command::{Command, CommandResult};
    use crate::test_support::{db, run};

    fn mirrors(db: &redb::Database, after: Option<&str>, limit: usize) -> Vec<String> {
        use redb::ReadableDatabase;
        let txn = db.begin_read().expect("read");
        list_mirrors(&txn, after, limit)
            .expect("list")
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    fn record(name: &str, version: u64) -> Command {
        Command::RecordMirror {
            name: name.into(),
            origin: ClusterId([7; 32]),
            kind: "artifact".into(),
            owner: "o".into(),
            version,
            content: Some(format!("{version:064x}")),
            now_ms: 1,
        }
    }

    #[test]
    fn the_index_lists_mirrors_only_in_name_order_and_follows_removal() {
        let (_d, db) = db();
        run(
            &db,
            Command::RegisterResource {
                name: "b-own".into(),
                kind: "artifact".into(),
                owner: "o".into(),
                metadata: BTreeMap::new(),
                path: None,
                registered_at_ms: 1,
            },
        );
        for name in ["c-mirror", "a-mirror", "d-mirror"] {
            assert!(matches!(run(&db, record(name, 1)), CommandResult::Resource(_)));
        }
        assert!(matches!(run(&db, record("a-mirror", 2)), CommandResult::Resource(_)));
        assert_eq!(mirrors(&db, None, 10), ["a-mirror", "c-mirror", "d-mirror"]);
        assert_eq!(mirrors(&db, Some("a-mirror"), 1), ["c-mirror"]);
        assert_eq!(mirrors(&db, Some("b"), 10), ["c-mirror", "d-mirror"]);
        run(
            &db,
            Command::RemoveResource {
                name: "c-mirror".into(),
                now_ms: 2,
            },
        );
        assert_eq!(mirrors(&db, None, 10), ["a-mirror", "d-mirror"]);

        // Rebuilt from the resources on import and for a database that lacks it.
        let txn = db.begin_write().expect("txn");
        txn.delete_table(MIRROR_INDEX).expect("drop");
        ensure(&txn).expect("ensure");
        txn.commit().expect("commit");
        assert_eq!(mirrors(&db, None, 10), ["a-mirror", "d-mirror"]);
    }
}
