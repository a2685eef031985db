//! The data disk: find it (virtio-blk with serial `appliance-data`), classify its first MiB
//! (blank, ours, or something else), format a blank one as ext4, mount it on /data.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use drivers::mount::{MountError, Mounter};
use nix::mount::MsFlags;

/// The virtio-blk serial of the data disk (QEMU `-device virtio-blk-pci,serial=...`).
pub const DATA_DISK_SERIAL: &str = "appliance-data";
/// The ext4 label PID 1 gives the data disk and looks for.
pub const DATA_LABEL: &str = "appliance-data";
/// How much of the disk is read to decide whether it is blank.
pub const PROBE_BYTES: usize = 1 << 20;

const EXT4_SUPERBLOCK_OFFSET: usize = 1024;
const EXT4_MAGIC_OFFSET: usize = EXT4_SUPERBLOCK_OFFSET + 56;
const EXT4_LABEL_OFFSET: usize = EXT4_SUPERBLOCK_OFFSET + 120;
const EXT4_LABEL_BYTES: usize = 16;
const EXT4_MAGIC: u16 = 0xEF53;

/// What the start of a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskContents {
    /// All zeros: never used; ours to format.
    Blank,
    /// An ext2/3/4 filesystem labelled [`DATA_LABEL`]: ours.
    Ours,
    /// An ext2/3/4 filesystem with another label.
    OtherExtFs { label: String },
    /// Anything else; `head` shows its first bytes.
    Unknown { head: String },
    /// Shorter than the ext superblock: cannot be ours.
    TooSmall { bytes: usize },
}

impl DiskContents {
    /// A console description of what was found.
    pub fn describe(&self) -> String {
        match self {
            DiskContents::Blank => "blank (all zeros)".into(),
            DiskContents::Ours => format!("ext4 labelled {DATA_LABEL:?}"),
            DiskContents::OtherExtFs { label } => {
                format!("an ext2/3/4 filesystem labelled {label:?}, not {DATA_LABEL:?}")
            }
            DiskContents::Unknown { head } => {
                format!("unknown data (no ext4 superblock), first bytes {head}")
            }
            DiskContents::TooSmall { bytes } => {
                format!("only {bytes} bytes, too small for a filesystem")
            }
        }
    }
}

/// Classifies the first bytes of a disk (up to [`PROBE_BYTES`]).
pub fn classify(head: &[u8]) -> DiskContents {
    if head.iter().all(|b| *b == 0) {
        return if head.len() < EXT4_LABEL_OFFSET + EXT4_LABEL_BYTES {
            DiskContents::TooSmall { bytes: head.len() }
        } else {
            DiskContents::Blank
        };
    }
    if head.len() < EXT4_LABEL_OFFSET + EXT4_LABEL_BYTES {
        return DiskContents::TooSmall { bytes: head.len() };
    }
    let magic = u16::from_le_bytes([head[EXT4_MAGIC_OFFSET], head[EXT4_MAGIC_OFFSET + 1]]);
    if magic != EXT4_MAGIC {
        let shown: String = head.iter().take(16).map(|b| format!("{b:02x}")).collect();
        return DiskContents::Unknown { head: shown };
    }
    let raw = &head[EXT4_LABEL_OFFSET..EXT4_LABEL_OFFSET + EXT4_LABEL_BYTES];
    let label = String::from_utf8_lossy(raw.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
    if label == DATA_LABEL {
        DiskContents::Ours
    } else {
        DiskContents::OtherExtFs { label }
    }
}

/// Errors of finding, probing, formatting and mounting the data disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("no block device with serial {serial:?} under {dir}")]
    FindDisk { serial: String, dir: PathBuf },
    #[error("read the first {bytes} bytes of {path}")]
    Probe {
        path: PathBuf,
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("format {path} as ext4 with {mke2fs}: {reason}")]
    Format {
        path: PathBuf,
        mke2fs: PathBuf,
        reason: String,
    },
    #[error("data disk {path} holds {found}; refusing to touch it")]
    Foreign { path: PathBuf, found: String },
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Finds the block device whose `serial` (virtio-blk) is [`DATA_DISK_SERIAL`], in `sys_block`
/// (`/sys/block`); returns its name (e.g. `vda`).
pub fn find_by_serial(sys_block: &Path) -> Result<String, DiskError> {
    let not_found = || DiskError::FindDisk {
        serial: DATA_DISK_SERIAL.into(),
        dir: sys_block.into(),
    };
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map_err(|_| not_found())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|name| {
            let serial =
                fs::read_to_string(sys_block.join(name).join("serial")).unwrap_or_default();
            serial.trim() == DATA_DISK_SERIAL
        })
        .ok_or_else(not_found)
}

/// Reads up to [`PROBE_BYTES`] from the start of `path` and classifies them.
pub fn probe(path: &Path) -> Result<DiskContents, DiskError> {
    let err = |source| DiskError::Probe {
        path: path.into(),
        bytes: PROBE_BYTES,
        source,
    };
    let mut head = Vec::with_capacity(PROBE_BYTES);
    fs::File::open(path)
        .map_err(err)?
        .take(PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(err)?;
    Ok(classify(&head))
}

/// Formats `path` as ext4 labelled [`DATA_LABEL`] with the image's mke2fs.
pub fn format(path: &Path, mke2fs: &Path) -> Result<(), DiskError> {
    let err = |reason: String| DiskError::Format {
        path: path.into(),
        mke2fs: mke2fs.into(),
        reason,
    };
    let out = Command::new(mke2fs)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            DATA_LABEL,
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .env(
            "LD_LIBRARY_PATH",
            "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu",
        )
        .output()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes the data disk at `path` ready: formats it if blank, refuses it if foreign, mounts it on
/// `target`. Returns what it found before any change.
pub fn prepare(path: &Path, target: &Path, mke2fs: &Path) -> Result<DiskContents, DiskError> {
    let found = probe(path)?;
    match &found {
        DiskContents::Blank => format(path, mke2fs)?,
        DiskContents::Ours => {}
        other => {
            return Err(DiskError::Foreign {
                path: path.into(),
                found: other.describe(),
            })
        }
    }
    let device = path.to_string_lossy();
    Mounter::new(Path::new("/")).mount(&device, target, "ext4", MsFlags::MS_NOATIME, "")?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4_head(label: &str) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        head[EXT4_MAGIC_OFFSET..EXT4_MAGIC_OFFSET + 2].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        head[EXT4_LABEL_OFFSET..EXT4_LABEL_OFFSET + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    #[test]
    fn zeros_are_blank_and_our_label_is_ours() {
        assert_eq!(classify(&vec![0u8; PROBE_BYTES]), DiskContents::Blank);
        assert_eq!(classify(&ext4_head(DATA_LABEL)), DiskContents::Ours);
    }

    #[test]
    fn other_filesystems_and_random_bytes_are_foreign() {
        assert_eq!(
            classify(&ext4_head("home")),
            DiskContents::OtherExtFs {
                label: "home".into()
            }
        );
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
            .collect();
        let found = classify(&random);
        assert!(matches!(found, DiskContents::Unknown { .. }), "{found:?}");
        assert!(
            found.describe().contains("unknown data"),
            "{}",
            found.describe()
        );
        assert_eq!(classify(&[1, 2, 3]), DiskContents::TooSmall { bytes: 3 });
        assert_eq!(classify(&[0; 16]), DiskContents::TooSmall { bytes: 16 });
    }

    #[test]
    fn a_real_mke2fs_disk_is_ours_and_found_by_probe() {
        let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("mke2fs (e2fsprogs) is needed by this test and by the image build");
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("data.img");
        fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
        assert_eq!(probe(&disk).unwrap(), DiskContents::Blank);
        format(&disk, mke2fs).unwrap();
        assert_eq!(probe(&disk).unwrap(), DiskContents::Ours);
    }

    #[test]
    fn finds_the_disk_by_serial() {
        let dir = tempfile::tempdir().unwrap();
        for (name, serial) in [("vda", "other"), ("vdb", "appliance-data\n")] {
            fs::create_dir_all(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("serial"), serial).unwrap();
        }
        assert_eq!(find_by_serial(dir.path()).unwrap(), "vdb");
        fs::remove_file(dir.path().join("vdb/serial")).unwrap();
        let err = find_by_serial(dir.path()).unwrap_err().to_string();
        assert!(err.contains("appliance-data"), "{err}");
    }
}
