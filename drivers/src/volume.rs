//! Volumes this server mounts itself (the NAS gateway runs here): NVMe namespaces as block
//! devices, Linux md RAID1 mirrors over them (driven with `mdadm`, which the image ships, and
//! read back from md's sysfs), and filesystems on them mounted and verified in mountinfo.
//!
//! Mirrors use md's 1.0 metadata: the superblock sits at the end of each member, so the
//! filesystem starts at a member's first byte (a member can be read alone, as a rescue or a
//! test does). An array is known by its members: the md device holding a member's block device
//! (its `holders/` in sysfs) is the array.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::mount::MsFlags;
use tracing::{info, info_span};

use crate::mount::{find_program, mkfs, MountError, Mounter};
use crate::sysfs::{self, under};
use crate::PciAddress;

/// Bytes read at the start of a device to tell a blank one from one holding data.
const BLANK_PROBE_BYTES: usize = 1 << 20;
/// Where the ext2/3/4 superblock's magic sits, and its value.
const EXT_MAGIC_OFFSET: usize = 1024 + 0x38;
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];

/// Errors of volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("the NVMe controller at {address} shows no namespace {namespace} under {path}")]
    NoNamespace {
        address: PciAddress,
        namespace: u32,
        path: String,
    },
    #[error(transparent)]
    Sysfs(#[from] sysfs::SysfsError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("mdadm is not on PATH nor in /usr/sbin, /sbin")]
    NoMdadm,
    #[error("{command} exited with {status}: {stderr}")]
    Mdadm {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{device} is no member of any md array")]
    NoArray { device: String },
    #[error("{device} holds data that is not an ext filesystem; it is not formatted over")]
    ForeignData { device: String },
    #[error("read {device}")]
    Read {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free md device number")]
    NoFreeMd,
    #[error("no filesystem with UUID {uuid} on the disks behind {address} within {timeout_ms} ms (seen: {seen})")]
    NoFilesystem {
        address: PciAddress,
        uuid: String,
        timeout_ms: u64,
        seen: String,
    },
    #[error("{device} holds no filesystem; a disk behind an HBA is mounted, never formatted")]
    Blank { device: String },
    #[error("unmount {target} lazily")]
    Detach {
        target: String,
        #[source]
        source: nix::Error,
    },
}

/// A member of a mirror as md shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorMember {
    /// The member's block device, e.g. "/dev/nvme1n1".
    pub device: PathBuf,
    /// md's state words, e.g. "in_sync", "faulty", "spare".
    pub state: String,
    /// Its block device's number ("259:3"), None when that device is gone (pulled: its name
    /// may already belong to another drive).
    pub number: Option<String>,
}

impl MirrorMember {
    /// Whether md holds it failed or its device is gone.
    pub fn lost(&self) -> bool {
        self.state.contains("faulty") || self.number.is_none()
    }
}

/// A mirror's condition as md shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    /// The array's block device, e.g. "/dev/md127".
    pub device: PathBuf,
    pub members: Vec<MirrorMember>,
    /// Members the array lacks (md's `degraded`).
    pub degraded: u32,
    /// md's `sync_action`: "idle", "recover", "resync", ...
    pub sync_action: String,
    /// Sectors done and to do of a running sync (md's `sync_completed`).
    pub sync_completed: Option<(u64, u64)>,
}

impl MirrorStatus {
    /// Whether every member is in sync and nothing is missing.
    pub fn clean(&self) -> bool {
        self.degraded == 0
            && self.sync_action == "idle"
            && self
                .members
                .iter()
                .all(|m| m.state.contains("in_sync") && !m.lost())
    }
}

/// The volumes of this server.
pub trait Volumes: Send + Sync {
    /// The block device of namespace `namespace` of the NVMe controller at `address`, waiting up
    /// to `timeout` for the kernel to show it.
    fn namespace(
        &self,
        address: PciAddress,
        namespace: u32,
        timeout: Duration,
    ) -> Result<PathBuf, VolumeError>;
    /// Starts the RAID1 mirror over `members` and returns its block device: the running array
    /// that holds one of them, or one assembled from their superblocks, or a new one when none
    /// of them carries a superblock.
    fn start_mirror(&self, name: &str, members: &[PathBuf]) -> Result<PathBuf, VolumeError>;
    /// The mirror holding `member`, if one does.
    fn mirror_of(&self, member: &Path) -> Result<Option<MirrorStatus>, VolumeError>;
    /// The mirror whose block device is `array`.
    fn mirror(&self, array: &Path) -> Result<MirrorStatus, VolumeError>;
    /// Fails `member` out of `array` (when it is still there) and removes every member md
    /// holds failed or whose device is gone.
    fn remove_member(&self, array: &Path, member: Option<&Path>) -> Result<(), VolumeError>;
    /// Adds `member` to `array`; md starts rebuilding onto it.
    fn add_member(&self, array: &Path, member: &Path) -> Result<(), VolumeError>;
    /// The block device (a disk or a partition) behind the storage HBA at `address` whose
    /// ext filesystem has UUID `uuid`, waiting up to `timeout` for the HBA's disks to show.
    fn filesystem_behind(
        &self,
        address: PciAddress,
        uuid: &str,
        timeout: Duration,
    ) -> Result<PathBuf, VolumeError>;
    /// Mounts `device` on `target` (with `format_blank`, a filesystem is put on a blank device
    /// first); a target already mounted from `device` is left as it is.
    fn mount(
        &self,
        device: &Path,
        target: &Path,
        filesystem: &str,
        options: &str,
        format_blank: bool,
    ) -> Result<(), VolumeError>;
    /// Unmounts `target`, when mounted; with `detach`, lazily (its device is gone: the mount
    /// leaves the namespace now and is cleaned up once unused).
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), VolumeError>;
    /// What is mounted on `target` (its source), if anything.
    fn mounted(&self, target: &Path) -> Result<Option<String>, VolumeError>;
    /// Stops `array` (after its filesystem is unmounted).
    fn stop_mirror(&self, array: &Path) -> Result<(), VolumeError>;
}

/// [`Volumes`] on the real kernel, under `root` (sysfs and /dev paths; "/" in production).
#[derive(Debug, Clone)]
pub struct LinuxVolumes {
    root: PathBuf,
    mounter: Mounter,
}

impl LinuxVolumes {
    pub fn new(root: &Path) -> LinuxVolumes {
        LinuxVolumes {
            root: root.to_path_buf(),
            mounter: Mounter::new(root),
        }
    }

    fn mdadm(&self, args: &[&str]) -> Result<String, VolumeError> {
        let program = find_program("mdadm").ok_or(VolumeError::NoMdadm)?;
        let command = format!("mdadm {}", args.join(" "));
        let _span = info_span!("mdadm", command).entered();
        let output = Command::new(&program)
            .args(args)
            .output()
            .map_err(|source| VolumeError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(VolumeError::Mdadm {
                command,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The number ("259:3") of the block device `device` names, read from sysfs.
    fn number_of(&self, device: &Path) -> Option<String> {
        let name = block_name(device);
        sysfs::read_optional(&under(&self.root, &format!("sys/class/block/{name}/dev")))
            .ok()
            .flatten()
    }

    /// Whether mdadm finds an md superblock on `member`.
    fn has_superblock(&self, member: &Path) -> bool {
        self.mdadm(&["--examine", &member.to_string_lossy()])
            .is_ok()
    }

    /// The md block name ("md127") holding the block device `name` ("nvme1n1").
    fn holder_of(&self, name: &str) -> Result<Option<String>, VolumeError> {
        let holders = under(&self.root, &format!("sys/class/block/{name}/holders"));
        match sysfs::list(&holders) {
            Ok(list) => Ok(list.into_iter().find(|h| h.starts_with("md"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The first md number from 127 down that the kernel does not use.
    fn free_md(&self) -> Result<PathBuf, VolumeError> {
        (0..=127u32)
            .rev()
            .map(|n| format!("md{n}"))
            .find(|name| !under(&self.root, &format!("sys/class/block/{name}")).exists())
            .map(|name| PathBuf::from("/dev").join(name))
            .ok_or(VolumeError::NoFreeMd)
    }

    fn status_of(&self, md: &str) -> Result<MirrorStatus, VolumeError> {
        let dir = under(&self.root, &format!("sys/class/block/{md}/md"));
        let mut members = Vec::new();
        for entry in sysfs::list(&dir)? {
            let Some(member) = entry.strip_prefix("dev-") else {
                continue;
            };
            let state = sysfs::read(&dir.join(&entry).join("state"))?;
            let number = sysfs::read_optional(&dir.join(&entry).join("block/dev"))
                .ok()
                .flatten();
            members.push(MirrorMember {
                device: PathBuf::from("/dev").join(member),
                state,
                number,
            });
        }
        let degraded_path = dir.join("degraded");
        let degraded = match sysfs::read_optional(&degraded_path)? {
            Some(text) => sysfs::parse_dec(&degraded_path, &text, "a count of members")?,
            None => 0,
        };
        let sync_action = sysfs::read_optional(&dir.join("sync_action"))?.unwrap_or_default();
        let sync_completed = sysfs::read_optional(&dir.join("sync_completed"))?
            .and_then(|text| parse_sync_completed(&text));
        Ok(MirrorStatus {
            device: PathBuf::from("/dev").join(md),
            members,
            degraded,
            sync_action,
            sync_completed,
        })
    }
}

/// md's `sync_completed`: "done / total" in sectors, or "none".
fn parse_sync_completed(text: &str) -> Option<(u64, u64)> {
    let (done, total) = text.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

fn block_name(device: &Path) -> String {
    device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Volumes for LinuxVolumes {
    fn namespace(
        &self,
        address: PciAddress,
        namespace: u32,
        timeout: Duration,
    ) -> Result<PathBuf, VolumeError> {
        let controllers = under(&self.root, &format!("sys/bus/pci/devices/{address}/nvme"));
        let find = || -> Result<Option<String>, VolumeError> {
            let Ok(list) = sysfs::list(&controllers) else {
                return Ok(None);
            };
            for controller in list {
                let wanted = format!("n{namespace}");
                let dir = controllers.join(&controller);
                let Ok(entries) = sysfs::list(&dir) else {
                    continue;
                };
                if let Some(found) = entries
                    .into_iter()
                    .find(|e| e.starts_with("nvme") && e.ends_with(&wanted) && !e.contains('c'))
                {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        };
        let found = crate::try_wait_until(timeout, Duration::from_millis(20), || {
            find().map(|f| f.filter(|name| under(&self.root, &format!("dev/{name}")).exists()))
        })
        .ok()
        .flatten();
        found
            .map(|name| PathBuf::from("/dev").join(name))
            .ok_or_else(|| VolumeError::NoNamespace {
                address,
                namespace,
                path: controllers.display().to_string(),
            })
    }

    fn start_mirror(&self, name: &str, members: &[PathBuf]) -> Result<PathBuf, VolumeError> {
        for member in members {
            if let Some(md) = self.holder_of(&block_name(member))? {
                return Ok(PathBuf::from("/dev").join(md));
            }
        }
        let device = self.free_md()?;
        let md = device.to_string_lossy().into_owned();
        let paths: Vec<String> = members
            .iter()
            .map(|m| m.to_string_lossy().into_owned())
            .collect();
        let carrying: Vec<&str> = members
            .iter()
            .zip(&paths)
            .filter(|(m, _)| self.has_superblock(m))
            .map(|(_, p)| p.as_str())
            .collect();
        if carrying.is_empty() {
            let count = format!("--raid-devices={}", paths.len());
            let label = format!("--name={name}");
            let mut args = vec![
                "--create",
                md.as_str(),
                "--run",
                "--level=1",
                "--metadata=1.0",
                "--assume-clean",
                "--homehost=any",
                count.as_str(),
                label.as_str(),
            ];
            args.extend(paths.iter().map(String::as_str));
            self.mdadm(&args)?;
            info!(array = %md, ?paths, "mirror created");
        } else {
            let mut args = vec!["--assemble", md.as_str(), "--run"];
            args.extend(carrying.iter().copied());
            self.mdadm(&args)?;
            info!(array = %md, ?carrying, "mirror assembled");
            // A member without a superblock (a spare added while the array was down) is
            // added now, as a rebuild.
            for (member, path) in members.iter().zip(&paths) {
                if !carrying.contains(&path.as_str()) {
                    self.add_member(&device, member)?;
                }
            }
        }
        Ok(device)
    }

    fn mirror_of(&self, member: &Path) -> Result<Option<MirrorStatus>, VolumeError> {
        match self.holder_of(&block_name(member))? {
            Some(md) => self.status_of(&md).map(Some),
            None => Ok(None),
        }
    }

    fn mirror(&self, array: &Path) -> Result<MirrorStatus, VolumeError> {
        self.status_of(&block_name(array))
    }

    fn remove_member(&self, array: &Path, member: Option<&Path>) -> Result<(), VolumeError> {
        let md = array.to_string_lossy().into_owned();
        let status = self.mirror(array)?;
        if let Some(member) = member {
            let number = self.number_of(member);
            if status
                .members
                .iter()
                .any(|m| !m.lost() && m.number == number)
            {
                let path = member.to_string_lossy().into_owned();
                self.mdadm(&["--manage", &md, "--fail", &path, "--remove", &path])?;
                info!(array = %md, member = %path, "member failed out of the mirror");
            }
        }
        // What md holds failed, or whose device is gone (a drive pulled from its slot; mdadm's
        // `detached` finds it by its number, not by a name another drive may have taken).
        let status = self.mirror(array)?;
        if status.members.iter().any(MirrorMember::lost) {
            self.mdadm(&[
                "--manage", &md, "--fail", "detached", "--remove", "detached", "--remove", "failed",
            ])?;
        }
        Ok(())
    }

    fn add_member(&self, array: &Path, member: &Path) -> Result<(), VolumeError> {
        let status = self.mirror(array)?;
        let number = self.number_of(member);
        if number.is_some() && status.members.iter().any(|m| m.number == number) {
            return Ok(());
        }
        let md = array.to_string_lossy().into_owned();
        let path = member.to_string_lossy().into_owned();
        self.mdadm(&["--manage", &md, "--add", &path])?;
        info!(array = %md, member = %path, "member added; md rebuilds onto it");
        Ok(())
    }

    fn filesystem_behind(
        &self,
        address: PciAddress,
        uuid: &str,
        timeout: Duration,
    ) -> Result<PathBuf, VolumeError> {
        let device = under(&self.root, &format!("sys/bus/pci/devices/{address}"));
        let wanted = uuid.to_ascii_lowercase();
        let mut seen = Vec::new();
        let found = crate::try_wait_until(timeout, Duration::from_millis(100), || {
            seen.clear();
            for name in block_devices_under(&device) {
                let path = under(&self.root, &format!("dev/{name}"));
                let uuid = ext_uuid(&path).unwrap_or(None);
                seen.push(format!("{name}={}", uuid.as_deref().unwrap_or("none")));
                if uuid.as_deref() == Some(wanted.as_str()) {
                    return Ok::<_, VolumeError>(Some(PathBuf::from("/dev").join(name)));
                }
            }
            Ok(None)
        });
        found
            .ok()
            .flatten()
            .ok_or_else(|| VolumeError::NoFilesystem {
                address,
                uuid: uuid.to_string(),
                timeout_ms: timeout.as_millis() as u64,
                seen: if seen.is_empty() {
                    format!("no disk; {}", scsi_summary(&device))
                } else {
                    seen.join(" ")
                },
            })
    }

    fn mount(
        &self,
        device: &Path,
        target: &Path,
        filesystem: &str,
        options: &str,
        format_blank: bool,
    ) -> Result<(), VolumeError> {
        let source = device.to_string_lossy().into_owned();
        if let Some(entry) = self.mounter.mounted_at(target)? {
            if entry.source == source {
                return Ok(());
            }
        }
        let path = under(&self.root, &source);
        match probe(&path)? {
            Contents::Ext => {}
            Contents::Blank if format_blank => mkfs(device, filesystem, "appliance")?,
            Contents::Blank => return Err(VolumeError::Blank { device: source }),
            Contents::Other => {
                return Err(VolumeError::ForeignData { device: source });
            }
        }
        // "defaults" is fstab's word for no options; the kernel knows no such option.
        let options: Vec<&str> = options
            .split(',')
            .filter(|o| !o.is_empty() && *o != "defaults")
            .collect();
        self.mounter.mount(
            &source,
            target,
            filesystem,
            MsFlags::MS_NOATIME,
            &options.join(","),
        )?;
        Ok(())
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), VolumeError> {
        if self.mounter.mounted_at(target)?.is_none() {
            return Ok(());
        }
        if !detach {
            self.mounter.unmount(target)?;
            return Ok(());
        }
        let _span = info_span!("unmount_detach", target = %target.display()).entered();
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|source| {
            VolumeError::Detach {
                target: target.display().to_string(),
                source,
            }
        })
    }

    fn mounted(&self, target: &Path) -> Result<Option<String>, VolumeError> {
        Ok(self.mounter.mounted_at(target)?.map(|m| m.source))
    }

    fn stop_mirror(&self, array: &Path) -> Result<(), VolumeError> {
        if !under(
            &self.root,
            &format!("sys/class/block/{}", block_name(array)),
        )
        .exists()
        {
            return Ok(());
        }
        self.mdadm(&["--stop", &array.to_string_lossy()])?;
        Ok(())
    }
}

/// Deepest directory level searched below a PCI device for its disks (host, port, end device,
/// target, LUN, block: about seven).
const BLOCK_SEARCH_DEPTH: usize = 10;

/// The block device names (disks and their partitions) below the sysfs directory `dir`, found
/// in its `block/` subdirectories (symbolic links are not followed).
pub fn block_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "block" {
                for disk in sysfs::list(&entry.path()).unwrap_or_default() {
                    let partitions = sysfs::list(&entry.path().join(&disk)).unwrap_or_default();
                    found.extend(
                        partitions
                            .into_iter()
                            .filter(|p| p.starts_with(&disk) && p.len() > disk.len()),
                    );
                    found.push(disk);
                }
            } else if depth < BLOCK_SEARCH_DEPTH {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found.sort();
    found
}

/// What a PCI device's sysfs directory shows of SCSI: its driver, hosts, targets and LUNs (for
/// an error that says why no disk was found).
fn scsi_summary(device: &Path) -> String {
    let driver = sysfs::link_name(&device.join("driver")).ok().flatten();
    let mut names = Vec::new();
    let mut stack = vec![(device.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let scsi = ["host", "port-", "end_device-", "target"]
                .iter()
                .any(|p| name.starts_with(p))
                || name.chars().next().is_some_and(|c| c.is_ascii_digit()) && name.contains(':');
            if scsi {
                names.push(name);
                if depth < BLOCK_SEARCH_DEPTH {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
    names.sort();
    format!(
        "driver {}, SCSI: [{}]",
        driver.as_deref().unwrap_or("none"),
        names.join(" ")
    )
}

/// Where an ext superblock keeps its UUID (16 bytes at 0x68 of the superblock at 1024).
const EXT_UUID_OFFSET: usize = 1024 + 0x68;

/// The UUID of the ext filesystem on `device` ("0e3f...-..."), if it holds one.
pub fn ext_uuid(device: &Path) -> Result<Option<String>, VolumeError> {
    use std::io::Read;
    let err = |source| VolumeError::Read {
        device: device.display().to_string(),
        source,
    };
    let mut start = [0u8; 2048];
    let mut file = std::fs::File::open(device).map_err(err)?;
    file.read_exact(&mut start).map_err(err)?;
    Ok(uuid_of(&start))
}

/// The UUID in `start` (a device's first 2 KiB) when it holds an ext superblock.
pub fn uuid_of(start: &[u8]) -> Option<String> {
    if contents_of(start) != Contents::Ext {
        return None;
    }
    let b = start.get(EXT_UUID_OFFSET..EXT_UUID_OFFSET + 16)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// What the start of a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// Zeros only.
    Blank,
    /// An ext2/3/4 superblock.
    Ext,
    /// Something else.
    Other,
}

/// Reads the start of `device` and says what it holds.
pub fn probe(device: &Path) -> Result<Contents, VolumeError> {
    use std::io::Read;
    let err = |source| VolumeError::Read {
        device: device.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(device).map_err(err)?;
    let mut start = vec![0u8; BLANK_PROBE_BYTES];
    let mut filled = 0;
    while filled < start.len() {
        match file.read(&mut start[filled..]).map_err(err)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(contents_of(&start[..filled]))
}

/// What `start` (a device's first bytes) holds.
pub fn contents_of(start: &[u8]) -> Contents {
    if start.get(EXT_MAGIC_OFFSET..EXT_MAGIC_OFFSET + 2) == Some(&EXT_MAGIC[..]) {
        Contents::Ext
    } else if start.iter().all(|&b| b == 0) {
        Contents::Blank
    } else {
        Contents::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_completed_is_done_over_total_or_none() {
        assert_eq!(parse_sync_completed("2048 / 131072"), Some((2048, 131072)));
        assert_eq!(parse_sync_completed("none"), None);
        assert_eq!(parse_sync_completed("x / 2"), None);
    }

    #[test]
    fn a_device_start_is_blank_ext_or_other() {
        let mut start = vec![0u8; 4096];
        assert_eq!(contents_of(&start), Contents::Blank);
        start[EXT_MAGIC_OFFSET] = 0x53;
        start[EXT_MAGIC_OFFSET + 1] = 0xef;
        assert_eq!(contents_of(&start), Contents::Ext);
        start[EXT_MAGIC_OFFSET] = 0;
        assert_eq!(contents_of(&start), Contents::Other);
    }

    #[test]
    fn an_ext_uuid_is_read_from_its_superblock() {
        let mut start = vec![0u8; 2048];
        assert_eq!(uuid_of(&start), None, "blank");
        start[EXT_MAGIC_OFFSET] = 0x53;
        start[EXT_MAGIC_OFFSET + 1] = 0xef;
        for (i, b) in start[EXT_UUID_OFFSET..EXT_UUID_OFFSET + 16]
            .iter_mut()
            .enumerate()
        {
            *b = i as u8 * 0x11;
        }
        assert_eq!(
            uuid_of(&start).as_deref(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
    }

    /// The disks behind an HBA, as sysfs nests them (host, target, LUN, block, partition).
    #[test]
    fn the_disks_behind_an_hba_are_found_in_its_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let hba = root.path().join("0000:01:00.0");
        let lun = hba.join("host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0");
        std::fs::create_dir_all(lun.join("block/sdb/sdb1")).unwrap();
        std::fs::create_dir_all(lun.join("block/sdb/queue")).unwrap();
        std::fs::create_dir_all(hba.join("host2/target2:0:1/2:0:1:0/block/sdc")).unwrap();
        std::fs::create_dir_all(hba.join("power")).unwrap();
        assert_eq!(block_devices_under(&hba), ["sdb", "sdb1", "sdc"]);
    }

    /// md's sysfs as the QEMU guest shows a RAID1 over two NVMe drives, one rebuilding.
    #[test]
    fn a_mirror_is_read_from_md_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let md = root.path().join("sys/class/block/md127/md");
        for (member, state) in [
            ("nvme0n1", "in_sync"),
            ("nvme2n1", "spare"),
            ("nvme1n1", "in_sync"),
        ] {
            std::fs::create_dir_all(md.join(format!("dev-{member}"))).unwrap();
            std::fs::write(md.join(format!("dev-{member}/state")), format!("{state}\n")).unwrap();
            if member != "nvme1n1" {
                // nvme1n1 was pulled: md still lists it, its block device is gone.
                std::fs::create_dir_all(md.join(format!("dev-{member}/block"))).unwrap();
                std::fs::write(md.join(format!("dev-{member}/block/dev")), "259:1\n").unwrap();
            }
            let holders = root
                .path()
                .join(format!("sys/class/block/{member}/holders/md127"));
            std::fs::create_dir_all(holders).unwrap();
        }
        std::fs::write(md.join("degraded"), "1\n").unwrap();
        std::fs::write(md.join("sync_action"), "recover\n").unwrap();
        std::fs::write(md.join("sync_completed"), "1024 / 4096\n").unwrap();
        let volumes = LinuxVolumes::new(root.path());
        let status = volumes
            .mirror_of(Path::new("/dev/nvme2n1"))
            .unwrap()
            .expect("nvme2n1 is held by md127");
        assert_eq!(status.device, Path::new("/dev/md127"));
        assert_eq!(status.degraded, 1);
        assert_eq!(status.sync_action, "recover");
        assert_eq!(status.sync_completed, Some((1024, 4096)));
        assert!(!status.clean());
        assert_eq!(status.members.len(), 3);
        let lost: Vec<_> = status.members.iter().filter(|m| m.lost()).collect();
        assert_eq!(lost.len(), 1, "{status:?}");
        assert_eq!(lost[0].device, Path::new("/dev/nvme1n1"));
        assert!(volumes
            .mirror_of(Path::new("/dev/nvme5n1"))
            .unwrap()
            .is_none());
    }
}
