//! Wire types shared by every Causeway crate: protocol names, identifiers, size-limited
//! postcard framing and the invite ticket. Nothing here performs I/O.

pub mod alpn;
pub mod card;
pub mod fed;
pub mod frame;
pub mod ids;
pub mod join;
pub mod rotation;
pub mod ticket;

pub use frame::{FrameError, decode, encode};
pub use ids::{ClusterId, EndpointKey, IdParseError};
pub use ticket::{InviteTicket, TicketError};
