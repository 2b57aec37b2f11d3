//! Protocol names (ALPNs) and version negotiation. A peer speaking an unknown version is
//! refused with [`VersionError`], never silently downgraded.

/// Raft RPCs between members of one cluster.
pub const RAFT: &[u8] = b"causeway/raft/1";
/// A new node presenting an invite ticket to join a cluster.
pub const JOIN: &[u8] = b"causeway/join/1";
/// Federation between clusters. Version 2: cards carry their key generation, the listener
/// sends its full card only after the dialer proved itself, and key rotations travel with
/// cards; a version-1 peer is refused by name (its cards cannot express a rotated key).
pub const FED: &[u8] = b"causeway/fed/2";

/// Every protocol family this build knows, with the versions it speaks.
pub const SUPPORTED: &[(&str, &[u32])] = &[("raft", &[1]), ("join", &[1]), ("fed", &[2])];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("not a causeway protocol: {0:?}")]
    NotCauseway(String),
    #[error("unknown causeway protocol family {0:?}")]
    UnknownFamily(String),
    #[error("unsupported {family} protocol version {version} (this node speaks {supported:?})")]
    Unsupported {
        family: String,
        version: String,
        supported: Vec<u32>,
    },
}

/// Checks an ALPN offered by a peer and names exactly why it is refused.
pub fn check(alpn: &[u8]) -> Result<(&'static str, u32), VersionError> {
    let text = String::from_utf8_lossy(alpn).into_owned();
    let mut parts = text.splitn(3, '/');
    if parts.next() != Some("causeway") {
        return Err(VersionError::NotCauseway(text));
    }
    let family = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    let Some((name, versions)) = SUPPORTED.iter().find(|(name, _)| *name == family) else {
        return Err(VersionError::UnknownFamily(family.to_string()));
    };
    match version.parse::<u32>() {
        Ok(v) if versions.contains(&v) => Ok((name, v)),
        _ => Err(VersionError::Unsupported {
            family: family.to_string(),
            version: version.to_string(),
            supported: versions.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_pass() {
        assert_eq!(check(RAFT), Ok(("raft", 1)));
        assert_eq!(check(JOIN), Ok(("join", 1)));
        assert_eq!(check(FED), Ok(("fed", 2)));
        assert!(check(b"causeway/fed/1").is_err());
    }

    #[test]
    fn unknown_versions_are_named() {
        let err = check(b"causeway/raft/9").unwrap_err();
        assert!(err.to_string().contains("unsupported raft protocol version 9"));
        assert!(matches!(check(b"causeway/zzz/1"), Err(VersionError::UnknownFamily(_))));
        assert!(matches!(check(b"http/1.1"), Err(VersionError::NotCauseway(_))));
        assert!(check(b"causeway").is_err());
    }
}
