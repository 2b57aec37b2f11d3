//! The one-time invite ticket a member hands to a new node: the cluster, where to reach its
//! members, and a secret. Printed as text an admin can copy; parsed with a size limit.

use std::{fmt, net::SocketAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, EndpointKey};

/// Text prefix; the digit is the ticket format version.
pub const PREFIX: &str = "cwinvite1";
/// Largest ticket text accepted.
pub const MAX_TICKET_LEN: usize = 4096;
/// Most member addresses carried by one ticket.
pub const MAX_TICKET_MEMBERS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMember {
    pub endpoint: EndpointKey,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteTicket {
    pub cluster: ClusterId,
    pub members: Vec<TicketMember>,
    pub invite_id: [u8; 16],
    pub secret: [u8; 32],
    /// Unix time in milliseconds after which the cluster refuses the ticket.
    pub expires_at_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("ticket is longer than {MAX_TICKET_LEN} characters")]
    TooLong,
    #[error("not a causeway invite ticket (it must start with {PREFIX:?})")]
    BadPrefix,
    #[error("ticket is damaged: {0}")]
    Damaged(String),
    #[error("ticket lists no member to contact")]
    NoMembers,
}

impl fmt::Display for InviteTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = postcard::to_stdvec(self).map_err(|_| fmt::Error)?;
        write!(f, "{PREFIX}{}", data_encoding_base32(&bytes))
    }
}

impl FromStr for InviteTicket {
    type Err = TicketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong);
        }
        let body = s.strip_prefix(PREFIX).ok_or(TicketError::BadPrefix)?;
        let bytes = base32_decode(body).ok_or_else(|| TicketError::Damaged("not base32".into()))?;
        let ticket: InviteTicket =
            crate::frame::decode(&bytes, MAX_TICKET_LEN).map_err(|e| TicketError::Damaged(e.to_string()))?;
        if ticket.members.is_empty() {
            return Err(TicketError::NoMembers);
        }
        if ticket.members.len() > MAX_TICKET_MEMBERS {
            return Err(TicketError::Damaged("too many members".into()));
        }
        Ok(ticket)
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

// Unpadded lowercase RFC 4648 base32, kept local so proto stays free of encoding crates.
fn data_encoding_base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_lowercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InviteTicket {
        InviteTicket {
            cluster: ClusterId([1; 32]),
            members: vec![TicketMember {
                endpoint: EndpointKey([2; 32]),
                addrs: vec!["127.0.0.1:4000".parse().unwrap()],
            }],
            invite_id: [3; 16],
            secret: [4; 32],
            expires_at_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let s = t.to_string();
        assert!(s.starts_with(PREFIX));
        assert_eq!(s.parse::<InviteTicket>().unwrap(), t);
    }

    #[test]
    fn bad_tickets_are_refused() {
        assert_eq!("hello".parse::<InviteTicket>(), Err(TicketError::BadPrefix));
        assert!(matches!(
            format!("{PREFIX}!!!").parse::<InviteTicket>(),
            Err(TicketError::Damaged(_))
        ));
        let mut s = sample().to_string();
        s.truncate(s.len() - 10);
        assert!(s.parse::<InviteTicket>().is_err());
        let long = format!("{PREFIX}{}", "a".repeat(MAX_TICKET_LEN));
        assert_eq!(long.parse::<InviteTicket>(), Err(TicketError::TooLong));
        let mut t = sample();
        t.members.clear();
        assert_eq!(t.to_string().parse::<InviteTicket>(), Err(TicketError::NoMembers));
    }
}
