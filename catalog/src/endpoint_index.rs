//! The endpoint index: which link owns each peer endpoint, so an inbound session's peer is
//! found by its verified endpoint in one lookup, never by the first link in name order whose
//! card happens to list it. Derived from the links table: rebuilt inside every link command's
//! transaction (links are few), on snapshot import, and for a database made before it. An
//! endpoint two links claim (possible only in data stored before claims were refused) has no
//! owner at all.

use std::collections::{BTreeMap, BTreeSet};

use causeway_proto::EndpointKey;
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::links::LinkRecord;
use crate::state::{CatalogError, LINKS, decode};

/// Endpoint key (32 bytes) to the name of the active link that owns it.
const ENDPOINT_OWNERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog_endpoint_owners");

/// The endpoints a link speaks for: its pinned card's members, or, before the first handshake,
/// the endpoint the admin gave.
pub fn claims(link: &LinkRecord) -> Vec<EndpointKey> {
    match (&link.pinned, &link.card) {
        (Some(_), Some(c)) => c.card.endpoints(),
        _ => vec![link.endpoint],
    }
}

/// Replaces the index with one derived from the links table.
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<(), CatalogError> {
    let mut owners: BTreeMap<EndpointKey, String> = BTreeMap::new();
    let mut contested: BTreeSet<EndpointKey> = BTreeSet::new();
    {
        let links = txn.open_table(LINKS)?;
        for row in links.range::<&[u8]>(..)? {
            let link: LinkRecord = decode(row?.1.value())?;
            if link.is_removed() {
                continue;
            }
            for e in claims(&link) {
                if contested.contains(&e) {
                    continue;
                }
                match owners.get(&e) {
                    Some(other) if *other != link.name => {
                        owners.remove(&e);
                        contested.insert(e);
                    }
                    _ => {
                        owners.insert(e, link.name.clone());
                    }
                }
            }
        }
    }
    txn.delete_table(ENDPOINT_OWNERS)?;
    let mut t = txn.open_table(ENDPOINT_OWNERS)?;
    for (e, name) in owners {
        t.insert(e.as_bytes().as_slice(), name.as_bytes())?;
    }
    Ok(())
}

/// Builds the index once for a database made by a version without it.
pub(crate) fn ensure(txn: &WriteTransaction) -> Result<(), CatalogError> {
    if !txn.list_tables()?.any(|t| t.name() == ENDPOINT_OWNERS.name()) {
        rebuild(txn)?;
    }
    Ok(())
}

/// The active link that owns `endpoint`, inside a write transaction.
pub(crate) fn owner_w(txn: &WriteTransaction, endpoint: &EndpointKey) -> Result<Option<String>, CatalogError> {
    let t = txn.open_table(ENDPOINT_OWNERS)?;
    let found = t.get(endpoint.as_bytes().as_slice())?;
    Ok(found.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}

/// The name of the active link that owns `endpoint`.
pub fn owner(txn: &ReadTransaction, endpoint: &EndpointKey) -> Result<Option<String>, CatalogError> {
    let t = match txn.open_table(ENDPOINT_OWNERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let found = t.get(endpoint.as_bytes().as_slice())?;
    Ok(found.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}
