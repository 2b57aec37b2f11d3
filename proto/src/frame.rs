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
    fn garbage_is_an_error() {
        for garbage in [&[][..], &[0xff; 3][..], &[0x01, 0xff, 0xff, 0xff, 0xff, 0xff][..]] {
            assert!(decode::<Msg>(garbage, 64).is_err());
        }
        let mut bytes = encode(&Msg { a: 1, b: "y".into() }, 64).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Msg>(&bytes, 64), Err(FrameError::Trailing(1))));
    }
}
