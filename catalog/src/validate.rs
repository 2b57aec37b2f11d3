//! Input rules for names and kinds, shared by the CLI (to fail early) and the state machine (to
//! stay correct whatever a proposer sends).

/// Longest resource name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Longest owner, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Most metadata entries on one resource.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 4096;
/// Most share rules on one resource.
pub const MAX_SHARES: usize = 32;
/// Longest content root text (a hash), in bytes.
pub const MAX_CONTENT_LEN: usize = 128;
/// Longest local path stored with a resource.
pub const MAX_PATH_LEN: usize = 4096;

/// Checks a whole metadata map against the bounds.
pub fn metadata(map: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(format!("at most {MAX_METADATA_ENTRIES} metadata entries"));
    }
    for (k, v) in map {
        if k.is_empty() || k.len() > MAX_METADATA_KEY || k.chars().any(char::is_control) {
            return Err(format!(
                "metadata key {k:?} must be 1..={MAX_METADATA_KEY} bytes without control characters"
            ));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(format!(
                "metadata value for {k:?} is longer than {MAX_METADATA_VALUE} bytes"
            ));
        }
    }
    Ok(())
}

/// Longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A resource name: 1..=200 bytes of letters, digits, `-`, `_`, `.` and `/`, not starting with
/// `.` or `/` (names become paths of mirror repositories).
pub fn resource_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.starts_with(['.', '/']) || name.contains("..") || name.ends_with('/') {
        return Err(format!(
            "name {name:?} may not start with '.' or '/', contain '..' or end with '/'"
        ));
    }
    if let Some(c) = name.chars().find(|&c| !(plain(c) || c == '/')) {
        return Err(format!(
            "name {name:?} contains {c:?}; use letters, digits, '-', '_', '.', '/'"
        ));
    }
    Ok(())
}

/// A kind: `segment` or `segment/segment`, each lowercase letters, digits, `-`, `_`, `.`.
pub fn kind(kind: &str) -> Result<(), String> {
    if kind.is_empty() || kind.len() > MAX_KIND_LEN {
        return Err(format!("kind must be 1..={MAX_KIND_LEN} bytes"));
    }
    let ok_segment = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    };
    // Checked without collecting the segments: this runs in every register's apply.
    if kind.split('/').count() > 2 || !kind.split('/').all(ok_segment) {
        return Err(format!(
            "invalid kind {kind:?}: use lowercase words like \"artifact\" or \"forge/repo\""
        ));
    }
    Ok(())
}

pub fn owner(owner: &str) -> Result<(), String> {
    if owner.len() > MAX_OWNER_LEN || owner.chars().any(char::is_control) {
        return Err(format!(
            "owner must be at most {MAX_OWNER_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

pub fn cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME_LEN || !name.chars().all(plain) {
        return Err(format!(
            "cluster name {name:?} must be 1..={MAX_CLUSTER_NAME_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(resource_name("infra-tools").is_ok());
        assert!(resource_name("team/infra.tools_2").is_ok());
        for bad in [
            "",
            ".hidden",
            "/abs",
            "a/../b",
            "a b",
            "x/",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(resource_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds() {
        for good in ["artifact", "forge/repo", "monitoring/dashboard", "edge/zone"] {
            assert!(kind(good).is_ok(), "{good}");
        }
        for bad in ["", "Forge/Repo", "a/b/c", "/x", "x/", "sp ace"] {
            assert!(kind(bad).is_err(), "{bad:?}");
        }
    }
}
