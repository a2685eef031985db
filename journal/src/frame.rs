//! Record framing: how one event is laid out as a sled key and value, and its chained crc32.
//!
//! Key: the sequence number, 8 bytes big-endian (so sled's key order is sequence order).
//! Value (all integers big-endian):
//!
//! | offset | bytes | field                                                    |
//! |--------|-------|----------------------------------------------------------|
//! | 0      | 1     | magic `0xA7`                                             |
//! | 1      | 1     | frame format (1)                                         |
//! | 2      | 8     | timestamp, ms since the Unix epoch                       |
//! | 10     | 2     | event kind                                               |
//! | 12     | 2     | event schema version                                     |
//! | 14     | 4     | crc of the previous record (0 for sequence 1): the chain |
//! | 18     | 4     | payload length                                           |
//! | 22     | n     | payload (bincode)                                        |
//! | 22+n   | 4     | crc32 of key ‖ value[..22+n]                             |
//!
//! Because the crc covers the previous record's crc, each crc is a chain value over all of history
//! (etcd style); because the previous crc is also stored, a damaged record can be told apart from
//! the intact records after it (torn tail versus corruption).

/// First byte of every record value.
pub const FRAME_MAGIC: u8 = 0xA7;
/// Frame layout version written by this build.
pub const FRAME_FORMAT: u8 = 1;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 22;
/// Bytes after the payload (the crc).
pub const TRAILER_BYTES: usize = 4;
/// Bytes of a sequence key.
pub const KEY_BYTES: usize = 8;

/// Why a stored key/value pair is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("key is {len} bytes, expected {KEY_BYTES}")]
    KeyLength { len: usize },
    #[error("value is {len} bytes, shorter than the {} bytes of framing", HEADER_BYTES + TRAILER_BYTES)]
    TooShort { len: usize },
    #[error("magic byte is {found:#04x}, expected {FRAME_MAGIC:#04x}")]
    Magic { found: u8 },
    #[error("frame format {found} is not known to this build (knows {FRAME_FORMAT})")]
    Format { found: u8 },
    #[error("payload length field says {declared} bytes but the value holds {actual}")]
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

/// The sled key of a sequence.
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

/// Encodes a record value; returns it with its crc (the new chain value).
pub fn encode(fields: &FrameFields<'_>) -> (Vec<u8>, u32) {
    let payload_len = u32::try_from(fields.payload.len())
        .expect("payload length checked against record_bytes_max");
    let mut value = Vec::with_capacity(HEADER_BYTES + fields.payload.len() + TRAILER_BYTES);
    value.push(FRAME_MAGIC);
    value.push(FRAME_FORMAT);
    value.extend_from_slice(&fields.timestamp_ms.to_be_bytes());
    value.extend_from_slice(&fields.kind.to_be_bytes());
    value.extend_from_slice(&fields.version.to_be_bytes());
    value.extend_from_slice(&fields.prev_crc.to_be_bytes());
    value.extend_from_slice(&payload_len.to_be_bytes());
    value.extend_from_slice(fields.payload);
    let crc = checksum(&key(fields.sequence), &value);
    value.extend_from_slice(&crc.to_be_bytes());
    // Paired assertion: what we write must read back as the same record.
    debug_assert_eq!(
        decode(&key(fields.sequence), &value).map(|f| f.crc),
        Ok(crc)
    );
    (value, crc)
}

/// Decodes and checks one stored key/value pair (framing and its own crc).
pub fn decode<'a>(key: &[u8], value: &'a [u8]) -> Result<Frame<'a>, FrameError> {
    let sequence = sequence_of(key)?;
    if value.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(FrameError::TooShort { len: value.len() });
    }
    if value[0] != FRAME_MAGIC {
        return Err(FrameError::Magic { found: value[0] });
    }
    if value[1] != FRAME_FORMAT {
        return Err(FrameError::Format { found: value[1] });
    }
    let declared = be_u32(value, 18) as usize;
    let actual = value.len() - HEADER_BYTES - TRAILER_BYTES;
    if declared != actual {
        return Err(FrameError::PayloadLength { declared, actual });
    }
    let body_end = value.len() - TRAILER_BYTES;
    let stored = be_u32(value, body_end);
    let computed = checksum(key, &value[..body_end]);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    Ok(Frame {
        sequence,
        timestamp_ms: u64::from_be_bytes(value[2..10].try_into().expect("8 bytes")),
        kind: u16::from_be_bytes([value[10], value[11]]),
        version: u16::from_be_bytes([value[12], value[13]]),
        prev_crc: be_u32(value, 14),
        crc: stored,
        payload: &value[HEADER_BYTES..body_end],
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(body);
    hasher.finalize()
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
            let frame = decode(&key(sequence), &value).expect("decodes");
            proptest::prop_assert_eq!(
                (frame.sequence, frame.timestamp_ms, frame.kind, frame.version, frame.prev_crc, frame.crc, frame.payload),
                (sequence, timestamp_ms, kind, version, prev_crc, crc, payload.as_slice())
            );
            // The crc is a chain value: another predecessor gives another crc.
            let (_, other) = encode(&FrameFields { prev_crc: prev_crc ^ 1, ..fields });
            proptest::prop_assert_ne!(crc, other);
        }
    }

    #[test]
    fn round_trip() {
        let (value, crc) = encode(&fields(b"hello"));
        let frame = decode(&key(7), &value).expect("decodes");
        assert_eq!(frame.crc, crc);
        assert_eq!(
            (frame.sequence, frame.kind, frame.version, frame.prev_crc),
            (7, 3, 2, 0xdead_beef)
        );
        assert_eq!(frame.payload, b"hello");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (value, _) = encode(&fields(b"payload bytes"));
        for bit in 0..value.len() * 8 {
            let mut damaged = value.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&key(7), &damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_moved_to_another_sequence_is_detected() {
        let (value, _) = encode(&fields(b"x"));
        assert!(matches!(
            decode(&key(8), &value),
            Err(FrameError::Crc { .. })
        ));
    }

    #[test]
    fn short_values_and_keys_are_errors() {
        assert_eq!(
            decode(&[1, 2], &[0; 40]),
            Err(FrameError::KeyLength { len: 2 })
        );
        for len in 0..HEADER_BYTES + TRAILER_BYTES {
            assert_eq!(
                decode(&key(1), &vec![FRAME_MAGIC; len]),
                Err(FrameError::TooShort { len })
            );
        }
    }
}
