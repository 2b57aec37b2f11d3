//! Applying many commands in one write transaction: the resource and change-feed tables, which
//! every resource command touches, are opened once for the whole batch instead of once or twice
//! per command (opening a redb table costs about as much as the write itself).

use redb::{Table, WriteTransaction};

use crate::command::{Command, CommandResult};
use crate::state::{CHANGES, CatalogError, RESOURCES};

type RowTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// The catalog tables of one write transaction, for applying commands in log order.
pub struct StateWriter<'txn> {
    txn: &'txn WriteTransaction,
    resources: Option<RowTable<'txn>>,
    changes: Option<RowTable<'txn>>,
    /// The change feed's newest sequence number, read once per writer instead of once per change.
    newest_change: Option<u64>,
}

impl<'txn> StateWriter<'txn> {
    pub fn new(txn: &'txn WriteTransaction) -> Self {
        Self {
            txn,
            resources: None,
            changes: None,
            newest_change: None,
        }
    }

    /// Applies one committed command. Storage errors are returned (the caller must stop, as the
    /// state machine cannot skip an entry); rule violations become `CommandResult::Rejected`.
    pub fn apply(&mut self, cmd: &Command) -> Result<CommandResult, CatalogError> {
        match cmd {
            Command::RegisterResource { .. }
            | Command::UpdateMetadata { .. }
            | Command::PublishResource { .. }
            | Command::RemoveResource { .. }
            | Command::SetShare { .. }
            | Command::RemoveShare { .. }
            | Command::RecordMirror { .. } => crate::resources::apply(self, cmd),
            Command::AddLink { .. }
            | Command::PinLink { .. }
            | Command::UpdatePeerCard { .. }
            | Command::RemoveLink { .. } => crate::links::apply(self.uncached(), cmd),
            Command::PeerCatalogUpdate { .. } | Command::PeerCatalogSync { .. } => {
                crate::peer_views::apply(self.uncached(), cmd)
            }
            Command::InitCluster { .. }
            | Command::CreateInvite { .. }
            | Command::RedeemInvite { .. }
            | Command::SetOwnCard { .. } => crate::state::apply_cluster(self.uncached(), cmd),
        }
    }

    /// The transaction for code that opens the tables it needs itself: redb refuses to open a
    /// table twice, so the cached ones are closed first.
    fn uncached(&mut self) -> &'txn WriteTransaction {
        self.resources = None;
        self.changes = None;
        // Code given the bare transaction may record changes of its own.
        self.newest_change = None;
        self.txn
    }

    pub(crate) fn txn(&self) -> &'txn WriteTransaction {
        self.txn
    }

    pub(crate) fn resources(&mut self) -> Result<&mut RowTable<'txn>, CatalogError> {
        open(self.txn, &mut self.resources, RESOURCES)
    }

    /// The sequence number for the next change, counted as taken. The feed is pruned from its
    /// oldest end only, so its last key is the newest number: deriving it from there spares every
    /// write a counter row in a table of its own (one more page in each fsync).
    pub(crate) fn next_change_seq(&mut self) -> Result<u64, CatalogError> {
        let newest = match self.newest_change {
            Some(n) => n,
            None => crate::resources::newest_seq(self.changes()?)?,
        };
        let next = newest.saturating_add(1);
        self.newest_change = Some(next);
        Ok(next)
    }

    pub(crate) fn changes(&mut self) -> Result<&mut RowTable<'txn>, CatalogError> {
        open(self.txn, &mut self.changes, CHANGES)
    }
}

fn open<'a, 'txn>(
    txn: &'txn WriteTransaction,
    slot: &'a mut Option<RowTable<'txn>>,
    def: redb::TableDefinition<'static, &'static [u8], &'static [u8]>,
) -> Result<&'a mut RowTable<'txn>, CatalogError> {
    match slot {
        Some(t) => Ok(t),
        None => Ok(slot.insert(txn.open_table(def)?)),
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::test_support::{db, register, run};

    /// Commands of every kind, resource commands on both sides of the others.
    fn mixed() -> Vec<Command> {
        let invite = Command::CreateInvite {
            invite_id: [1; 16],
            secret_hash: [2; 32],
            expires_at_ms: 10,
            created_by: causeway_proto::EndpointKey([3; 32]),
        };
        let publish = |name: &str| Command::PublishResource {
            name: name.into(),
            content: Some("c".repeat(64)),
            base_version: None,
            now_ms: 2,
        };
        vec![
            register("a"),
            register("b"),
            invite.clone(),
            publish("a"),
            invite,
            register("a"),
            Command::RemoveResource {
                name: "b".into(),
                now_ms: 3,
            },
            publish("b"),
        ]
    }

    #[test]
    fn one_writer_for_a_batch_gives_what_one_transaction_per_command_gives() {
        let (_d1, batched) = db();
        let txn = batched.begin_write().unwrap();
        let mut writer = StateWriter::new(&txn);
        let together: Vec<_> = mixed().iter().map(|c| writer.apply(c).unwrap()).collect();
        drop(writer);
        txn.commit().unwrap();

        let (_d2, single) = db();
        let apart: Vec<_> = mixed().into_iter().map(|c| run(&single, c)).collect();

        assert_eq!(together, apart);
        let export = |db: &redb::Database| crate::state::export(&db.begin_read().unwrap()).unwrap();
        assert_eq!(export(&batched), export(&single));
    }
}
