//! Length-prefixed postcard frames with hard size limits. Every decoder of network input goes
//! through [`decode`], which refuses oversized or malformed input with an error, never a panic.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes of the big-endian length prefix in front of every frame.
pub const PREFIX_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
}

/// Serializes `value`, refusing to produce a frame larger than `limit`.
pub fn encode<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    encode_after(Vec::new(), value, limit)
}

/// Appends `value`'s encoding to `lead`, refusing an encoding larger than `limit` before any of
/// it is written. The size is counted first so the buffer grows once: growing it step by step
/// copied every entry and frame several times, a measurable share of a busy node's CPU.
pub fn encode_after<T: Serialize>(mut lead: Vec<u8>, value: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let len = postcard::experimental::serialized_size(value)?;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    lead.reserve_exact(len);
    Ok(postcard::serialize_with_flavor(value, Appending(lead))?)
}

/// A postcard output that appends to a vector slice by slice (postcard's own `to_extend`
/// pushes byte by byte).
struct Appending(Vec<u8>);

impl postcard::ser_flavors::Flavor for Appending {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Deserializes exactly one value from `bytes`, refusing more than `limit` bytes or leftovers.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, FrameError> {
    if bytes.len() > limit {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Reads the length prefix and checks it against `limit` before any body is read.
pub fn body_len(prefix: [u8; PREFIX_LEN], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Most bytes of a frame's body allocated before any of them arrived.
pub const MAX_PREALLOC: usize = 1 << 20;
/// Least bytes allocated up front for a non-empty body (small frames then fit at once).
pub const MIN_PREALLOC: usize = 4 << 10;

/// How much of an announced body of `len` bytes (under `limit`) to allocate before it arrives:
/// a 64th of the limit, between [`MIN_PREALLOC`] and [`MAX_PREALLOC`], never more than `len`.
/// The announced length is a peer's claim: believing it would let a prefix alone pin `limit`
/// bytes. Raft's append frames (64 MiB limit) start at 1 MiB, which holds most of them whole.
pub fn prealloc(len: usize, limit: usize) -> usize {
    len.min((limit / 64).clamp(MIN_PREALLOC, MAX_PREALLOC))
}

/// A frame body being received: its buffer grows (doubling, never past the announced length)
/// only as bytes arrive, so memory follows what the peer actually sent.
#[derive(Debug)]
pub struct BodyBuf {
    buf: Vec<u8>,
    len: usize,
}

impl BodyBuf {
    /// A buffer for a body announced as `len` bytes under `limit` (checked by [`body_len`]).
    pub fn new(len: usize, limit: usize) -> Self {
        Self {
            buf: Vec::with_capacity(prealloc(len, limit)),
            len,
        }
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> usize {
        self.len - self.buf.len()
    }

    pub fn is_complete(&self) -> bool {
        self.buf.len() == self.len
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes; more than the announced length is an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FrameError> {
        let remaining = self.remaining();
        if chunk.len() > remaining {
            return Err(FrameError::TooLarge {
                len: self.buf.len() + chunk.len(),
                limit: self.len,
            });
        }
        if self.buf.capacity() - self.buf.len() < chunk.len() {
            // Double what is held (at least the chunk), capped by what is still announced.
            let grow = remaining.min(self.buf.capacity().max(chunk.len()));
            self.buf.reserve_exact(grow);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// The length prefix for a body of `len` bytes.
pub fn prefix(len: usize) -> [u8; PREFIX_LEN] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Msg {
        a: u32,
        b: String,
    }

    #[test]
    fn round_trip() {
        let m = Msg { a: 7, b: "x".into() };
        let bytes = encode(&m, 64).unwrap();
        assert_eq!(decode::<Msg>(&bytes, 64).unwrap(), m);
    }

    #[test]
    fn encoding_after_a_lead_keeps_the_lead_and_sizes_the_buffer_once() {
        let m = Msg { a: 7, b: "abc".into() };
        let alone = encode(&m, 64).unwrap();
        assert_eq!(alone.capacity(), alone.len());
        let after = encode_after(vec![9, 9], &m, 64).unwrap();
        assert_eq!(&after[..2], &[9, 9]);
        assert_eq!(&after[2..], alone.as_slice());
        assert!(matches!(
            encode_after(vec![9], &m, alone.len() - 1),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn limits_hold() {
        let m = Msg {
            a: 7,
            b: "x".repeat(100),
        };
        assert!(matches!(encode(&m, 10), Err(FrameError::TooLarge { .. })));
        let bytes = encode(&m, 1000).unwrap();
        assert!(matches!(decode::<Msg>(&bytes, 10), Err(FrameError::TooLarge { .. })));
        assert!(body_len(prefix(11), 10).is_err());
        assert_eq!(body_len(prefix(10), 10).unwrap(), 10);
    }

    #[test]
    fn a_body_allocates_what_arrived_not_what_was_announced() {
        let limit = 1 << 20;
        let mut b = BodyBuf::new(limit, limit);
        assert!(b.capacity() <= limit / 64, "{}", b.capacity());
        b.push(&[7; 10]).unwrap();
        assert!(b.capacity() <= limit / 64);
        assert_eq!((b.received(), b.remaining()), (10, limit - 10));
        // Growth doubles as bytes come and never passes the announced length.
        let chunk = vec![1u8; 1200];
        while b.remaining() >= chunk.len() {
            b.push(&chunk).unwrap();
            assert!(b.capacity() <= limit && b.capacity() <= 2 * b.received() + prealloc(limit, limit));
        }
        let rest = vec![2u8; b.remaining()];
        b.push(&rest).unwrap();
        assert!(b.is_complete());
        assert!(b.push(&[0]).is_err(), "more than announced is refused");
        let body = b.into_inner();
        assert_eq!(body.len(), limit);
        assert_eq!(body.capacity(), limit);
        // Small frames are allocated once; raft-sized limits start at the cap.
        assert_eq!(prealloc(100, 1 << 20), 100);
        assert_eq!(prealloc(64 << 20, 64 << 20), MAX_PREALLOC);
        assert_eq!(prealloc(0, 1 << 20), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        for garbage in [&[][..], &[0xff; 3][..], &[0x01, 0xff, 0xff, 0xff, 0xff, 0xff][..]] {
            assert!(decode::<Msg>(garbage, 64).is_err());
        }
        let mut bytes = encode(&Msg { a: 1, b: "y".into() }, 64).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Msg>(&bytes, 64), Err(FrameError::Trailing(1))));
    }
}
