//! Reading and writing sysfs attributes under an injectable root, with errors that name the path
//! and the value.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// sysfs attributes are at most one page; anything longer is not an attribute we understand.
pub const ATTRIBUTE_BYTES_MAX: u64 = 4096;

/// Errors of sysfs access.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write {value:?} to {path}")]
    Write {
        path: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("list {path}")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {value:?}, which is not {expected}")]
    Parse {
        path: String,
        value: String,
        expected: &'static str,
    },
    #[error("{path} is at least {bytes} bytes, more than an attribute's {ATTRIBUTE_BYTES_MAX}")]
    TooLong { path: String, bytes: u64 },
}

impl SysfsError {
    /// True when the failure is that the file does not exist (a device that vanished, an
    /// optional attribute that this kernel does not have).
    pub fn is_not_found(&self) -> bool {
        match self {
            SysfsError::Read { source, .. } | SysfsError::List { source, .. } => {
                source.kind() == ErrorKind::NotFound
            }
            SysfsError::Write { source, .. } => source.kind() == ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Reads an attribute, trimmed of its trailing newline. One open and one read: enumeration
/// reads a dozen attributes per device.
pub fn read(path: &Path) -> Result<String, SysfsError> {
    use std::io::Read;
    let err = |source| SysfsError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::with_capacity(64);
    file.take(ATTRIBUTE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > ATTRIBUTE_BYTES_MAX {
        return Err(SysfsError::TooLong {
            path: path.display().to_string(),
            bytes: bytes.len() as u64,
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.trim_end_matches(['\n', '\0']).trim().to_string())
}

/// Reads an attribute that may be absent: `Ok(None)` when the file does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, SysfsError> {
    match read(path) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `value` to an attribute in a single write (sysfs stores take one write).
pub fn write(path: &Path, value: &str) -> Result<(), SysfsError> {
    use std::io::Write;
    let err = |source| SysfsError::Write {
        path: path.display().to_string(),
        value: value.to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

/// Names in a directory, sorted.
pub fn list(path: &Path) -> Result<Vec<String>, SysfsError> {
    let err = |source| SysfsError::List {
        path: path.display().to_string(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(err)? {
        names.push(
            entry
                .map_err(err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// The last component of a symlink's target (`driver -> ../../bus/pci/drivers/nvme` gives
/// "nvme"); `Ok(None)` when the link does not exist.
pub fn link_name(path: &Path) -> Result<Option<String>, SysfsError> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysfsError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Parses a hex attribute such as "0x8086" or "0x010802".
pub fn parse_hex(path: &Path, value: &str, expected: &'static str) -> Result<u32, SysfsError> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    u32::from_str_radix(digits, 16).map_err(|_| SysfsError::Parse {
        path: path.display().to_string(),
        value: value.to_string(),
        expected,
    })
}

/// Parses a decimal attribute.
pub fn parse_dec<T: std::str::FromStr>(
    path: &Path,
    value: &str,
    expected: &'static str,
) -> Result<T, SysfsError> {
    value.parse().map_err(|_| SysfsError::Parse {
        path: path.display().to_string(),
        value: value.to_string(),
        expected,
    })
}

/// Joins a root and an absolute-looking sysfs path ("sys/bus/pci").
pub fn under(root: &Path, relative: &str) -> PathBuf {
    root.join(relative.trim_start_matches('/'))
}
