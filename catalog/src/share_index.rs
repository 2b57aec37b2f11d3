//! The share index and the policy-filtered catalog page it serves. The index is a derived table:
//! one row per (audience, resource name) for every share rule, so a peer's page walks only the
//! names some rule covering that peer shares (public, plus linked and its own cluster when we link
//! to it), merged in name order, instead of every resource. A resource without a share is private
//! and has no row. Rows are maintained inside the write transaction of every command that changes
//! a resource's shares or removes it, are never part of a snapshot, and are rebuilt from the
//! resources on import and when a database made before the index existed is opened.

use std::ops::Bound;

use causeway_policy::{Action, Audience, PeerRelation, ShareMode, ShareRule, visible_mode};
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::command::Resource;
use crate::state::{CatalogError, MAX_PAGE, RESOURCES, decode};

/// Audience tag (one byte), the cluster id for a cluster audience (32 bytes), then the resource
/// name (UTF-8). Every prefix of one audience has the same length, so within it keys sort by name.
pub(crate) const SHARE_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("catalog_share_index");

const TAG_PUBLIC: u8 = 0;
const TAG_LINKED: u8 = 1;
const TAG_CLUSTER: u8 = 2;

fn prefix(audience: &Audience) -> Vec<u8> {
    match audience {
        Audience::Public => vec![TAG_PUBLIC],
        Audience::Linked => vec![TAG_LINKED],
        Audience::Cluster(id) => {
            let mut p = Vec::with_capacity(1 + id.0.len());
            p.push(TAG_CLUSTER);
            p.extend_from_slice(&id.0);
            p
        }
    }
}

/// The first key after every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn key(audience: &Audience, name: &str) -> Vec<u8> {
    let mut k = prefix(audience);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Moves `name`'s rows from the audiences of `before` to those of `after`.
pub(crate) fn update(
    txn: &WriteTransaction,
    name: &str,
    before: &[ShareRule],
    after: &[ShareRule],
) -> Result<(), CatalogError> {
    let dropped = before
        .iter()
        .filter(|b| !after.iter().any(|a| a.audience == b.audience));
    let added = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.audience == a.audience));
    let mut dropped = dropped.peekable();
    let mut added = added.peekable();
    if dropped.peek().is_none() && added.peek().is_none() {
        return Ok(());
    }
    let mut t = txn.open_table(SHARE_INDEX)?;
    for rule in dropped {
        t.remove(key(&rule.audience, name).as_slice())?;
    }
    for rule in added {
        t.insert(key(&rule.audience, name).as_slice(), ())?;
    }
    Ok(())
}

/// Replaces the index with one derived from the resources table.
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<(), CatalogError> {
    txn.delete_table(SHARE_INDEX)?;
    let mut index = txn.open_table(SHARE_INDEX)?;
    let resources = txn.open_table(RESOURCES)?;
    for row in resources.range::<&[u8]>(..)? {
        let (k, v) = row?;
        let r: Resource = decode(v.value())?;
        // Keyed by the row's key, which is what a page looks the resource up by.
        for rule in &r.shares {
            let mut index_key = prefix(&rule.audience);
            index_key.extend_from_slice(k.value());
            index.insert(index_key.as_slice(), ())?;
        }
    }
    Ok(())
}

/// Builds the index once for a database made by a version without it.
pub(crate) fn ensure(txn: &WriteTransaction) -> Result<(), CatalogError> {
    let present = txn.list_tables()?.any(|t| t.name() == SHARE_INDEX.name());
    if !present {
        rebuild(txn)?;
    }
    Ok(())
}

/// A resource a peer may see, with the mode and read-only flag it sees it under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisibleEntry {
    pub resource: Resource,
    pub mode: ShareMode,
    pub read_only: bool,
}

/// One page of what a peer may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisiblePage {
    pub entries: Vec<VisibleEntry>,
    /// True exactly when the peer may see a resource named after the last entry.
    pub more: bool,
    /// Index rows read for this page (for measurements; never shown to a peer).
    pub rows_read: usize,
}

/// The audiences whose rules can cover `peer`: every other rule names another cluster.
fn covering_audiences(peer: &PeerRelation) -> Vec<Audience> {
    let mut candidates = vec![Audience::Public, Audience::Linked];
    candidates.extend(peer.cluster().map(Audience::Cluster));
    candidates.retain(|a| a.covers(peer, Action::See));
    candidates
}

/// Up to `limit` resources `peer` may see (clamped to `1..=MAX_PAGE`), in name order, named
/// strictly after `after`. Only index rows of resources the peer may see are read, at most
/// `(limit + 1)` per covering audience, so neither the result nor the work done depends on
/// resources hidden from it; `after` may be any name, visible or not, existing or not.
pub fn visible_page(
    txn: &ReadTransaction,
    peer: &PeerRelation,
    after: Option<&str>,
    limit: usize,
) -> Result<VisiblePage, CatalogError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut page = VisiblePage {
        entries: Vec::with_capacity(limit.min(64)),
        more: false,
        rows_read: 0,
    };
    let index = match txn.open_table(SHARE_INDEX) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(page),
        Err(e) => return Err(e.into()),
    };
    let resources = txn.open_table(RESOURCES)?;

    // One ordered stream of names per covering audience, merged with duplicates collapsed (a
    // resource may be shared with several audiences that all cover the peer).
    let mut streams = Vec::new();
    for audience in covering_audiences(peer) {
        let prefix = prefix(&audience);
        let start = match after {
            Some(a) => Bound::Excluded(key(&audience, a)),
            None => Bound::Included(prefix.clone()),
        };
        // Bounded above too, so not even the row after the audience's last is read.
        let end = match prefix_end(&prefix) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let range = index.range::<&[u8]>((start.as_ref().map(|k| k.as_slice()), end.as_ref().map(|k| k.as_slice())))?;
        streams.push(NameStream {
            prefix,
            range,
            head: None,
        });
    }
    for s in &mut streams {
        s.advance(&mut page.rows_read)?;
    }
    let mut inconsistent = 0usize;
    while let Some(next) = streams.iter().filter_map(|s| s.head.as_ref()).min().cloned() {
        // The index says the peer may see it; the resource's own rules decide, so a stale row
        // can never show a resource (it is skipped and reported here, never to the peer).
        let shown = match resources.get(next.as_slice())? {
            Some(value) => {
                let resource: Resource = decode(value.value())?;
                visible_mode(peer, &resource.shares).map(|(mode, read_only)| VisibleEntry {
                    resource,
                    mode,
                    read_only,
                })
            }
            None => None,
        };
        match shown {
            // One visible name past a full page is all `more` needs; nothing further is read.
            Some(_) if page.entries.len() == limit => {
                page.more = true;
                break;
            }
            Some(entry) => page.entries.push(entry),
            None => inconsistent += 1,
        }
        for s in &mut streams {
            if s.head.as_ref() == Some(&next) {
                s.advance(&mut page.rows_read)?;
            }
        }
    }
    if inconsistent > 0 {
        tracing::warn!(rows = inconsistent, "share index rows disagree with the resources");
    }
    Ok(page)
}

/// The names under one audience prefix, in order.
struct NameStream<'a> {
    prefix: Vec<u8>,
    range: redb::Range<'a, &'static [u8], ()>,
    head: Option<Vec<u8>>,
}

impl NameStream<'_> {
    fn advance(&mut self, rows_read: &mut usize) -> Result<(), CatalogError> {
        self.head = match self.range.next() {
            Some(row) => {
                let (k, _) = row?;
                *rows_read += 1;
                k.value().strip_prefix(self.prefix.as_slice()).map(<[u8]>::to_vec)
            }
            None => None,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
