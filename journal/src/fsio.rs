//! Durable file operations: fsync of sled's files and directories, atomic small-file writes
//! (temp, fsync, rename, fsync dir), all with fail points for fault injection.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::LOG_FILE;
use crate::Error;

/// Makes sled's files and directories durable with `fsync`, doing only the `fsync`s needed.
///
/// Why this exists: sled 0.34's `flush()` ends with `sync_file_range(SYNC_FILE_RANGE_WAIT_AFTER
/// | WRITE)` on Linux, which writes dirty pages but neither flushes the device's volatile cache
/// nor makes file metadata (size, new files) durable (sled issues #1351 and #1452). An append
/// is acknowledged only after `sync` has `fsync`ed sled's files and the directories holding them.
///
/// On ext4 every `fsync` costs a journal commit (without a journal: a synchronous write of the
/// inode) and a device cache flush even on a clean file, so
/// `sync` does only these: the log file `db` (`LOG_FILE`, the one file sled rewrites) every time; any other
/// file (`conf`, `snap.*`, `blobs/*`, written once under their name by sled) the first time it is
/// seen under its name; a directory whenever its list of names changed since its last `fsync`.
/// A file that vanishes during the walk (sled removes old snapshots) is skipped.
#[derive(Debug)]
pub struct TreeSyncer {
    root: PathBuf,
    synced_files: HashSet<PathBuf>,
    synced_listings: HashMap<PathBuf, Vec<OsString>>,
}

impl TreeSyncer {
    pub fn new(root: &Path) -> TreeSyncer {
        TreeSyncer {
            root: root.to_path_buf(),
            synced_files: HashSet::new(),
            synced_listings: HashMap::new(),
        }
    }

    /// One durable point for everything sled wrote so far.
    pub fn sync(&mut self) -> Result<(), Error> {
        let root = self.root.clone();
        let mut seen = HashSet::new();
        self.sync_dir_tree(&root, &mut seen)?;
        self.synced_files.retain(|path| seen.contains(path));
        Ok(())
    }

    fn sync_dir_tree(&mut self, dir: &Path, seen: &mut HashSet<PathBuf>) -> Result<(), Error> {
        let sync_err = |source| Error::Sync {
            path: dir.to_path_buf(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(sync_err)? {
            let entry = entry.map_err(sync_err)?;
            let (path, name) = (entry.path(), entry.file_name());
            names.push(name.clone());
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                self.sync_dir_tree(&path, seen)?;
            } else if file_type.is_file() {
                seen.insert(path.clone());
                let log = dir == self.root && name == LOG_FILE;
                if (log || !self.synced_files.contains(&path)) && sync_file(&path)? {
                    self.synced_files.insert(path);
                }
            }
        }
        names.sort();
        if self.synced_listings.get(dir) != Some(&names) {
            sync_dir(dir)?;
            self.synced_listings.insert(dir.to_path_buf(), names);
        }
        Ok(())
    }
}

/// `fsync` of every file and directory under `dir` (a fresh `TreeSyncer` does them all).
pub fn sync_tree(dir: &Path) -> Result<(), Error> {
    TreeSyncer::new(dir).sync()
}

/// Opens and fsyncs a file; Ok(false) if it vanished meanwhile.
fn sync_file(path: &Path) -> Result<bool, Error> {
    match File::open(path) {
        Ok(file) => fsync(&file, path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Sync {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `fsync` of one open file, with the `journal::fsync` fail point.
pub fn fsync(file: &File, path: &Path) -> Result<(), Error> {
    fail::fail_point!("journal::fsync", |_| Err(Error::Sync {
        path: path.to_path_buf(),
        source: std::io::Error::other("fail point journal::fsync"),
    }));
    file.sync_all().map_err(|source| Error::Sync {
        path: path.to_path_buf(),
        source,
    })
}

/// `fsync` of a directory, making its entries (created, renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    let file = File::open(dir).map_err(|source| Error::Sync {
        path: dir.to_path_buf(),
        source,
    })?;
    fsync(&file, dir)
}

/// Writes `bytes` to `path` atomically: a temp file next to it, fsync, rename, fsync the dir.
/// After a crash either the old or the new content is at `path`, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    write_new(&tmp, bytes)?;
    rename(&tmp, path)?;
    sync_dir(dir)
}

/// Creates (truncating) `path` with `bytes` and fsyncs it; `journal::write` fail point.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let write_err = |source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    fail::fail_point!("journal::write", |_| Err(write_err(std::io::Error::other(
        "fail point journal::write"
    ))));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    fsync(&file, path)
}

/// `rename(2)` with the `journal::rename` fail point.
pub fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    let rename_err = |source| Error::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    fail::fail_point!("journal::rename", |_| Err(rename_err(
        std::io::Error::other("fail point journal::rename")
    )));
    fs::rename(from, to).map_err(rename_err)
}

/// `path` with `.tmp` appended to its file name.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates a directory (and parents) and makes its entry durable in its parent.
pub fn create_dir_durable(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    sync_dir(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Copies a directory tree (regular files and directories) from `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    fs::create_dir_all(to).map_err(|source| Error::CreateDir {
        path: to.to_path_buf(),
        source,
    })?;
    let entries = fs::read_dir(from).map_err(|source| Error::ReadFile {
        path: from.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadFile {
            path: from.to_path_buf(),
            source,
        })?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let file_type = entry.file_type().map_err(|source| Error::ReadFile {
            path: src.clone(),
            source,
        })?;
        if file_type.is_dir() {
            copy_tree(&src, &dst)?;
        } else if file_type.is_file() {
            fs::copy(&src, &dst).map_err(|source| Error::WriteFile {
                path: dst.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Total bytes of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
