//! Volumes in memory, for the simulated fabric: mirrors and mounts are records, nothing on this
//! machine is touched (so `serve --fabric sim` can run on a workstation). A member added to a
//! mirror is in sync at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use drivers::volume::{MirrorMember, MirrorStatus, VolumeError, Volumes};
use drivers::PciAddress;

/// The block device of namespace `namespace` of the simulated NVMe drive at `address`.
pub fn namespace_path(address: PciAddress, namespace: u32) -> PathBuf {
    PathBuf::from(format!("/dev/sim-nvme-{:02x}n{namespace}", address.bus))
}

#[derive(Debug, Default)]
struct Inner {
    /// Array device -> members and their md state.
    arrays: BTreeMap<PathBuf, Vec<MirrorMember>>,
    /// Target -> source.
    mounts: BTreeMap<PathBuf, String>,
    /// Steps that fail from now on ("mount", "add_member", ...), for the tests' faults.
    refusing: Vec<&'static str>,
}

/// [`Volumes`] as records.
#[derive(Debug, Default)]
pub struct SimVolumes {
    inner: Mutex<Inner>,
}

impl SimVolumes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `step` ("start_mirror", "add_member", "mount", ...) fail from now on.
    pub fn refuse(&self, step: &'static str) {
        self.lock().refusing.push(step);
    }

    /// The members of the mirror holding `member`, if one does.
    pub fn members_with(&self, member: &Path) -> Option<Vec<PathBuf>> {
        let inner = self.lock();
        let array = SimVolumes::array_holding(&inner, member)?;
        Some(
            inner.arrays[&array]
                .iter()
                .map(|m| m.device.clone())
                .collect(),
        )
    }

    /// Every mirror's members, by array.
    pub fn members(&self) -> Vec<PathBuf> {
        let inner = self.lock();
        inner
            .arrays
            .values()
            .flatten()
            .map(|m| m.device.clone())
            .collect()
    }

    /// md fails `member` out of its mirror, as it does on the member's I/O errors (its state
    /// becomes faulty, the array degraded); false when no mirror holds it.
    pub fn fail_member(&self, member: &Path) -> bool {
        let mut inner = self.lock();
        let Some(array) = SimVolumes::array_holding(&inner, member) else {
            return false;
        };
        for m in inner.arrays.get_mut(&array).into_iter().flatten() {
            if m.device == member {
                m.state = "faulty".into();
            }
        }
        true
    }

    /// What is mounted, target -> source.
    pub fn mounts(&self) -> BTreeMap<PathBuf, String> {
        self.lock().mounts.clone()
    }

    fn check(&self, step: &'static str) -> Result<std::sync::MutexGuard<'_, Inner>, VolumeError> {
        let inner = self.lock();
        if inner.refusing.contains(&step) {
            return Err(VolumeError::Mdadm {
                command: format!("simulated {step}"),
                status: "exit status: 1".into(),
                stderr: format!("{step} refused by the test"),
            });
        }
        Ok(inner)
    }

    fn array_holding(inner: &Inner, member: &Path) -> Option<PathBuf> {
        inner
            .arrays
            .iter()
            .find(|(_, members)| members.iter().any(|m| m.device == member))
            .map(|(array, _)| array.clone())
    }

    fn no_array(array: &Path) -> VolumeError {
        VolumeError::NoArray {
            device: array.display().to_string(),
        }
    }

    fn members_mut<'a>(
        inner: &'a mut Inner,
        array: &Path,
    ) -> Result<&'a mut Vec<MirrorMember>, VolumeError> {
        inner
            .arrays
            .get_mut(array)
            .ok_or_else(|| SimVolumes::no_array(array))
    }

    fn status(inner: &Inner, array: &Path) -> Result<MirrorStatus, VolumeError> {
        let members = inner
            .arrays
            .get(array)
            .ok_or_else(|| SimVolumes::no_array(array))?;
        Ok(MirrorStatus {
            device: array.to_path_buf(),
            members: members.clone(),
            degraded: members.iter().filter(|m| m.lost()).count() as u32,
            sync_action: "idle".into(),
            sync_completed: None,
        })
    }
}

impl Volumes for SimVolumes {
    fn namespace(
        &self,
        address: PciAddress,
        namespace: u32,
        _timeout: Duration,
    ) -> Result<PathBuf, VolumeError> {
        Ok(namespace_path(address, namespace))
    }

    fn start_mirror(&self, _name: &str, members: &[PathBuf]) -> Result<PathBuf, VolumeError> {
        let mut inner = self.check("start_mirror")?;
        if let Some(array) = members
            .iter()
            .find_map(|m| SimVolumes::array_holding(&inner, m))
        {
            return Ok(array);
        }
        let array = PathBuf::from(format!("/dev/md{}", 127 - inner.arrays.len()));
        let members = members
            .iter()
            .map(|device| MirrorMember {
                device: device.clone(),
                state: "in_sync".into(),
                number: Some(device.display().to_string()),
            })
            .collect();
        inner.arrays.insert(array.clone(), members);
        Ok(array)
    }

    fn mirror_of(&self, member: &Path) -> Result<Option<MirrorStatus>, VolumeError> {
        let inner = self.lock();
        match SimVolumes::array_holding(&inner, member) {
            Some(array) => SimVolumes::status(&inner, &array).map(Some),
            None => Ok(None),
        }
    }

    fn mirror(&self, array: &Path) -> Result<MirrorStatus, VolumeError> {
        SimVolumes::status(&self.lock(), array)
    }

    fn remove_member(&self, array: &Path, member: Option<&Path>) -> Result<(), VolumeError> {
        let mut inner = self.check("remove_member")?;
        let members = SimVolumes::members_mut(&mut inner, array)?;
        members.retain(|m| Some(m.device.as_path()) != member);
        Ok(())
    }

    fn add_member(&self, array: &Path, member: &Path) -> Result<(), VolumeError> {
        let mut inner = self.check("add_member")?;
        let members = SimVolumes::members_mut(&mut inner, array)?;
        if !members.iter().any(|m| m.device == member) {
            members.push(MirrorMember {
                device: member.to_path_buf(),
                state: "in_sync".into(),
                number: Some(member.display().to_string()),
            });
        }
        Ok(())
    }

    fn filesystem_behind(
        &self,
        address: PciAddress,
        uuid: &str,
        _timeout: Duration,
    ) -> Result<PathBuf, VolumeError> {
        drop(self.check("filesystem_behind")?);
        Ok(PathBuf::from(format!(
            "/dev/sim-disk-{:02x}-{uuid}",
            address.bus
        )))
    }

    fn mount(
        &self,
        device: &Path,
        target: &Path,
        _filesystem: &str,
        _options: &str,
        _format_blank: bool,
    ) -> Result<(), VolumeError> {
        self.check("mount")?
            .mounts
            .insert(target.to_path_buf(), device.display().to_string());
        Ok(())
    }

    fn unmount(&self, target: &Path, _detach: bool) -> Result<(), VolumeError> {
        self.lock().mounts.remove(target);
        Ok(())
    }

    fn mounted(&self, target: &Path) -> Result<Option<String>, VolumeError> {
        Ok(self.lock().mounts.get(target).cloned())
    }

    fn stop_mirror(&self, array: &Path) -> Result<(), VolumeError> {
        self.lock().arrays.remove(array);
        Ok(())
    }
}
