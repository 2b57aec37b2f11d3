//! The federation messages the simulator carries between clusters. They mirror
//! `causeway_proto::fed` (heartbeat, catalog query and change notification, push offer,
//! write-back) plus the blob fetch of a pull, folded into one request/answer pair.
//!
//! Messages that carry something a peer may only get under the owner's policy also carry the
//! checker's verdict taken when they were sent (`verdict`): that is bookkeeping of the
//! simulator, not part of the wire format, and no handler reads it.

use causeway_proto::fed::CatalogEntry;

use super::{invariants::Verdict, world::Refs};

#[derive(Clone, Debug)]
pub enum Body {
    Heartbeat {
        /// Which incarnation of the sender's link health sent it (a stream of its own).
        instance: u64,
        seq: u64,
    },
    HeartbeatAck {
        instance: u64,
        seq: u64,
        links_back: bool,
    },
    /// The owner's change notification, built with `Federation::delta_for`.
    CatalogChanged {
        changes: Vec<(String, Option<CatalogEntry>)>,
        verdicts: Vec<Verdict>,
    },
    /// The periodic resync: "what do you share with me?"
    CatalogQuery {
        req: u64,
    },
    Catalog {
        req: u64,
        answer: Result<Vec<(CatalogEntry, Verdict)>, String>,
    },
    /// A mirror asks for the current version of a resource and its content.
    PullRequest {
        req: u64,
        name: String,
    },
    PullReply {
        req: u64,
        answer: Result<Pulled, String>,
    },
    /// The owner offers a new version under a push share.
    PushOffer {
        name: String,
        version: u64,
        verdict: Verdict,
    },
    /// A bidirectional mirror offers its refs back to the origin.
    WriteBack {
        req: u64,
        name: String,
        refs: Refs,
    },
    WriteBackAnswer {
        req: u64,
        answer: Result<(), String>,
    },
}

/// A version handed to a mirror: catalog fields and the content (the repository's refs).
#[derive(Clone, Debug)]
pub struct Pulled {
    pub name: String,
    pub version: u64,
    pub content: Option<String>,
    pub refs: Refs,
    pub verdict: Verdict,
}
