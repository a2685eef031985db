//! End-to-end, the NAS gateway's storage on the real kernel: a gateway composes two NVMe
//! drives and mounts a RAID1 mirror over them (md, made by the appliance with the image's mdadm,
//! ext4 put on it, mounted on the appliance itself). Files with known sha256 are written into
//! the mirror while the appliance is off (debugfs on both drives' images: md's 1.0 metadata
//! keeps the filesystem at a member's first byte); after the next boot the appliance assembles
//! and mounts the mirror again on its own. Then one member gets a SMART critical warning: the
//! appliance fails it out of the array, composes the spare, adds it and md rebuilds onto it
//! while the filesystem stays mounted (mountinfo is read at every sweep and any other condition
//! than mounted would be journaled). After the rebuild, the spare's image alone holds the files,
//! with the same sums. A second test does the same for the gateway's disk behind an HBA: the HBA
//! pulled, the standby HBA mounts the filesystem again.
//!
//! Not here: a mirror member pulled from its slot. Removing the pulled member from the array
//! drops the last reference to its controller, and the guest's Linux 6.1 nvme driver then faults
//! in `nvme_dbbuf_dma_free` (an oops in mdadm's ioctl, seen when this test pulled one).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use appliance::api::client::Client;
use appliance::api::views::{MountSourceView, MountView, OperationState, SystemView};
use appliance::api::{HistoryOf, Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::model::{MountSource, MountSpec, Role};
use tests::{
    api, boot, call, one_vm_at_a_time, options, power_off, tail, wait_until, BOOT_TIMEOUT_MS,
};

const GATEWAY: &str = "nas-1";
const TARGET: &str = "/srv/projects";
/// Small drives, so that md's rebuild under TCG takes seconds.
const DRIVE_BYTES: u64 = 256 << 20;

/// The sample fabric with 256 MiB drives and a third one, the spare.
fn topology() -> Result<qemu::BenchTopology> {
    let text = qemu::topology::SAMPLE.replace(
        "capacity_bytes = 1073741824",
        &format!("capacity_bytes = {DRIVE_BYTES}"),
    );
    let spare = format!(
        r#"
[[device]]
id = "nvme-2"
class = 0x010802
serial = "POOLNVME0002"
model = "QEMU NVMe Ctrl"
capacity_bytes = {DRIVE_BYTES}
switch = "sw0"
"#
    );
    Ok(qemu::BenchTopology::parse(
        &format!("{text}{spare}"),
        "the sample with small drives and a spare",
    )?)
}

fn gateway(client: &Client) -> Result<SystemView> {
    match call(
        client,
        &Request::query(Query::System {
            name: GATEWAY.into(),
        }),
    )? {
        Reply::System(system) => Ok(system),
        other => bail!("system {GATEWAY}: {other:?}"),
    }
}

fn mirror(client: &Client) -> Result<MountView> {
    gateway(client)?
        .mounts
        .into_iter()
        .find(|m| m.target == TARGET)
        .with_context(|| format!("{GATEWAY} has no mount at {TARGET}"))
}

/// Waits until the mirror's journaled condition is `wanted`, the gateway idle.
fn condition(vm: &qemu::Vm, client: &Client, wanted: &str) -> Result<MountView> {
    wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        &format!("the mirror {wanted}"),
        || {
            let mount = mirror(client)?;
            let idle = gateway(client)?.pending.is_none();
            Ok((idle && mount.condition.as_deref() == Some(wanted)).then_some(mount))
        },
    )
    .with_context(|| {
        let of = HistoryOf::System(GATEWAY.into());
        let history = call(client, &Request::query(Query::History { of, limit: None }));
        format!("{GATEWAY}'s history: {history:?}\nconsole:\n{}", tail(vm))
    })
}

fn order_waited(client: &Client, verb: Verb) -> Result<()> {
    let meta = Meta {
        wait: true,
        ..Meta::default()
    };
    let what = format!("{verb:?}");
    let Reply::Accepted(accepted) = call(client, &Request::order(verb, meta))? else {
        bail!("{what} was not accepted")
    };
    let state = accepted.operation.as_ref().map(|o| o.state);
    ensure!(
        state.is_none() || state == Some(OperationState::Completed),
        "{what}: {:?}",
        accepted.operation
    );
    Ok(())
}

/// The tenant "studio" and its gateway holding `devices`.
fn create_gateway(client: &Client, devices: &[&str]) -> Result<()> {
    call(
        client,
        &Request::order(
            Verb::CreateTenant {
                name: "studio".into(),
            },
            Meta::default(),
        ),
    )?;
    order_waited(
        client,
        Verb::Compose {
            system: GATEWAY.into(),
            selection: Selection::Specific(devices.iter().map(|d| (*d).into()).collect()),
            create: Some(NewSystem {
                tenant: "studio".into(),
                role: Role::NasGateway,
            }),
            tenant: None,
            reservation: None,
        },
    )
}

/// The test's files: name and content (a few sizes, none all zeros).
fn files() -> Vec<(String, Vec<u8>)> {
    [
        ("edit.mov", 3 << 20),
        ("shot-010.exr", 200_000),
        ("notes.txt", 1_000),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, len))| {
        let mut state = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
        let bytes = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        (name.to_string(), bytes)
    })
    .collect()
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("run sha256sum")?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn debugfs(image: &Path, write: bool, request: &str) -> Result<String> {
    let mut command = Command::new("debugfs");
    if write {
        command.arg("-w");
    }
    let out = command
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .context("run debugfs (e2fsprogs)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !stderr.contains("rror"),
        "debugfs {request:?} on {}: {stderr}",
        image.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes the files into the filesystem of each member's image; returns their sums.
fn write_files(members: &[&Path], scratch: &Path) -> Result<Vec<(String, String)>> {
    std::fs::create_dir_all(scratch)?;
    let mut sums = Vec::new();
    for (name, bytes) in files() {
        let local = scratch.join(&name);
        std::fs::write(&local, &bytes)?;
        for image in members {
            debugfs(image, true, &format!("write {} {name}", local.display()))?;
        }
        sums.push((name, sha256(&local)?));
    }
    Ok(sums)
}

/// Reads the files back from one member's image and compares their sums.
fn check_files(image: &Path, scratch: &Path, sums: &[(String, String)]) -> Result<()> {
    std::fs::create_dir_all(scratch)?;
    for (name, sum) in sums {
        let local = scratch.join(name);
        debugfs(image, false, &format!("dump {name} {}", local.display()))?;
        let read = sha256(&local)?;
        ensure!(
            read == *sum,
            "{name} read back from {} has sha256 {read}, written {sum}",
            image.display()
        );
    }
    Ok(())
}

#[test]
fn a_gateway_mirror_survives_a_failing_drive_with_its_files() -> Result<()> {
    let _one = one_vm_at_a_time();
    let mut options = options("gateway")?;
    options.topology = topology()?;
    let run_dir = options.run_dir.clone();
    let paths = qemu::RunPaths::new(&run_dir);
    let first = boot(options.clone())?;
    let client = api(&first.vm)?;
    create_gateway(&client, &["nvme-0", "nvme-1"])?;
    let made = Instant::now();
    order_waited(
        &client,
        Verb::Mount {
            system: GATEWAY.into(),
            mount: MountSpec {
                source: MountSource::Mirror {
                    devices: vec!["nvme-0".into(), "nvme-1".into()],
                },
                target: TARGET.into(),
                filesystem: "ext4".into(),
                options: "defaults".into(),
            },
        },
    )
    .with_context(|| tail(&first.vm))?;
    println!(
        "mirror made, formatted and mounted: {} ms",
        made.elapsed().as_millis()
    );
    condition(&first.vm, &client, "clean")?;
    drop(client);
    power_off(first.vm)?;

    // The studio's files, written into the mirror while the appliance is off.
    let members = [paths.pool_disk("nvme-0"), paths.pool_disk("nvme-1")];
    let sums = write_files(
        &[members[0].as_path(), members[1].as_path()],
        &run_dir.join("written"),
    )?;

    let second = boot(options)?;
    let client = api(&second.vm)?;
    let mount = condition(&second.vm, &client, "clean")
        .context("after a reboot the appliance assembles and mounts the mirror again")?;
    ensure!(mount.state == "mounted", "{mount:?}");

    let Reply::Status(status) = call(&client, &Request::query(Query::Status))? else {
        bail!("status")
    };
    let before_fault = status.journal_head;
    let injected = Instant::now();
    second
        .vm
        .fabric()
        .set_smart_critical_warning("nvme-0", 0x04)?;
    let moved = wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        "the mirror moved off nvme-0",
        || {
            let mount = mirror(&client)?;
            let MountSourceView::Mirror { devices } = &mount.source else {
                bail!("not a mirror: {mount:?}")
            };
            let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
            let idle = gateway(&client)?.pending.is_none();
            Ok((idle && !devices.contains(&"nvme-0".to_string())).then_some(devices))
        },
    )
    .with_context(|| tail(&second.vm))?;
    println!(
        "SMART warning to the spare in the mirror: {} ms",
        injected.elapsed().as_millis()
    );
    ensure!(
        moved == ["nvme-2", "nvme-1"] || moved == ["nvme-1", "nvme-2"],
        "the mirror keeps nvme-1 and takes the spare: {moved:?}"
    );
    condition(&second.vm, &client, "clean").context("md finishes its rebuild")?;
    println!(
        "SMART warning to the mirror clean again: {} ms",
        injected.elapsed().as_millis()
    );
    // Every condition the sweep journaled since the fault: the mount was never lost.
    let of = HistoryOf::System(GATEWAY.into());
    let Reply::History(history) =
        call(&client, &Request::query(Query::History { of, limit: None }))?
    else {
        bail!("history")
    };
    let observed: Vec<&str> = history
        .iter()
        .filter(|e| e.kind == "mount_observed" && e.sequence > before_fault)
        .map(|e| e.summary.as_str())
        .collect();
    ensure!(
        observed.iter().all(|s| !s.contains(" is unmounted")),
        "the filesystem stayed mounted: {observed:?}"
    );
    ensure!(
        observed.iter().any(|s| s.contains("nvme2n1")),
        "md took the spare's namespace: {observed:?}"
    );
    drop(client);
    power_off(second.vm)?;

    // The spare alone holds the files md copied onto it.
    check_files(&paths.pool_disk("nvme-2"), &run_dir.join("read"), &sums)
}

/// The filesystem's UUID on the shelf disk (given to mke2fs, so the test knows it).
const SHELF_UUID: &str = "5e1f0a7c-2b4d-4c8e-9a61-0d3b7f2e8c15";
const MEDIA: &str = "/srv/media";

/// Two HBAs (the bench's virtio-scsi-pci) reaching the same shelf disk, a dual-ported shelf.
fn shelf_topology() -> Result<qemu::BenchTopology> {
    let hbas: String = (0..2)
        .map(|i| {
            format!(
                r#"
[[device]]
id = "hba-{i}"
class = 0x010000
serial = "POOLHBA000{i}"
model = "virtio-scsi"
switch = "sw0"
disks = ["shelf-0"]
"#
            )
        })
        .collect();
    let text = format!(
        "{}{hbas}\n[[disk]]\nid = \"shelf-0\"\ncapacity_bytes = {}\n",
        qemu::topology::SAMPLE,
        64 << 20
    );
    Ok(qemu::BenchTopology::parse(
        &text,
        "the sample with two HBAs on one shelf",
    )?)
}

/// The studio's disk: ext4 with the test's files and a known UUID, made on the host.
fn make_shelf_disk(image: &Path, scratch: &Path) -> Result<Vec<(String, String)>> {
    std::fs::create_dir_all(scratch)?;
    let mut sums = Vec::new();
    for (name, bytes) in files() {
        let local = scratch.join(&name);
        std::fs::write(&local, &bytes)?;
        sums.push((name, sha256(&local)?));
    }
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-U", SHELF_UUID, "-d"])
        .arg(scratch)
        .arg(image)
        .arg("64M")
        .output()
        .context("run mke2fs (e2fsprogs)")?;
    ensure!(
        out.status.success(),
        "mke2fs {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(sums)
}

/// Waits until the gateway is idle with its disk mount on `hba` and journaled clean.
fn wait_mounted_from(client: &Client, hba: &str, what: &str) -> Result<()> {
    wait_until(Duration::from_millis(BOOT_TIMEOUT_MS), what, || {
        let system = gateway(client)?;
        let Some(mount) = system.mounts.into_iter().find(|m| m.target == MEDIA) else {
            bail!("{GATEWAY} has no mount at {MEDIA}")
        };
        let MountSourceView::Disk { hba: on, .. } = &mount.source else {
            bail!("not a disk mount: {mount:?}")
        };
        let clean = mount.condition.as_deref() == Some("clean");
        Ok((system.pending.is_none() && on.as_str() == hba && clean).then_some(()))
    })
}

/// The gateway's HBA is pulled from its slot: the appliance composes the standby HBA, the
/// bench puts the same shelf disk behind it, and the appliance finds the filesystem by its UUID
/// and mounts it again; after a reboot it is mounted again from the standby; the shelf's files
/// are intact and the filesystem is consistent (e2fsck).
#[test]
fn a_gateway_disk_comes_back_through_the_standby_hba() -> Result<()> {
    let _one = one_vm_at_a_time();
    let mut options = options("gateway_hba")?;
    options.topology = shelf_topology()?;
    let run_dir = options.run_dir.clone();
    let paths = qemu::RunPaths::new(&run_dir);
    std::fs::create_dir_all(&paths.pool)?;
    let shelf = paths.pool_disk("shelf-0");
    let sums = make_shelf_disk(&shelf, &run_dir.join("written"))?;
    let booted = boot(options.clone())?;
    let client = api(&booted.vm)?;
    create_gateway(&client, &["hba-0"]).with_context(|| tail(&booted.vm))?;
    order_waited(
        &client,
        Verb::Mount {
            system: GATEWAY.into(),
            mount: MountSpec {
                source: MountSource::Disk {
                    hba: "hba-0".into(),
                    uuid: SHELF_UUID.into(),
                },
                target: MEDIA.into(),
                filesystem: "ext4".into(),
                options: String::new(),
            },
        },
    )
    .with_context(|| tail(&booted.vm))?;
    wait_mounted_from(&client, "hba-0", "the disk mounted from hba-0")
        .with_context(|| tail(&booted.vm))?;

    let pulled = Instant::now();
    booted.vm.fabric().surprise_remove("hba-0")?;
    wait_mounted_from(
        &client,
        "hba-1",
        "the disk mounted again from the standby hba-1",
    )
    .with_context(|| {
        let of = HistoryOf::System(GATEWAY.into());
        let history = call(&client, &Request::query(Query::History { of, limit: None }));
        format!(
            "{GATEWAY}'s history: {history:?}\nconsole:\n{}",
            tail(&booted.vm)
        )
    })?;
    println!(
        "HBA pulled to the filesystem mounted again from the standby: {} ms",
        pulled.elapsed().as_millis()
    );
    ensure!(
        gateway(&client)?
            .devices
            .iter()
            .map(|d| d.id.to_string())
            .collect::<Vec<_>>()
            == ["hba-1"],
        "the gateway holds the standby HBA"
    );
    drop(client);
    power_off(booted.vm)?;

    let second = boot(options)?;
    let client = api(&second.vm)?;
    wait_mounted_from(&client, "hba-1", "the disk mounted again after the reboot")
        .with_context(|| tail(&second.vm))?;
    drop(client);
    power_off(second.vm)?;

    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&shelf)
        .output()
        .context("run e2fsck (e2fsprogs)")?;
    ensure!(
        fsck.status.success(),
        "e2fsck -f -n {}: {}{}",
        shelf.display(),
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    check_files(&shelf, &run_dir.join("read"), &sums)
}
