//! Stored values: one sled value per durable append (group commit), holding its records back to
//! back, so that a journal written in batches is a few sled values per thousand events and replay
//! reads few, large values instead of one small value per event.
//!
//! Key: the sequence of the value's first record, 8 bytes big-endian (sled's key order is sequence
//! order). Value (integers big-endian):
//!
//! | offset | bytes | field                                                     |
//! |--------|-------|-----------------------------------------------------------|
//! | 0      | 1     | magic `0xB7`                                              |
//! | 1      | 1     | value format (1)                                          |
//! | 2      | 4     | record count                                              |
//! | 6      | 4     | crc32 of key ‖ value[0..6] ‖ value[10..]                  |
//! | 10     | ...   | the records (`frame`), back to back, sequences contiguous |
//!
//! A group commit whose records exceed `VALUE_BYTES_MAX` is split into several values (all
//! written in one atomic sled batch); a value always holds at least one record, so a record
//! larger than that limit gets a value of its own.

use crate::frame::{self, Frame, FrameError, FrameFields};

/// First byte of every stored value.
pub const VALUE_MAGIC: u8 = 0xB7;
/// Value layout version written by this build.
pub const VALUE_FORMAT: u8 = 1;
/// Bytes of the value header.
pub const HEADER_BYTES: usize = 10;
/// Largest value built from several records. sled 0.34 stores a message larger than a quarter of
/// its 512 KiB segment in a blob file of its own (a new file to fsync); with leaves of up to 17
/// entries, 16 KiB values keep most node rewrites inline while a 128-event batch of small
/// events still fits one value.
pub const VALUE_BYTES_MAX: usize = 16 << 10;
const _: () = assert!(VALUE_BYTES_MAX > HEADER_BYTES + frame::HEADER_BYTES + frame::TRAILER_BYTES);

/// Why a stored value is not a valid group of records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("key is {len} bytes, expected {}", frame::KEY_BYTES)]
    KeyLength { len: usize },
    #[error("value is {len} bytes, shorter than its {HEADER_BYTES}-byte header")]
    TooShort { len: usize },
    #[error("value magic byte is {found:#04x}, expected {VALUE_MAGIC:#04x}")]
    Magic { found: u8 },
    #[error("value format {found} is not known to this build (knows {VALUE_FORMAT})")]
    Format { found: u8 },
    #[error("value crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("value header says {declared} records but it holds {found}")]
    Count { declared: u32, found: u32 },
}

/// A stored value whose header parsed. `damage` is set when its crc does not match: its records
/// may still be checked one by one (each has its own crc) to find the first damaged one.
#[derive(Debug, Clone)]
pub struct Value<'a> {
    pub first: u64,
    pub count: u32,
    pub records: &'a [u8],
    pub damage: Option<ValueError>,
}

/// Parses a stored key and value: key length, header, and the crc of the whole value.
pub fn parse<'a>(key: &[u8], value: &'a [u8]) -> Result<Value<'a>, ValueError> {
    let first = frame::sequence_of(key).map_err(|_| ValueError::KeyLength { len: key.len() })?;
    if value.len() < HEADER_BYTES {
        return Err(ValueError::TooShort { len: value.len() });
    }
    if value[0] != VALUE_MAGIC {
        return Err(ValueError::Magic { found: value[0] });
    }
    if value[1] != VALUE_FORMAT {
        return Err(ValueError::Format { found: value[1] });
    }
    let count = u32::from_be_bytes(value[2..6].try_into().expect("4 bytes"));
    let stored = u32::from_be_bytes(value[6..10].try_into().expect("4 bytes"));
    let computed = checksum(key, &value[..6], &value[HEADER_BYTES..]);
    let damage = (stored != computed).then_some(ValueError::Crc { stored, computed });
    Ok(Value {
        first,
        count,
        records: &value[HEADER_BYTES..],
        damage,
    })
}

impl<'a> Value<'a> {
    /// The records in order; an error ends the iteration. Each record's own crc is recomputed
    /// only when the value's crc did not match (to name the first damaged record): a matching
    /// value crc already covers every byte of every record.
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            rest: self.records,
            verify_crc: self.damage.is_some(),
            failed: false,
        }
    }
}

/// Iterator over the records of a value.
#[derive(Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
    verify_crc: bool,
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let item = if self.verify_crc {
            frame::decode(self.rest)
        } else {
            frame::decode_in_intact_value(self.rest)
        };
        match &item {
            Ok(f) => self.rest = &self.rest[f.bytes..],
            Err(_) => self.failed = true,
        }
        Some(item)
    }
}

fn checksum(key: &[u8], header: &[u8], records: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(header);
    hasher.update(records);
    hasher.finalize()
}

/// A value built from already encoded records `first..first + count` (used to keep the intact
/// prefix of a damaged value).
pub fn from_records(first: u64, count: u32, records: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_BYTES + records.len());
    value.extend_from_slice(&[VALUE_MAGIC, VALUE_FORMAT]);
    value.extend_from_slice(&count.to_be_bytes());
    value.extend_from_slice(&[0; 4]);
    value.extend_from_slice(records);
    seal(first, &mut value, count);
    value
}

/// Writes the count and crc into a value's header.
fn seal(first: u64, value: &mut [u8], count: u32) {
    value[2..6].copy_from_slice(&count.to_be_bytes());
    let crc = checksum(&frame::key(first), &value[..6], &value[HEADER_BYTES..]);
    value[6..10].copy_from_slice(&crc.to_be_bytes());
}

/// Builds the values of one group commit: records are framed and chained as they are pushed, and
/// a new value starts when the next record would take the current one past `VALUE_BYTES_MAX`.
#[derive(Debug, Default)]
pub struct Builder {
    done: Vec<(u64, Vec<u8>)>,
    current: Vec<u8>,
    first: u64,
    count: u32,
}

impl Builder {
    /// Frames one record into the current value; returns its crc (the new chain value).
    pub fn push(&mut self, fields: &FrameFields<'_>) -> u32 {
        let bytes = frame::encoded_bytes(fields.payload.len());
        if self.count > 0 && self.current.len() + bytes > VALUE_BYTES_MAX {
            self.finish_value();
        }
        if self.count == 0 {
            self.first = fields.sequence;
            self.current = Vec::with_capacity((HEADER_BYTES + bytes).max(VALUE_BYTES_MAX));
            self.current
                .extend_from_slice(&[VALUE_MAGIC, VALUE_FORMAT, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        self.count += 1;
        frame::encode_into(&mut self.current, fields)
    }

    fn finish_value(&mut self) {
        let mut value = std::mem::take(&mut self.current);
        seal(self.first, &mut value, self.count);
        // Paired assertion: the value reads back intact.
        debug_assert!(parse(&frame::key(self.first), &value).is_ok_and(|v| v.damage.is_none()));
        self.done.push((self.first, value));
        self.count = 0;
    }

    /// The values built, as (first sequence, value).
    pub fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        if self.count > 0 {
            self.finish_value();
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(first: u64, payloads: &[Vec<u8>]) -> (Vec<(u64, Vec<u8>)>, u32) {
        let mut builder = Builder::default();
        let mut crc = 0;
        for (sequence, payload) in (first..).zip(payloads) {
            crc = builder.push(&FrameFields {
                sequence,
                timestamp_ms: 1,
                kind: 1,
                version: 1,
                prev_crc: crc,
                payload,
            });
        }
        (builder.finish(), crc)
    }

    #[test]
    fn a_group_becomes_one_value_whose_records_chain() {
        let payloads: Vec<Vec<u8>> = (0..128u8).map(|i| vec![i; 40]).collect();
        let (values, head) = build(5, &payloads);
        assert_eq!(values.len(), 1);
        let (first, value) = &values[0];
        let parsed = parse(&frame::key(*first), value).unwrap();
        assert_eq!(
            (parsed.first, parsed.count, parsed.damage.clone()),
            (5, 128, None)
        );
        let frames: Vec<_> = parsed.frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 128);
        assert!(frames.windows(2).all(|w| w[1].prev_crc == w[0].crc));
        assert!(frames.iter().zip(5..).all(|(f, s)| f.sequence == s));
        assert_eq!(frames[127].crc, head);
    }

    #[test]
    fn a_large_group_is_split_and_a_large_record_stands_alone() {
        let mut payloads: Vec<Vec<u8>> = (0..1000u32).map(|i| vec![i as u8; 100]).collect();
        payloads.insert(500, vec![7; VALUE_BYTES_MAX * 2]);
        let (values, _) = build(1, &payloads);
        assert!(values.len() > 2);
        let mut next = 1;
        for (first, value) in &values {
            let parsed = parse(&frame::key(*first), value).unwrap();
            assert_eq!(parsed.first, next, "values are contiguous");
            assert!(parsed.count == 1 || value.len() <= VALUE_BYTES_MAX);
            next += u64::from(parsed.count);
        }
        assert_eq!(next, 1002);
    }

    #[test]
    fn any_bit_flip_of_a_value_is_detected_and_a_moved_value_too() {
        let (values, _) = build(3, &[b"one".to_vec(), b"two".to_vec()]);
        let (first, value) = &values[0];
        for bit in 0..value.len() * 8 {
            let mut damaged = value.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let ok = parse(&frame::key(*first), &damaged).is_ok_and(|v| v.damage.is_none());
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
        let moved = parse(&frame::key(4), value).unwrap();
        assert!(matches!(moved.damage, Some(ValueError::Crc { .. })));
        assert_eq!(
            parse(&[1], value).unwrap_err(),
            ValueError::KeyLength { len: 1 }
        );
        assert_eq!(
            parse(&frame::key(3), &value[..5]).unwrap_err(),
            ValueError::TooShort { len: 5 }
        );
    }

    #[test]
    fn a_prefix_of_records_makes_a_valid_value() {
        let (values, _) = build(9, &[b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]);
        let parsed = parse(&frame::key(9), &values[0].1).unwrap();
        let two: usize = parsed.frames().take(2).map(|f| f.unwrap().bytes).sum();
        let prefix = from_records(9, 2, &parsed.records[..two]);
        let reparsed = parse(&frame::key(9), &prefix).unwrap();
        assert_eq!((reparsed.count, reparsed.damage), (2, None));
    }
}
