//! Record framing: how one event is laid out inside a stored value, and its chained crc32.
//!
//! Records are stored back to back inside values (`block`: one value per group commit). Each
//! record carries its own framing (all integers big-endian):
//!
//! | offset | bytes | field                                                    |
//! |--------|-------|----------------------------------------------------------|
//! | 0      | 1     | magic `0xA7`                                             |
//! | 1      | 1     | frame format (2)                                         |
//! | 2      | 8     | sequence number                                          |
//! | 10     | 8     | timestamp, ms since the Unix epoch                       |
//! | 18     | 2     | event kind                                               |
//! | 20     | 2     | event schema version                                     |
//! | 22     | 4     | crc of the previous record (0 for sequence 1): the chain |
//! | 26     | 4     | payload length                                           |
//! | 30     | n     | payload (bincode)                                        |
//! | 30+n   | 4     | crc32 of bytes `0..30+n`                                 |
//!
//! Because the crc covers the previous record's crc, each crc is a chain value over all of history
//! (etcd style); because the previous crc is also stored, a damaged record can be told apart from
//! the intact records after it (torn tail versus corruption). The sequence is inside the crc, so a
//! record moved to another place is detected.

/// First byte of every record.
pub const FRAME_MAGIC: u8 = 0xA7;
/// Frame layout version written by this build.
pub const FRAME_FORMAT: u8 = 2;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 30;
/// Bytes after the payload (the crc).
pub const TRAILER_BYTES: usize = 4;
/// Bytes of a sequence key.
pub const KEY_BYTES: usize = 8;

/// Why stored bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("key is {len} bytes, expected {KEY_BYTES}")]
    KeyLength { len: usize },
    #[error("{len} bytes left, shorter than the {} bytes of framing", HEADER_BYTES + TRAILER_BYTES)]
    TooShort { len: usize },
    #[error("magic byte is {found:#04x}, expected {FRAME_MAGIC:#04x}")]
    Magic { found: u8 },
    #[error("frame format {found} is not known to this build (knows {FRAME_FORMAT})")]
    Format { found: u8 },
    #[error("payload length field says {declared} bytes but only {actual} remain")]
    PayloadLength { declared: usize, actual: usize },
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
}

/// A decoded, locally intact record (its own crc checked; the chain link is checked by callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub kind: u16,
    pub version: u16,
    pub prev_crc: u32,
    pub crc: u32,
    pub payload: &'a [u8],
    /// Encoded length of the whole record (framing and payload).
    pub bytes: usize,
}

/// The fields of a record to encode.
#[derive(Debug, Clone, Copy)]
pub struct FrameFields<'a> {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub kind: u16,
    pub version: u16,
    pub prev_crc: u32,
    pub payload: &'a [u8],
}

/// The sled key of a stored value: the sequence of its first record.
pub fn key(sequence: u64) -> [u8; KEY_BYTES] {
    sequence.to_be_bytes()
}

/// The sequence of a sled key.
pub fn sequence_of(key: &[u8]) -> Result<u64, FrameError> {
    let bytes: [u8; KEY_BYTES] = key
        .try_into()
        .map_err(|_| FrameError::KeyLength { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encoded length of a record with a payload of `payload_bytes`.
pub const fn encoded_bytes(payload_bytes: usize) -> usize {
    HEADER_BYTES + payload_bytes + TRAILER_BYTES
}

/// Appends one encoded record to `out`; returns its crc (the new chain value).
pub fn encode_into(out: &mut Vec<u8>, fields: &FrameFields<'_>) -> u32 {
    let payload_len = u32::try_from(fields.payload.len())
        .expect("payload length checked against record_bytes_max");
    let start = out.len();
    out.reserve(encoded_bytes(fields.payload.len()));
    out.push(FRAME_MAGIC);
    out.push(FRAME_FORMAT);
    out.extend_from_slice(&fields.sequence.to_be_bytes());
    out.extend_from_slice(&fields.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&fields.kind.to_be_bytes());
    out.extend_from_slice(&fields.version.to_be_bytes());
    out.extend_from_slice(&fields.prev_crc.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(fields.payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    // Paired assertion: what we write must read back as the same record.
    debug_assert_eq!(decode(&out[start..]).map(|f| f.crc), Ok(crc));
    crc
}

/// Encodes one record on its own; returns it with its crc.
pub fn encode(fields: &FrameFields<'_>) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let crc = encode_into(&mut out, fields);
    (out, crc)
}

/// Decodes and checks the record at the start of `bytes` (framing and its own crc); the bytes
/// after it are left alone (`Frame::bytes` says where the next record starts).
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    decode_with(bytes, true)
}

/// Decodes the record at the start of `bytes`, checking its framing but not recomputing its
/// own crc: for records inside a stored value whose crc (covering every byte of every record,
/// their stored crcs included) was just checked. The stored crc is still the chain value that
/// the next record's link is checked against.
pub fn decode_in_intact_value(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    decode_with(bytes, false)
}

fn decode_with(bytes: &[u8], verify_crc: bool) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(FrameError::TooShort { len: bytes.len() });
    }
    if bytes[0] != FRAME_MAGIC {
        return Err(FrameError::Magic { found: bytes[0] });
    }
    if bytes[1] != FRAME_FORMAT {
        return Err(FrameError::Format { found: bytes[1] });
    }
    let declared = be_u32(bytes, 26) as usize;
    let actual = bytes.len() - HEADER_BYTES - TRAILER_BYTES;
    if declared > actual {
        return Err(FrameError::PayloadLength { declared, actual });
    }
    let body_end = HEADER_BYTES + declared;
    let stored = be_u32(bytes, body_end);
    if verify_crc {
        let computed = crc32fast::hash(&bytes[..body_end]);
        if stored != computed {
            return Err(FrameError::Crc { stored, computed });
        }
    }
    Ok(Frame {
        sequence: be_u64(bytes, 2),
        timestamp_ms: be_u64(bytes, 10),
        kind: u16::from_be_bytes([bytes[18], bytes[19]]),
        version: u16::from_be_bytes([bytes[20], bytes[21]]),
        prev_crc: be_u32(bytes, 22),
        crc: stored,
        payload: &bytes[HEADER_BYTES..body_end],
        bytes: body_end + TRAILER_BYTES,
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(payload: &[u8]) -> FrameFields<'_> {
        FrameFields {
            sequence: 7,
            timestamp_ms: 1_700_000_000_000,
            kind: 3,
            version: 2,
            prev_crc: 0xdead_beef,
            payload,
        }
    }

    proptest::proptest! {
        #[test]
        fn any_record_round_trips_and_chains(
            sequence in 1u64..u64::MAX,
            timestamp_ms: u64,
            kind: u16,
            version: u16,
            prev_crc: u32,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let fields = FrameFields { sequence, timestamp_ms, kind, version, prev_crc, payload: &payload };
            let (value, crc) = encode(&fields);
            let frame = decode(&value).expect("decodes");
            proptest::prop_assert_eq!(
                (frame.sequence, frame.timestamp_ms, frame.kind, frame.version, frame.prev_crc, frame.crc, frame.payload, frame.bytes),
                (sequence, timestamp_ms, kind, version, prev_crc, crc, payload.as_slice(), value.len())
            );
            // The crc is a chain value: another predecessor gives another crc.
            let (_, other) = encode(&FrameFields { prev_crc: prev_crc ^ 1, ..fields });
            proptest::prop_assert_ne!(crc, other);
        }
    }

    #[test]
    fn round_trip_and_records_back_to_back() {
        let mut out = Vec::new();
        let first = encode_into(&mut out, &fields(b"hello"));
        let second = encode_into(
            &mut out,
            &FrameFields {
                sequence: 8,
                prev_crc: first,
                ..fields(b"world!")
            },
        );
        let a = decode(&out).expect("first decodes");
        let b = decode(&out[a.bytes..]).expect("second decodes");
        assert_eq!((a.sequence, a.crc, a.payload), (7, first, &b"hello"[..]));
        assert_eq!(
            (b.sequence, b.prev_crc, b.crc, b.payload),
            (8, first, second, &b"world!"[..])
        );
        assert_eq!(a.bytes + b.bytes, out.len());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (value, _) = encode(&fields(b"payload bytes"));
        for bit in 0..value.len() * 8 {
            let mut damaged = value.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn short_records_and_keys_are_errors() {
        assert_eq!(sequence_of(&[1, 2]), Err(FrameError::KeyLength { len: 2 }));
        for len in 0..HEADER_BYTES + TRAILER_BYTES {
            assert_eq!(
                decode(&vec![FRAME_MAGIC; len]),
                Err(FrameError::TooShort { len })
            );
        }
        let (value, _) = encode(&fields(b"payload"));
        assert!(matches!(
            decode(&value[..value.len() - 1]),
            Err(FrameError::PayloadLength { .. })
        ));
    }
}
