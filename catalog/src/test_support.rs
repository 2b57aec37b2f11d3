//! What the catalog's unit tests share: a fresh database with its tables, applying one command
//! in its own transaction, and a plain registration.

use std::borrow::Borrow;

use redb::Database;

use crate::command::{Command, CommandResult};

/// A new database in a temp dir (kept alive by the returned guard), tables created.
pub(crate) fn db() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("catalog.redb")).expect("database");
    let txn = db.begin_write().expect("write txn");
    crate::state::create_tables(&txn).expect("tables");
    txn.commit().expect("commit");
    (dir, db)
}

/// Applies `cmd` in a transaction of its own and commits it.
pub(crate) fn run(db: &Database, cmd: impl Borrow<Command>) -> CommandResult {
    let txn = db.begin_write().expect("write txn");
    let r = crate::state::apply(&txn, cmd.borrow()).expect("apply");
    txn.commit().expect("commit");
    r
}

/// Registers an `artifact` named `name`, without path or metadata.
pub(crate) fn register(name: &str) -> Command {
    Command::RegisterResource {
        name: name.into(),
        kind: "artifact".into(),
        owner: "ci".into(),
        path: None,
        metadata: Default::default(),
        registered_at_ms: 1,
    }
}
