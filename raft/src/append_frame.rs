//! The frame of one request on an append stream, written from and read into the entries' log
//! encodings. Its bytes are exactly postcard's encoding of the request (the vote, the previous
//! log id, the entries as a sequence, the leader's commit), so a peer that encodes or decodes
//! the whole request with postcard reads and writes the same frames.
//!
//! A leader sends each entry as its own log already holds it encoded, and a follower keeps each
//! entry's slice of the frame it received for its log: an entry is encoded once in the whole
//! cluster instead of once per node and once more per follower.

use bytes::Bytes;
use causeway_proto::{FrameError, frame};
use openraft::{entry::RaftEntry, raft::AppendEntriesRequest};
use serde::de::DeserializeOwned;

use crate::types::{Entry, LogId, TypeConfig, Vote};

type Request = AppendEntriesRequest<TypeConfig>;

/// The whole frame (length prefix and body) of `request`. `encodings[i]`, when given, is the
/// log encoding of `request.entries[i]`; entries without one are encoded here.
pub fn encode(request: &Request, encodings: &[Option<Bytes>], limit: usize) -> Result<Vec<u8>, FrameError> {
    // A given encoding is shared (a reference count), not copied, until the frame is built.
    let entries = request
        .entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match encodings.get(i) {
            Some(Some(bytes)) => Ok(bytes.clone()),
            _ => frame::encode(entry, limit).map(Bytes::from),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let head = frame::encode(&(&request.vote, &request.prev_log_id, request.entries.len()), limit)?;
    let tail = frame::encode(&request.leader_commit, limit)?;
    let len = head.len() + tail.len() + entries.iter().map(Bytes::len).sum::<usize>();
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut out = Vec::with_capacity(frame::PREFIX_LEN + len);
    out.extend_from_slice(&frame::prefix(len));
    out.extend_from_slice(&head);
    for bytes in &entries {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&tail);
    Ok(out)
}

/// Reads the request in `body` (a frame without its prefix), with each entry's log id and its
/// slice of `body`. Refuses a body over `limit`, malformed input and trailing bytes.
pub fn decode(body: Bytes, limit: usize) -> Result<(Request, Vec<(LogId, Bytes)>), FrameError> {
    if body.len() > limit {
        return Err(FrameError::TooLarge { len: body.len(), limit });
    }
    let (vote, rest) = take::<Vote>(&body)?;
    let (prev_log_id, rest) = take::<Option<LogId>>(rest)?;
    let (count, mut rest) = take::<usize>(rest)?;
    // Untrusted: every entry takes at least a byte, so the rest of the body bounds the count.
    let mut entries = Vec::with_capacity(count.min(rest.len()));
    let mut received = Vec::with_capacity(count.min(rest.len()));
    for _ in 0..count {
        let start = body.len() - rest.len();
        let (entry, after) = take::<Entry>(rest)?;
        let end = body.len() - after.len();
        received.push((entry.log_id(), body.slice(start..end)));
        entries.push(entry);
        rest = after;
    }
    let (leader_commit, rest) = take::<Option<LogId>>(rest)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    let request = Request {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    };
    Ok((request, received))
}

fn take<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), FrameError> {
    Ok(postcard::take_from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogCommand;
    use causeway_catalog::Command;
    use openraft::{
        EntryPayload,
        testing::{blank_ent, log_id, membership_ent},
    };
    use std::collections::BTreeSet;

    fn request() -> Request {
        let a = 1u64.into();
        let normal = Entry {
            log_id: log_id::<TypeConfig>(3, a, 5),
            payload: EntryPayload::Normal(LogCommand::from(Command::RegisterResource {
                name: "team/tools".into(),
                kind: "repo".into(),
                owner: "forge".into(),
                path: None,
                metadata: Default::default(),
                registered_at_ms: 7,
            })),
        };
        Request {
            vote: Vote::new_committed(3, a),
            prev_log_id: Some(log_id::<TypeConfig>(3, a, 2)),
            entries: vec![
                blank_ent::<TypeConfig>(3, a, 3),
                membership_ent::<TypeConfig>(3, a, 4, vec![BTreeSet::from([a])]),
                normal,
            ],
            leader_commit: Some(log_id::<TypeConfig>(3, a, 1)),
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        &frame[frame::PREFIX_LEN..]
    }

    #[test]
    fn the_frame_is_postcards_encoding_of_the_request_whichever_encodings_are_given() {
        let req = request();
        let plain = postcard::to_stdvec(&req).unwrap();
        let own: Vec<_> = req
            .entries
            .iter()
            .map(|e| Some(Bytes::from(postcard::to_stdvec(e).unwrap())))
            .collect();
        let some = [None, own[1].clone()];
        for given in [&[][..], &own[..], &some[..]] {
            let frame = encode(&req, given, 1 << 20).unwrap();
            assert_eq!(frame[..frame::PREFIX_LEN], frame::prefix(plain.len()));
            assert_eq!(body(&frame), plain.as_slice());
        }
        let empty = Request {
            entries: Vec::new(),
            ..request()
        };
        let frame = encode(&empty, &[], 1 << 20).unwrap();
        assert_eq!(body(&frame), postcard::to_stdvec(&empty).unwrap().as_slice());
        assert!(matches!(
            encode(&req, &own, plain.len() - 1),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_received_request_gives_each_entry_its_own_bytes() {
        let req = request();
        let plain = Bytes::from(postcard::to_stdvec(&req).unwrap());
        let (back, received) = decode(plain.clone(), 1 << 20).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), plain.as_ref());
        assert_eq!(received.len(), req.entries.len());
        for ((id, bytes), entry) in received.iter().zip(&req.entries) {
            assert_eq!(*id, entry.log_id());
            assert_eq!(bytes.as_ref(), postcard::to_stdvec(entry).unwrap().as_slice());
        }
    }

    #[test]
    fn bad_bodies_are_refused_without_a_panic() {
        let plain = postcard::to_stdvec(&request()).unwrap();
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(matches!(
            decode(Bytes::from(trailing), 1 << 20),
            Err(FrameError::Trailing(1))
        ));
        assert!(matches!(
            decode(Bytes::from(plain.clone()), plain.len() - 1),
            Err(FrameError::TooLarge { .. })
        ));
        for cut in 0..plain.len() {
            assert!(
                decode(Bytes::copy_from_slice(&plain[..cut]), 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        // A count of entries far beyond what the body holds.
        let head = postcard::to_stdvec(&(&request().vote, &request().prev_log_id, usize::MAX >> 1)).unwrap();
        assert!(decode(Bytes::from(head), 1 << 20).is_err());
        assert!(decode(Bytes::from_static(&[0xff; 64]), 1 << 20).is_err());
    }
}
