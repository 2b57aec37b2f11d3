//! Identifiers: an endpoint's public key and a cluster's public key, printed the way iroh prints
//! an `EndpointId` (lowercase hex), so admins can paste them between tools.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id {input:?}: expected 64 hex characters")]
pub struct IdParseError {
    pub input: String,
}

fn parse_key(s: &str) -> Result<[u8; 32], IdParseError> {
    let err = || IdParseError {
        input: s.chars().take(80).collect(),
    };
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err());
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).map_err(|_| err())?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| err())?;
    }
    Ok(out)
}

fn write_hex(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

macro_rules! key_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// First 10 hex characters, for logs.
            pub fn short(&self) -> String {
                let mut s = self.to_string();
                s.truncate(10);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_key(s).map(Self)
            }
        }
    };
}

key_id!(
    /// A node's iroh public key (its endpoint ID); the Raft node ID of that node.
    EndpointKey
);
key_id!(
    /// A cluster's public key, which signs its cluster card.
    ClusterId
);

impl From<u64> for EndpointKey {
    /// A synthetic ID for storage tests and simulations; never a real key.
    fn from(n: u64) -> Self {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&n.to_be_bytes());
        Self(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = EndpointKey([0xab; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<EndpointKey>().unwrap(), id);
        assert!("zz".parse::<EndpointKey>().is_err());
        assert!("é".repeat(32).parse::<ClusterId>().is_err());
    }
}
