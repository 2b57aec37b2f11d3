//! Share policy, pure and sans-IO: may cluster P see, pull, push or write back resource R, which
//! rule grants it, or precisely why not. Every server path (catalog query, change notification,
//! blob request, push offer, write-back) asks [`decide`]; what a peer is told about a denial comes
//! from [`DenyReason::peer_visible`], never from the reason itself.
//!
//! # Semantics
//!
//! * **Fail closed.** A resource with no rules is private. An unknown resource, an unknown
//!   endpoint or an uncovered peer is denied.
//! * **Coverage.** `public` covers every verified cluster, linked or not, for every action, and
//!   unknown endpoints for `see` and `pull` only ("unknown endpoints get the public view only").
//!   `linked` covers the clusters this cluster links to. A cluster id covers that cluster **only
//!   while this cluster links to it**: sharing with one cluster is a decision about a peer we chose
//!   to federate with, so an inbound-only peer (it links to us, we do not link to it) gets public
//!   shares only, and removing a link withdraws every share naming that cluster without editing
//!   the shares. Such a denial is reported as [`DenyReason::NotLinked`] so the owner sees why.
//! * **Modes.** Every mode lets the grantee see and pull; `push` and `bidirectional` also let the
//!   owner push to it; only `bidirectional` without `read-only` lets it write back, and never
//!   under a `public` rule (anyone can make a cluster key): [`ShareRule::check`] refuses such a
//!   rule, and one stored earlier acts as read-only.
//! * **Which rule.** Rules are independent grants (no rule ever denies), so adding a rule can only
//!   widen access. When several grant, the most specific (cluster, then linked, then public) is
//!   reported, ties to the lowest index.
//! * **Secrecy.** A peer that may not see a resource gets the same [`PeerVisibleDenial::NotFound`]
//!   whether or not the resource exists.
//!
//! The receiving side of a push is [`accept_push`]: only from the mirror's origin, through our
//! link, and only when the mirror takes pushes.

mod decide;
mod denial;
mod peer;
mod receiver;
mod rule;
mod view;

pub use decide::{Decision, Grant, decide};
pub use denial::{DenyReason, PeerVisibleDenial};
pub use peer::{Action, PeerRelation};
pub use receiver::{PushDecision, PushRefusal, Subscription, accept_push};
pub use rule::{Audience, AudienceParseError, ShareMode, ShareModeParseError, ShareRule, ShareRuleError};
pub use view::{PreviewEntry, preview, visible_mode};
