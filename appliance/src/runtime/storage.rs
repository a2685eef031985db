//! The NAS gateway's storage, on this server: a mirror mount is an md RAID1 over the gateway's
//! composed NVMe drives with a filesystem mounted at the mount's target; a disk mount is a
//! filesystem found by its UUID on the disks behind the gateway's storage HBA (a dual-ported
//! shelf: a standby HBA reaches the same disks, and a failover of the HBA mounts it again from
//! there). The reconciler makes a mount (`mount`), takes it down (`unmount`) and, in a failover
//! of one of its devices, moves it (`move_mounts`: a mirror fails the old member out and adds
//! the replacement, md rebuilding onto it while the filesystem stays mounted; a disk is mounted
//! again from behind the standby HBA). After a reboot `restore` assembles and mounts again what
//! State says is mounted, and `release` puts it all away when the service stops; `conditions`
//! reads md and mountinfo for the monitor, which journals a change (clean, rebuilding,
//! degraded, unmounted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::reconciler::Drivers;
use crate::decide::command::Observation;
use crate::model::{
    DeviceId, Failure, Health, Mount, MountCondition, MountSource, MountState, State, System,
};

/// The NVMe namespace a mirror member uses.
const MEMBER_NAMESPACE: u32 = 1;
/// md keeps at most 32 bytes of an array's name.
const MD_NAME_BYTES_MAX: usize = 32;

/// The md name of `system`'s mirror at `target` ("nas-1:srv_projects", cut to md's limit).
pub fn mirror_name(system: &str, target: &str) -> String {
    let target = target.trim_start_matches('/').replace('/', "_");
    let mut name = format!("{system}:{target}");
    while name.len() > MD_NAME_BYTES_MAX {
        name.pop();
    }
    name
}

fn failure(target: &str, step: &str, error: &drivers::volume::VolumeError) -> Failure {
    Failure::Volume {
        target: target.to_string(),
        step: step.to_string(),
        reason: drivers::error_chain(error),
    }
}

/// The PCI address of `device` of `system`, when the device is in its slot.
fn address_of(
    drivers: &Drivers,
    state: &State,
    system: &System,
    device: &DeviceId,
) -> Option<drivers::PciAddress> {
    let attachment = system.devices.get(device)?;
    let slot = state.ports.get(&attachment.port)?.slot;
    drivers
        .host
        .wait_for_device(slot, Duration::ZERO)
        .ok()
        .map(|seen| seen.address)
}

/// The block device of the filesystem `uuid` behind `hba` of `system`.
fn disk_path(
    drivers: &Drivers,
    state: &State,
    system: &System,
    (hba, uuid, target): (&DeviceId, &str, &str),
    timeout: Duration,
) -> Result<PathBuf, Failure> {
    let address = address_of(drivers, state, system, hba).ok_or_else(|| Failure::Volume {
        target: target.to_string(),
        step: "find the filesystem".into(),
        reason: format!("{hba} is not in its slot"),
    })?;
    drivers
        .volumes
        .filesystem_behind(address, uuid, timeout)
        .map_err(|e| failure(target, "find the filesystem", &e))
}

/// The block device of `device`'s namespace, when the device is in its slot (waiting up to
/// `timeout` for the kernel to show the namespace).
fn member_path(
    drivers: &Drivers,
    state: &State,
    system: &System,
    device: &DeviceId,
    timeout: Duration,
) -> Result<Option<PathBuf>, Failure> {
    let Some(address) = address_of(drivers, state, system, device) else {
        return Ok(None);
    };
    drivers
        .volumes
        .namespace(address, MEMBER_NAMESPACE, timeout)
        .map(Some)
        .map_err(|e| Failure::Volume {
            target: device.to_string(),
            step: "find the drive's namespace".into(),
            reason: drivers::error_chain(&e),
        })
}

/// The paths of the members in their slots.
fn present_members(
    drivers: &Drivers,
    state: &State,
    system: &System,
    devices: &[DeviceId],
) -> Vec<PathBuf> {
    devices
        .iter()
        .filter_map(|d| {
            member_path(drivers, state, system, d, Duration::ZERO)
                .ok()
                .flatten()
        })
        .collect()
}

/// The running array over any of `members`, else one started from them.
fn array_of(
    drivers: &Drivers,
    name: &str,
    target: &str,
    members: &[PathBuf],
) -> Result<PathBuf, Failure> {
    for member in members {
        if let Some(status) = drivers
            .volumes
            .mirror_of(member)
            .map_err(|e| failure(target, "read the mirror", &e))?
        {
            return Ok(status.device);
        }
    }
    drivers
        .volumes
        .start_mirror(name, members)
        .map_err(|e| failure(target, "start the mirror", &e))
}

/// How a mount waits for its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A mount operation: every drive of a mirror, waiting for the kernel within the limits.
    Patient,
    /// A restore: what is in its slot now (a mirror assembled degraded); nothing waited for.
    Now,
}

/// Mounts a mount of this server (a mirror or a disk) at its target: the mirror over its drives
/// (formatted when blank) or the filesystem behind its HBA (never formatted). Ok(false) when a
/// restore finds none of a mirror's drives in its slot; a namespace or an export is the
/// system's own business (Ok(true), nothing done).
fn mount_here(
    drivers: &Drivers,
    state: &State,
    system: &System,
    source: &MountSource,
    spec: (&str, &str, &str),
    wait: Wait,
) -> Result<bool, Failure> {
    let (target, filesystem, options) = spec;
    let limit = |ms| match wait {
        Wait::Patient => Duration::from_millis(ms),
        Wait::Now => Duration::ZERO,
    };
    let (device, format_blank) = match source {
        MountSource::Mirror { devices } => {
            let members = match wait {
                Wait::Patient => {
                    let timeout = limit(drivers.limits.bind_timeout_ms);
                    let mut members = Vec::new();
                    for device in devices {
                        let path = member_path(drivers, state, system, device, timeout)?;
                        members.push(path.ok_or_else(|| {
                            Failure::NotInSlot {
                                device: device.clone(),
                                slot: system
                                    .devices
                                    .get(device)
                                    .and_then(|a| state.ports.get(&a.port))
                                    .map_or(0, |p| p.slot),
                                reason: "a mirror is made over drives in their slots".into(),
                            }
                        })?);
                    }
                    members
                }
                Wait::Now => present_members(drivers, state, system, devices),
            };
            if members.is_empty() {
                return Ok(false);
            }
            let name = mirror_name(&system.name, target);
            (array_of(drivers, &name, target, &members)?, true)
        }
        MountSource::Disk { hba, uuid } => {
            let timeout = limit(drivers.limits.attach_timeout_ms);
            let path = disk_path(drivers, state, system, (hba, uuid, target), timeout)?;
            (path, false)
        }
        MountSource::Namespace { .. } | MountSource::Export { .. } => return Ok(true),
    };
    drivers
        .volumes
        .mount(
            &device,
            Path::new(target),
            filesystem,
            options,
            format_blank,
        )
        .map_err(|e| failure(target, "mount", &e))?;
    info!(system = %system.name, target, device = %device.display(), "mounted on this server");
    Ok(true)
}

/// Makes a mount of this server: the mirror over every one of its drives, or the filesystem
/// behind its HBA, mounted at its target.
pub(super) fn mount(
    drivers: &Drivers,
    state: &State,
    system: &str,
    source: &MountSource,
    spec: (&str, &str, &str),
) -> Result<(), Failure> {
    let system = state
        .systems
        .get(system)
        .ok_or_else(|| Failure::Inconsistent {
            what: format!("system {system}"),
        })?;
    mount_here(drivers, state, system, source, spec, Wait::Patient).map(|_| ())
}

/// Unmounts `target` (a mount of this server) and stops its mirror, if it is one.
pub(super) fn unmount(
    drivers: &Drivers,
    state: &State,
    system: &str,
    target: &str,
) -> Result<(), Failure> {
    let Some(system) = state.systems.get(system) else {
        return Ok(());
    };
    let Some(mount) = system.mounts.get(target).filter(|m| m.source.is_local()) else {
        return Ok(());
    };
    drivers
        .volumes
        .unmount(Path::new(target), false)
        .map_err(|e| failure(target, "unmount", &e))?;
    let MountSource::Mirror { devices } = &mount.source else {
        return Ok(());
    };
    for member in present_members(drivers, state, system, devices) {
        if let Ok(Some(status)) = drivers.volumes.mirror_of(&member) {
            drivers
                .volumes
                .stop_mirror(&status.device)
                .map_err(|e| failure(target, "stop the mirror", &e))?;
            break;
        }
    }
    Ok(())
}

/// In a failover of `from` to `to` (attached and bound): every mirror of `system` on `from`
/// fails it out and takes `to` in its place (md rebuilds onto `to` with the filesystem
/// mounted); every disk mount behind `from` (an HBA) is mounted again from behind `to`, the
/// standby HBA that reaches the same disks. Idempotent: an old member already out is not
/// failed again, a new one already in not added, a mount already made not made again.
pub(super) fn move_mounts(
    drivers: &Drivers,
    state: &State,
    system: &str,
    from: &DeviceId,
    to: &DeviceId,
) -> Result<(), Failure> {
    let Some(system) = state.systems.get(system) else {
        return Ok(());
    };
    for mount in system.mounts.values() {
        if let MountSource::Disk { hba, uuid } = &mount.source {
            if hba == from {
                remount(drivers, state, system, mount, (to, uuid))?;
            }
            continue;
        }
        let MountSource::Mirror { devices } = &mount.source else {
            continue;
        };
        if !devices.contains(from) {
            continue;
        }
        let target = mount.target.as_str();
        let timeout = Duration::from_millis(drivers.limits.bind_timeout_ms);
        let new = member_path(drivers, state, system, to, timeout)?.ok_or_else(|| {
            Failure::Inconsistent {
                what: format!("{to} in its slot"),
            }
        })?;
        let old = member_path(drivers, state, system, from, Duration::ZERO)?;
        let others: Vec<DeviceId> = devices.iter().filter(|d| *d != from).cloned().collect();
        let survivors = present_members(drivers, state, system, &others);
        if survivors.is_empty() {
            return Err(Failure::Volume {
                target: target.to_string(),
                step: "replace a member".into(),
                reason: format!("no other drive of the mirror ({others:?}) is in its slot"),
            });
        }
        let mut known = survivors.clone();
        known.push(new.clone());
        let array = array_of(drivers, &mirror_name(&system.name, target), target, &known)?;
        drivers
            .volumes
            .remove_member(&array, old.as_deref())
            .map_err(|e| failure(target, "fail the old member out", &e))?;
        drivers
            .volumes
            .add_member(&array, &new)
            .map_err(|e| failure(target, "add the new member", &e))?;
        info!(system = %system.name, target, %from, %to, array = %array.display(), "mirror member replaced; md rebuilds");
    }
    Ok(())
}

/// A disk mount moved to the standby HBA `to`: the old mount (its disks gone with the failed
/// HBA) leaves lazily, the filesystem is found by its UUID behind `to` and mounted again.
fn remount(
    drivers: &Drivers,
    state: &State,
    system: &System,
    mount: &Mount,
    (to, uuid): (&DeviceId, &str),
) -> Result<(), Failure> {
    let target = mount.target.as_str();
    let timeout = Duration::from_millis(drivers.limits.attach_timeout_ms);
    let device = disk_path(drivers, state, system, (to, uuid, target), timeout)?;
    let source = device.to_string_lossy().into_owned();
    let mounted = drivers
        .volumes
        .mounted(Path::new(target))
        .map_err(|e| failure(target, "read mountinfo", &e))?;
    if mounted.as_deref() != Some(source.as_str()) {
        drivers
            .volumes
            .unmount(Path::new(target), true)
            .map_err(|e| failure(target, "unmount the old disk", &e))?;
    }
    drivers
        .volumes
        .mount(
            &device,
            Path::new(target),
            &mount.filesystem,
            &mount.options,
            false,
        )
        .map_err(|e| failure(target, "mount from the standby HBA", &e))?;
    info!(system = %system.name, target, %to, device = %source, "mounted again from the standby HBA");
    Ok(())
}

/// Assembles and mounts again every mirror and disk State says is mounted and this server does
/// not show mounted (after a reboot); a system with an operation in flight is left to it.
pub fn restore(drivers: &Drivers, state: &State) {
    for system in state.systems.values().filter(|s| s.pending.is_none()) {
        for mount in system.mounts.values() {
            if mount.state != MountState::Mounted || !mount.source.is_local() {
                continue;
            }
            if matches!(
                drivers.volumes.mounted(Path::new(&mount.target)),
                Ok(Some(_))
            ) {
                continue;
            }
            let spec = (
                mount.target.as_str(),
                mount.filesystem.as_str(),
                mount.options.as_str(),
            );
            match mount_here(drivers, state, system, &mount.source, spec, Wait::Now) {
                Ok(true) => info!(system = %system.name, target = %mount.target, "mounted again"),
                Ok(false) => {}
                Err(e) => {
                    warn!(system = %system.name, target = %mount.target, error = %e, "not mounted again; tried again at the next sync")
                }
            }
        }
    }
}

/// Unmounts and stops every mirror State says is mounted (the service stopping: the next start
/// assembles and mounts them again from their superblocks, with no resync).
pub fn release(drivers: &Drivers, state: &State) {
    for system in state.systems.values() {
        for mount in system.mounts.values() {
            if !mount.source.is_local() {
                continue;
            }
            match unmount(drivers, state, &system.name, &mount.target) {
                Ok(()) => info!(system = %system.name, target = %mount.target, "mirror put away"),
                Err(e) => {
                    warn!(system = %system.name, target = %mount.target, error = %e, "mirror not put away")
                }
            }
        }
    }
}

/// What md and mountinfo say of every mirror State says is mounted, where it differs from the
/// condition State last recorded.
pub fn conditions(drivers: &Drivers, state: &State) -> Vec<Observation> {
    let mut seen = Vec::new();
    for system in state.systems.values() {
        for mount in system.mounts.values() {
            if mount.state != MountState::Mounted || !mount.source.is_local() {
                continue;
            }
            let (condition, evidence) = condition_of(drivers, state, system, mount);
            if mount.condition != Some(condition) {
                seen.push(Observation::Mount {
                    system: system.name.clone(),
                    target: mount.target.clone(),
                    condition,
                    evidence,
                });
            }
        }
    }
    seen
}

/// The drives md has failed out of a mirror State says is mounted (md does so on a member's
/// I/O errors: the media errors a gateway's writes meet), as observations that the drive has
/// failed, with md's word for it. Skipped: a system with an operation in flight (a failover
/// fails its old member out itself), and a drive already failed.
pub fn member_faults(drivers: &Drivers, state: &State, at_ms: u64) -> Vec<Observation> {
    let mut seen = Vec::new();
    for system in state.systems.values().filter(|s| s.pending.is_none()) {
        for mount in system.mounts.values() {
            let MountSource::Mirror { devices } = &mount.source else {
                continue;
            };
            if mount.state != MountState::Mounted {
                continue;
            }
            for device in devices {
                let failed = (state.devices.get(device)).is_none_or(|d| !d.health.is_ok());
                if failed {
                    continue;
                }
                let Ok(Some(path)) = member_path(drivers, state, system, device, Duration::ZERO)
                else {
                    continue;
                };
                let Ok(Some(status)) = drivers.volumes.mirror_of(&path) else {
                    continue;
                };
                let Some(member) = status.members.iter().find(|m| m.device == path) else {
                    continue;
                };
                if member.state.contains("faulty") {
                    seen.push(Observation::Health {
                        device: device.clone(),
                        health: Health::Failed("md failed it out of the mirror".into()),
                        evidence: format!(
                            "md {} member {} of {}: state={}",
                            status.device.display(),
                            path.display(),
                            mount.target,
                            member.state
                        ),
                        at_ms,
                    });
                }
            }
        }
    }
    seen
}

fn condition_of(
    drivers: &Drivers,
    state: &State,
    system: &System,
    mount: &Mount,
) -> (MountCondition, String) {
    let target = Path::new(&mount.target);
    let source = match drivers.volumes.mounted(target) {
        Ok(Some(source)) => source,
        Ok(None) => {
            return (
                MountCondition::Unmounted,
                format!("mountinfo shows nothing at {}", mount.target),
            )
        }
        Err(e) => {
            return (
                MountCondition::Unmounted,
                format!("mountinfo unreadable: {}", drivers::error_chain(&e)),
            )
        }
    };
    let MountSource::Mirror { devices } = &mount.source else {
        return (
            MountCondition::Clean,
            format!("mountinfo: {} mounted from {source}", mount.target),
        );
    };
    let status = present_members(drivers, state, system, devices)
        .iter()
        .find_map(|m| drivers.volumes.mirror_of(m).ok().flatten());
    let Some(status) = status else {
        return (
            MountCondition::Degraded,
            format!(
                "{} mounted from {source}, but md holds none of its drives",
                mount.target
            ),
        );
    };
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| format!("{}={}", m.device.display(), m.state))
        .collect();
    let mut evidence = format!(
        "{} mounted from {source}; md {}: degraded={} sync_action={} members [{}]",
        mount.target,
        status.device.display(),
        status.degraded,
        status.sync_action,
        members.join(" ")
    );
    if let Some((done, total)) = status.sync_completed {
        evidence.push_str(&format!(" sync {done}/{total}"));
    }
    let condition = if status.clean() {
        MountCondition::Clean
    } else if matches!(status.sync_action.as_str(), "recover" | "resync" | "repair") {
        MountCondition::Rebuilding
    } else {
        MountCondition::Degraded
    };
    (condition, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_name_fits_md() {
        assert_eq!(mirror_name("nas-1", "/srv/projects"), "nas-1:srv_projects");
        let long = mirror_name("a-very-long-gateway-name", "/srv/projects/2026");
        assert_eq!(long.len(), MD_NAME_BYTES_MAX);
        assert!(long.starts_with("a-very-long-gateway-name:srv"));
    }
}
