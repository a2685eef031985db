//! The journal directory: which files live where, the format marker, the checkpoint (the durable
//! high-water mark) and the side files where cut records are kept.
//!
//! ```text
//! DIR/JOURNAL                      marker: "journal format 1"
//! DIR/store/                       the sled database (records tree: one value per group commit)
//! DIR/checkpoint                   last sequence + chain known durable at the last open/snapshot/close
//! DIR/snapshots/snap-<seq>.bin     caller state at <seq> (see snapshot.rs)
//! DIR/aside/<why>-<seq>-<ms>.bin   bytes of records cut off (torn tail, salvage)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::store::RawKv;
use crate::{fsio, Error};

/// On-disk layout version of the directory and its files. 2: one sled value per group commit
/// (`block`), records framed with their sequence (`frame`). Format 1 (one value per record) was
/// never shipped and is not read.
pub const FORMAT: u32 = 2;
const MARKER_PREFIX: &str = "journal format ";
const CHECKPOINT_MAGIC: &[u8; 4] = b"JCKP";
const CHECKPOINT_BYTES: usize = 4 + 8 + 4 + 2 + 4;
/// Files sled 0.34 always has once created; their absence means the store was damaged.
pub const STORE_FILES: [&str; 2] = ["conf", "db"];

/// Paths of one journal directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    pub fn marker(&self) -> PathBuf {
        self.dir.join("JOURNAL")
    }
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn aside(&self) -> PathBuf {
        self.dir.join("aside")
    }

    /// Reads the marker: Ok(None) if absent, the format otherwise.
    pub fn read_marker(&self) -> Result<Option<u32>, Error> {
        let path = self.marker();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::ReadMarker {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let format = text
            .trim()
            .strip_prefix(MARKER_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| Error::ReadMarker {
                path: path.clone(),
                reason: format!("unexpected content {:?}", truncate(&text)),
            })?;
        if format > FORMAT {
            return Err(Error::FormatNewer {
                dir: self.dir.clone(),
                found: format,
                supported: FORMAT,
            });
        }
        if format < FORMAT {
            return Err(Error::ReadMarker {
                path,
                reason: format!("on-disk format {format} is older than the format {FORMAT} this build reads and has no upgrade path (it was only written by development builds); move this directory aside to start a new journal"),
            });
        }
        Ok(Some(format))
    }

    pub fn write_marker(&self) -> Result<(), Error> {
        fsio::write_atomic(
            &self.marker(),
            format!("{MARKER_PREFIX}{FORMAT}\n").as_bytes(),
        )
    }

    /// The first store file that is missing, if any.
    pub fn missing_store_file(&self) -> Option<PathBuf> {
        STORE_FILES
            .iter()
            .map(|f| self.store().join(f))
            .find(|p| !p.is_file())
    }

    /// Names of the entries of the directory (for "not a journal" messages), at most a few.
    pub fn entry_names(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The checkpoint: Ok(None) if absent; Err(reason) text if present but damaged.
    pub fn read_checkpoint(&self) -> Result<Option<Checkpoint>, String> {
        let bytes = match fs::read(self.checkpoint()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("read {}: {e}", self.checkpoint().display())),
        };
        Checkpoint::decode(&bytes).map(Some).map_err(|why| {
            format!(
                "checkpoint {} is damaged: {why}",
                self.checkpoint().display()
            )
        })
    }

    pub fn write_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), Error> {
        fsio::write_atomic(&self.checkpoint(), &checkpoint.encode())
    }

    /// Writes raw records (key, value) to a new side file `aside/<why>-<first>-<ms>.bin`, durably.
    /// Format: repeated `key (8 bytes) ‖ value length (u32 BE) ‖ value`.
    pub fn write_aside(&self, why: &str, first: u64, records: &[RawKv]) -> Result<PathBuf, Error> {
        fsio::create_dir_durable(&self.aside())?;
        let path = self
            .aside()
            .join(format!("{why}-{first:020}-{}.bin", crate::now_ms()));
        let mut bytes = Vec::new();
        for (key, value) in records {
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
            bytes.extend_from_slice(value);
        }
        fsio::write_atomic(&path, &bytes)?;
        Ok(path)
    }
}

/// The durable high-water mark: every record up to `sequence` was acknowledged and verified,
/// and the record at `sequence` has crc `chain`. Written at open, snapshot and close (not per
/// append). Open scans only the records after it (or after the newest snapshot if later);
/// replay verifies the ones before it again as it reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub chain: u32,
    /// Newest event schema version ever written to this journal (rule 8 without a full scan).
    pub version_max: u16,
}

impl Checkpoint {
    fn encode(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_BYTES);
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        bytes.extend_from_slice(&self.chain.to_be_bytes());
        bytes.extend_from_slice(&self.version_max.to_be_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        if bytes.len() != CHECKPOINT_BYTES {
            return Err(format!(
                "{} bytes, expected {CHECKPOINT_BYTES}",
                bytes.len()
            ));
        }
        if &bytes[..4] != CHECKPOINT_MAGIC {
            return Err("bad magic".to_string());
        }
        let stored = u32::from_be_bytes(bytes[18..22].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[..18]);
        if stored != computed {
            return Err(format!(
                "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        Ok(Checkpoint {
            sequence: u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes")),
            chain: u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")),
            version_max: u16::from_be_bytes([bytes[16], bytes[17]]),
        })
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}
