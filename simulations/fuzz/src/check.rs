//! Checks shared by the targets: decoding under a frame limit the way the node does, and
//! round trips of whatever decoded.

use std::{any::type_name, fmt::Debug};

use causeway_proto::{FrameError, decode, encode};
use serde::{Serialize, de::DeserializeOwned};

/// Decodes `data` as one `T` under `limit` exactly as the node does (`causeway_proto::decode`)
/// and checks that the frame rules held: never more than `limit` bytes, and a `TooLarge` error
/// only when the input really is too large.
pub fn decode_framed<T: DeserializeOwned>(data: &[u8], limit: usize) -> Option<T> {
    match decode::<T>(data, limit) {
        Ok(v) => {
            assert!(
                data.len() <= limit,
                "decode accepted {} bytes over the limit of {limit}",
                data.len()
            );
            Some(v)
        }
        Err(FrameError::TooLarge { len, limit: l }) => {
            assert_eq!(l, limit, "TooLarge names another limit");
            assert!(
                len > limit && len == data.len(),
                "TooLarge for {len} bytes under {limit}"
            );
            None
        }
        Err(e) => {
            // Error messages are shown to peers and logged: formatting them must not panic.
            let _ = e.to_string();
            None
        }
    }
}

/// What decoded from `input_len` bytes re-encodes in no more bytes (so it still fits the limit
/// it arrived under), decodes back equal, and re-encodes to the same bytes.
pub fn round_trip_eq<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T, input_len: usize) -> Vec<u8> {
    let bytes = round_trip_bytes(v, input_len);
    let back: T = decode(&bytes, bytes.len())
        .unwrap_or_else(|e| panic!("a re-encoded {} does not decode: {e}", type_name::<T>()));
    assert_eq!(&back, v, "{} changed in a round trip", type_name::<T>());
    bytes
}

/// For types without `PartialEq`: re-encoding is no longer than the input, decodes, and the
/// encoding is a fixed point (encode, decode, encode gives the same bytes).
pub fn round_trip_bytes<T: Serialize + DeserializeOwned>(v: &T, input_len: usize) -> Vec<u8> {
    let bytes =
        encode(v, usize::MAX).unwrap_or_else(|e| panic!("re-encoding a decoded {} failed: {e}", type_name::<T>()));
    assert!(
        bytes.len() <= input_len,
        "a decoded {} re-encodes to {} bytes, more than the {input_len} it came in",
        type_name::<T>(),
        bytes.len()
    );
    let back: T = decode(&bytes, bytes.len())
        .unwrap_or_else(|e| panic!("a re-encoded {} does not decode: {e}", type_name::<T>()));
    let again = encode(&back, usize::MAX).expect("encode after decode");
    assert_eq!(again, bytes, "encoding of {} is not stable", type_name::<T>());
    bytes
}

/// Splits `data` into at most `max` values of `T` laid end to end, as postcard reads them.
pub fn take_many<T: DeserializeOwned>(mut data: &[u8], max: usize) -> Vec<T> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < max {
        match postcard::take_from_bytes::<T>(data) {
            Ok((v, rest)) => {
                out.push(v);
                data = rest;
            }
            Err(_) => break,
        }
    }
    out
}

/// Unpadded lowercase RFC 4648 base32, as the invite ticket prints (its encoder is private).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0);
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
