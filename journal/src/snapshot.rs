//! Snapshots: caller state bytes at a sequence, with their own crc and the chain value there.
//!
//! File `snapshots/snap-<sequence, 20 digits>.bin`, integers big-endian:
//! magic `JSNP` ‖ format u32 ‖ sequence u64 ‖ chain u32 ‖ length u64 ‖ state bytes ‖ crc32 of
//! everything before it. Written atomically (temp, fsync, rename, fsync dir); the newest
//! `SNAPSHOTS_KEPT` are kept. A snapshot is a cache: any doubt about it means replay from 1.

use std::fs;
use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::store::Store;
use crate::{fsio, Error, Snapshot};

const MAGIC: &[u8; 4] = b"JSNP";
const FORMAT: u32 = 1;
const HEADER_BYTES: usize = 4 + 4 + 8 + 4 + 8;
/// Largest snapshot accepted.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;
/// Snapshots kept on disk (the newest ones); older ones are deleted after a new one is durable.
pub const SNAPSHOTS_KEPT: usize = 2;

/// A snapshot read back and checked against its own crc.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub chain: u32,
}

/// Writes a snapshot durably and prunes older ones.
pub fn write(layout: &Layout, sequence: u64, chain: u32, state: &[u8]) -> Result<PathBuf, Error> {
    if state.len() > SNAPSHOT_BYTES_MAX {
        return Err(Error::SnapshotTooLarge {
            bytes: state.len(),
            bytes_max: SNAPSHOT_BYTES_MAX,
        });
    }
    fsio::create_dir_durable(&layout.snapshots())?;
    let path = layout.snapshots().join(file_name(sequence));
    fsio::write_atomic(&path, &encode(sequence, chain, state))?;
    prune(layout);
    Ok(path)
}

fn file_name(sequence: u64) -> String {
    format!("snap-{sequence:020}.bin")
}

fn encode(sequence: u64, chain: u32, state: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + state.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_be_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes.extend_from_slice(&chain.to_be_bytes());
    bytes.extend_from_slice(&(state.len() as u64).to_be_bytes());
    bytes.extend_from_slice(state);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Decodes a snapshot file's bytes, checking magic, format, length and crc.
fn decode(bytes: Vec<u8>) -> Result<Loaded, String> {
    if bytes.len() < HEADER_BYTES + 4 {
        return Err(format!(
            "{} bytes, shorter than its {} bytes of framing",
            bytes.len(),
            HEADER_BYTES + 4
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err("bad magic".to_string());
    }
    let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let format = be32(4);
    if format != FORMAT {
        return Err(format!(
            "format {format} is not known to this build (knows {FORMAT})"
        ));
    }
    let (sequence, chain, len) = (be64(8), be32(16), be64(20));
    let body_end = bytes.len() - 4;
    if len != (body_end - HEADER_BYTES) as u64 {
        return Err(format!(
            "length field says {len} bytes but the file holds {}",
            body_end - HEADER_BYTES
        ));
    }
    let (stored, computed) = (be32(body_end), crc32fast::hash(&bytes[..body_end]));
    if stored != computed {
        return Err(format!(
            "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let mut state = bytes;
    state.truncate(body_end);
    state.drain(..HEADER_BYTES);
    Ok(Loaded {
        snapshot: Snapshot {
            sequence,
            bytes: state,
        },
        chain,
    })
}

/// Snapshot files by sequence, newest first (names that do not parse are skipped).
fn candidates(layout: &Layout) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(layout.snapshots()) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let sequence = name
                .strip_prefix("snap-")?
                .strip_suffix(".bin")?
                .parse::<u64>()
                .ok()?;
            Some((sequence, e.path()))
        })
        .collect();
    found.sort_by_key(|(sequence, _)| std::cmp::Reverse(*sequence));
    found
}

fn prune(layout: &Layout) {
    for (_, path) in candidates(layout).into_iter().skip(SNAPSHOTS_KEPT) {
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "remove old snapshot");
        }
    }
}

/// The newest snapshot that is intact and sits on the chain (the record at its sequence exists,
/// is intact, and has the snapshot's chain value), with notes on every one skipped.
pub fn newest_valid(
    layout: &Layout,
    store: &Store,
    last_sequence: u64,
) -> (Option<Loaded>, Vec<String>) {
    newest_valid_at_or_before(layout, store, last_sequence, u64::MAX)
}

/// [`newest_valid`] among the snapshots taken at or before `sequence`.
pub fn newest_valid_at_or_before(
    layout: &Layout,
    store: &Store,
    last_sequence: u64,
    sequence: u64,
) -> (Option<Loaded>, Vec<String>) {
    let mut notes = Vec::new();
    let older = candidates(layout)
        .into_iter()
        .filter(|(at, _)| *at <= sequence);
    for (sequence, path) in older {
        match check_one(store, &path, sequence, last_sequence) {
            Ok(loaded) => return (Some(loaded), notes),
            Err(why) => notes.push(format!("snapshot {} ignored: {why}", path.display())),
        }
    }
    if !notes.is_empty() {
        notes.push("no valid snapshot: state is rebuilt by replay from sequence 1".to_string());
    }
    (None, notes)
}

fn check_one(
    store: &Store,
    path: &Path,
    sequence: u64,
    last_sequence: u64,
) -> Result<Loaded, String> {
    let bytes = fs::read(path).map_err(|e| format!("read: {e}"))?;
    let loaded = decode(bytes)?;
    if loaded.snapshot.sequence != sequence {
        return Err(format!(
            "its header says sequence {} but its name says {sequence}",
            loaded.snapshot.sequence
        ));
    }
    if sequence == 0 || sequence > last_sequence {
        return Err(format!(
            "stale: taken at sequence {sequence}, but the journal ends at {last_sequence}"
        ));
    }
    let crc = store
        .record_crc(sequence, path)
        .map_err(|e| e.to_string())??;
    if crc != loaded.chain {
        return Err(format!(
            "off the chain: it has chain {:#010x}, record {sequence} has crc {crc:#010x}",
            loaded.chain
        ));
    }
    Ok(loaded)
}

/// Moves snapshots taken at or after `sequence` into `aside/` (salvage); returns where.
pub fn move_aside_from(layout: &Layout, sequence: u64) -> Result<Vec<PathBuf>, Error> {
    let mut moved = Vec::new();
    for (at, path) in candidates(layout)
        .into_iter()
        .filter(|(at, _)| *at >= sequence)
    {
        fsio::create_dir_durable(&layout.aside())?;
        let to = layout
            .aside()
            .join(format!("{}-{}", file_name(at), crate::now_ms()));
        fsio::rename(&path, &to)?;
        moved.push(to);
    }
    if !moved.is_empty() {
        fsio::sync_dir(&layout.snapshots())?;
        fsio::sync_dir(&layout.aside())?;
    }
    Ok(moved)
}
