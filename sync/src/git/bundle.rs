//! The bundle header (gitformat-bundle v2 and v3): the short text before the pack. Only the
//! header is read and written here; the pack is always made by `git pack-objects` and read by
//! `git index-pack` / `git fetch`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use super::{GitError, RefMap};

/// A repository's (or bundle's) hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    /// Length of an object id in hex.
    pub fn hex_len(self) -> usize {
        match self {
            ObjectFormat::Sha1 => 40,
            ObjectFormat::Sha256 => 64,
        }
    }

    /// Git's name: `sha1` or `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sha1" => Some(ObjectFormat::Sha1),
            "sha256" => Some(ObjectFormat::Sha256),
            _ => None,
        }
    }
}

/// Largest header accepted (refs and prerequisites).
pub(crate) const MAX_HEADER: usize = 64 << 20;
/// Longest header line accepted (a prerequisite line carries a commit subject).
const MAX_HEADER_LINE: usize = 1 << 20;

/// A parsed bundle header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub object_format: ObjectFormat,
    pub prerequisites: Vec<String>,
    /// `(ref name, object id)` in file order.
    pub refs: Vec<(String, String)>,
    /// Where the pack starts.
    pub pack_offset: u64,
}

impl Header {
    pub(crate) fn ref_map(&self) -> RefMap {
        self.refs.iter().map(|(n, o)| (n.clone(), o.clone())).collect()
    }
}

fn invalid(msg: impl Into<String>) -> GitError {
    GitError::InvalidBundle(msg.into())
}

pub(crate) fn read_header(path: &Path) -> Result<Header, GitError> {
    let file = File::open(path).map_err(|e| GitError::Io(format!("opening bundle {}", path.display()), e))?;
    parse_header(BufReader::new(file)).map_err(|e| match e {
        GitError::InvalidBundle(m) => GitError::InvalidBundle(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Reads one line (without its newline); `None` at end of input.
fn next_line(r: &mut impl BufRead, consumed: &mut usize) -> Result<Option<String>, GitError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_HEADER_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| GitError::Io("reading a bundle header".into(), e))?;
    if n == 0 {
        return Ok(None);
    }
    *consumed += n;
    if *consumed > MAX_HEADER {
        return Err(invalid(format!("header larger than {MAX_HEADER} bytes")));
    }
    if line.pop() != Some(b'\n') {
        return Err(if n > MAX_HEADER_LINE {
            invalid("header line too long")
        } else {
            invalid("truncated header")
        });
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("header is not UTF-8"))
}

pub(crate) fn is_hex_oid(s: &str, format: ObjectFormat) -> bool {
    s.len() == format.hex_len() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn plausible_ref_name(name: &str) -> bool {
    (name == "HEAD" || name.starts_with("refs/")) && name.bytes().all(|b| b > b' ' && b != 0x7f)
}

pub(crate) fn parse_header(mut r: impl BufRead) -> Result<Header, GitError> {
    let mut consumed = 0usize;
    let first = next_line(&mut r, &mut consumed)?.ok_or_else(|| invalid("empty file"))?;
    let v3 = match first.as_str() {
        "# v2 git bundle" => false,
        "# v3 git bundle" => true,
        _ => return Err(invalid("not a git bundle (bad signature)")),
    };
    let mut object_format = ObjectFormat::Sha1;
    let mut prerequisites = Vec::new();
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut in_capabilities = v3;
    loop {
        let line = next_line(&mut r, &mut consumed)?.ok_or_else(|| invalid("truncated header"))?;
        if in_capabilities {
            if let Some(cap) = line.strip_prefix('@') {
                let (key, value) = cap.split_once('=').unwrap_or((cap, ""));
                match key {
                    "object-format" => {
                        object_format = ObjectFormat::parse(value)
                            .ok_or_else(|| invalid(format!("unknown object format {value:?}")))?;
                    }
                    "filter" => return Err(invalid("filtered (partial) bundles are not supported")),
                    other => return Err(invalid(format!("unknown capability {other:?}"))),
                }
                continue;
            }
            in_capabilities = false;
        }
        if line.is_empty() {
            break;
        }
        let hex = object_format.hex_len();
        if let Some(rest) = line.strip_prefix('-') {
            let oid = rest.get(..hex).filter(|o| is_hex_oid(o, object_format));
            let tail = rest.get(hex..).unwrap_or("");
            match oid {
                Some(oid) if tail.is_empty() || tail.starts_with(' ') => prerequisites.push(oid.to_string()),
                _ => return Err(invalid(format!("bad prerequisite line {line:?}"))),
            }
        } else {
            match line.split_once(' ') {
                Some((oid, name)) if is_hex_oid(oid, object_format) && plausible_ref_name(name) => {
                    if !seen.insert(name.to_string()) {
                        return Err(invalid(format!("ref {name} listed twice")));
                    }
                    refs.push((name.to_string(), oid.to_string()));
                }
                _ => return Err(invalid(format!("bad ref line {line:?}"))),
            }
        }
    }
    Ok(Header {
        object_format,
        prerequisites,
        refs,
        pack_offset: consumed as u64,
    })
}

/// Writes a header the way `git bundle create` does (v2 for SHA-1, v3 with `@object-format`
/// for SHA-256).
pub(crate) fn write_header(
    w: &mut impl Write,
    format: ObjectFormat,
    prerequisites: &[String],
    refs: &RefMap,
) -> std::io::Result<()> {
    match format {
        ObjectFormat::Sha1 => w.write_all(b"# v2 git bundle\n")?,
        ObjectFormat::Sha256 => w.write_all(b"# v3 git bundle\n@object-format=sha256\n")?,
    }
    for p in prerequisites {
        writeln!(w, "-{p}")?;
    }
    for (name, oid) in refs {
        writeln!(w, "{oid} {name}")?;
    }
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ddc3647849abbc71bd4875140816527e6ab3c3f2";
    const B: &str = "6b4691cba68a3bf8168a330242e1cb6aa0b7cd61";

    #[test]
    fn roundtrip_v2() {
        let refs: RefMap = [("refs/heads/main".to_string(), B.to_string())].into();
        let mut buf = Vec::new();
        write_header(&mut buf, ObjectFormat::Sha1, &[A.to_string()], &refs).expect("write");
        let header_len = buf.len() as u64;
        buf.extend_from_slice(b"PACK....");
        let h = parse_header(&buf[..]).expect("parse");
        assert_eq!(h.object_format, ObjectFormat::Sha1);
        assert_eq!(h.prerequisites, vec![A.to_string()]);
        assert_eq!(h.ref_map(), refs);
        assert_eq!(h.pack_offset, header_len);
    }

    #[test]
    fn reads_git_written_prerequisite_comments_and_v3() {
        let text = format!("# v2 git bundle\n-{A} two words\n{B} refs/heads/main\n{B} HEAD\n\nPACK");
        let h = parse_header(text.as_bytes()).expect("parse");
        assert_eq!(h.prerequisites, vec![A.to_string()]);
        assert_eq!(h.refs.len(), 2);
        let oid = "a".repeat(64);
        let text = format!("# v3 git bundle\n@object-format=sha256\n{oid} refs/tags/v1\n\n");
        let h = parse_header(text.as_bytes()).expect("parse v3");
        assert_eq!(h.object_format, ObjectFormat::Sha256);
        assert_eq!(h.refs, vec![("refs/tags/v1".to_string(), oid)]);
    }

    #[test]
    fn rejects_bad_headers() {
        for bad in [
            String::new(),
            "# v9 git bundle\n\n".to_string(),
            format!("# v2 git bundle\n{B} refs/heads/main\n"),
            format!("# v2 git bundle\n{B} refs/heads/main\n{A} refs/heads/main\n\n"),
            format!("# v2 git bundle\n-{}\n\n", &A[..39]),
            format!("# v2 git bundle\n{B}  refs/heads/main\n\n"),
            format!("# v2 git bundle\n{B} main\n\n"),
            format!("# v3 git bundle\n@filter=blob:none\n{B} refs/heads/main\n\n"),
            format!("# v3 git bundle\n@frobnicate\n{B} refs/heads/main\n\n"),
            format!("# v2 git bundle\n{} refs/heads/main\n\n", B.to_uppercase()),
        ] {
            assert!(
                matches!(parse_header(bad.as_bytes()), Err(GitError::InvalidBundle(_))),
                "accepted {bad:?}"
            );
        }
    }
}
