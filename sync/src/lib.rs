//! Moving content: git repositories as chains of incremental bundles ([`git`]) and the
//! bookkeeping of every transfer for `causeway sync status` ([`status`]).
//!
//! [`status`] is sans-IO (time is an input). [`git`] drives the `git` program with a clean
//! environment; it never re-implements pack formats.

pub mod git;
pub mod status;

pub use git::{ApplyMode, ApplyOutcome, BundleInfo, GitError, ObjectFormat, RefMap, RefusedRef};
pub use status::{Direction, StatusConfig, Transfer, TransferState, TransferStatus};
