//! Mounting and unmounting block devices and network exports (nix), verified against
//! `/proc/self/mountinfo`, and putting a filesystem on a blank device with `mkfs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use tracing::info_span;

/// mountinfo can be long on a busy host; beyond this it is not ours to parse.
pub const MOUNTINFO_BYTES_MAX: u64 = 4 << 20;

/// Errors of mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("read {path}")]
    ReadMountinfo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}: {text:?}")]
    ParseMountinfo {
        path: String,
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("mount {source_name} on {target} as {fs_type} with {options:?}")]
    Mount {
        source_name: String,
        target: String,
        fs_type: String,
        options: String,
        #[source]
        source: nix::Error,
    },
    #[error("mount {source_name} on {target} returned success but mountinfo does not show it")]
    NotMounted { source_name: String, target: String },
    #[error("unmount {target}")]
    Unmount {
        target: String,
        #[source]
        source: nix::Error,
    },
    #[error("unmount {target} returned success but mountinfo still shows it")]
    StillMounted { target: String },
    #[error("run {program} on {device}")]
    MkfsSpawn {
        program: String,
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} on {device} exited with {status}: {stderr}")]
    MkfsFailed {
        program: String,
        device: String,
        status: String,
        stderr: String,
    },
    #[error("create mount point {path}")]
    MountPoint {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// "major:minor".
    pub device: String,
    pub root: String,
    pub mount_point: String,
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Undoes mountinfo's octal escapes ("\040" is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/PID/mountinfo` text; `path` names it in errors.
pub fn parse_mountinfo(path: &str, text: &str) -> Result<Vec<MountEntry>, MountError> {
    let mut entries = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |reason| MountError::ParseMountinfo {
            path: path.to_string(),
            line: number + 1,
            reason,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| bad("no '-' separator"))?;
        if separator < 6 || fields.len() < separator + 4 {
            return Err(bad("too few fields"));
        }
        entries.push(MountEntry {
            id: fields[0]
                .parse()
                .map_err(|_| bad("mount id is not a number"))?,
            parent: fields[1]
                .parse()
                .map_err(|_| bad("parent id is not a number"))?,
            device: fields[2].to_string(),
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            options: fields[5].to_string(),
            fs_type: fields[separator + 1].to_string(),
            source: unescape(fields[separator + 2]),
            super_options: fields[separator + 3].to_string(),
        });
    }
    Ok(entries)
}

/// Mounts under a root (whose `proc/self/mountinfo` is read to verify).
#[derive(Debug, Clone)]
pub struct Mounter {
    root: PathBuf,
}

impl Mounter {
    pub fn new(root: &Path) -> Mounter {
        Mounter {
            root: root.to_path_buf(),
        }
    }

    /// The current mount table.
    pub fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        let path = crate::sysfs::under(&self.root, "proc/self/mountinfo");
        let err = |source| MountError::ReadMountinfo {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read(&path).map_err(err)?;
        if text.len() as u64 > MOUNTINFO_BYTES_MAX {
            return Err(err(std::io::Error::other(format!(
                "{} bytes, more than {MOUNTINFO_BYTES_MAX}",
                text.len()
            ))));
        }
        parse_mountinfo(&path.display().to_string(), &String::from_utf8_lossy(&text))
    }

    /// The entry mounted at `target`, if any (the topmost one).
    pub fn mounted_at(&self, target: &Path) -> Result<Option<MountEntry>, MountError> {
        let target = target.to_string_lossy();
        Ok(self
            .mounts()?
            .into_iter()
            .rev()
            .find(|m| m.mount_point == target))
    }

    /// Mounts `source` (a block device or "host:/export") on `target` (created if missing),
    /// then checks mountinfo shows it.
    pub fn mount(
        &self,
        source: &str,
        target: &Path,
        fs_type: &str,
        flags: MsFlags,
        options: &str,
    ) -> Result<MountEntry, MountError> {
        let _span = info_span!("mount", source, target = %target.display(), fs_type).entered();
        std::fs::create_dir_all(target).map_err(|e| MountError::MountPoint {
            path: target.display().to_string(),
            source: e,
        })?;
        let data = (!options.is_empty()).then_some(options);
        nix::mount::mount(Some(source), target, Some(fs_type), flags, data).map_err(|e| {
            MountError::Mount {
                source_name: source.to_string(),
                target: target.display().to_string(),
                fs_type: fs_type.to_string(),
                options: options.to_string(),
                source: e,
            }
        })?;
        match self.mounted_at(target)? {
            Some(entry) if entry.fs_type == fs_type => Ok(entry),
            _ => Err(MountError::NotMounted {
                source_name: source.to_string(),
                target: target.display().to_string(),
            }),
        }
    }

    /// Unmounts `target` and checks mountinfo no longer shows the mount.
    pub fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let _span = info_span!("unmount", target = %target.display()).entered();
        let before = self
            .mounts()?
            .iter()
            .filter(|m| Path::new(&m.mount_point) == target)
            .count();
        nix::mount::umount2(target, MntFlags::empty()).map_err(|e| MountError::Unmount {
            target: target.display().to_string(),
            source: e,
        })?;
        let after = self
            .mounts()?
            .iter()
            .filter(|m| Path::new(&m.mount_point) == target)
            .count();
        if after >= before {
            return Err(MountError::StillMounted {
                target: target.display().to_string(),
            });
        }
        Ok(())
    }
}

/// Where mkfs programs are looked for after PATH (PID 1 may run with no PATH at all).
pub const PROGRAM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Finds `program` on PATH, then in [`PROGRAM_DIRS`].
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(PROGRAM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Puts a filesystem on `device`: `mke2fs -t TYPE -F -q -L LABEL` for ext2/3/4 (the image ships
/// mke2fs; `-F` because it asks before writing a whole device otherwise), `mkfs.TYPE -L LABEL`
/// for others.
pub fn mkfs(device: &Path, fs_type: &str, label: &str) -> Result<(), MountError> {
    let _span = info_span!("mkfs", device = %device.display(), fs_type).entered();
    let ext = matches!(fs_type, "ext2" | "ext3" | "ext4");
    let program = if ext {
        "mke2fs".to_string()
    } else {
        format!("mkfs.{fs_type}")
    };
    let spawn_err = |source| MountError::MkfsSpawn {
        program: program.clone(),
        device: device.display().to_string(),
        source,
    };
    let path = find_program(&program).ok_or_else(|| {
        spawn_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not on PATH nor in /usr/sbin, /sbin",
        ))
    })?;
    let mut command = Command::new(&path);
    if ext {
        command.args(["-t", fs_type, "-F", "-q"]);
    }
    let output = command
        .arg("-L")
        .arg(label)
        .arg(device)
        .output()
        .map_err(spawn_err)?;
    if !output.status.success() {
        return Err(MountError::MkfsFailed {
            program,
            device: device.display().to_string(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}
