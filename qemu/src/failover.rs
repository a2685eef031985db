//! The bench's failover figures: a system holding one NVMe drive, a pool of spares, and faults
//! injected one after the other; each fault is answered by the appliance on its own (an alarm,
//! then a failover to a spare). What is timed, and by which clock:
//! - SMART (`qom-set smart_critical_warning`): detect = from the `qom-set` to the alarm being
//!   readable through the API (polled every 20 ms, so one API round trip is included); recover =
//!   from the `qom-set` to the system holding the spare with no operation in flight. Host clock.
//! - Removal (the switch drops the drive; QEMU's hot-remove path waits about 5 s for the guest's
//!   pciehp before the guest sees anything): detect = from the guest kernel's remove event (the
//!   alarm's time, when the host monitor saw it) to the alarm being durable in the journal (the
//!   record's timestamp); recover = from that remove event to the journal's `failover_completed`.
//!   Guest clock, read from the journal.
//! - Mirror (a NAS gateway's md RAID1 over two small drives, mounted on the appliance; SMART on
//!   a member): recover = from the `qom-set` to the API showing the spare in the array with
//!   md's rebuild started (the mirror's condition `rebuilding`, read by the monitor's sweep
//!   every second, so up to a second late; or the failover completed with the mount naming the
//!   spare, if the rebuild ended between two sweeps); moved = to the failover completed (the
//!   old drive detached, which waits for the guest's pciehp); rebuilt = to the mirror journaled
//!   clean again (the next round waits for it: a round must not fail the only member in sync).
//!   Host clock.
//! - HBA (a gateway's filesystem on a shelf disk behind a storage HBA; the HBA pulled from its
//!   slot, a standby HBA reaching the same disk): recover = from the guest kernel's remove event
//!   (the alarm's time) to the journal's `failover_completed`, which the appliance journals once
//!   the filesystem, found by its UUID behind the standby, is mounted again (checked in
//!   mountinfo). Guest clock, as for the removal.
//!
//! A failed drive is not used again (its health stays failed once it is off its port), so the
//! topology holds a fresh drive for every round.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::api::Api;

/// Rounds of each fault; the medians are reported.
pub const ROUNDS: usize = 5;

const SYSTEM: &str = "fo-1";
const GATEWAY: &str = "gw-1";
const MIRROR: &str = "/srv/bench";
/// The gateway's drives: large enough that md's rebuild outlasts a sweep of the monitor (so that
/// `rebuilding` is seen), small enough to rebuild in seconds under TCG.
const MIRROR_DRIVE_BYTES: u64 = 512 << 20;
const SHELF: &str = "/srv/shelf";
/// The shelf disk's filesystem, made by [`prepare`] before the boot.
pub const SHELF_UUID: &str = "0b5e7a3c-91d4-4f6e-8c2a-5d7e9f1a3b64";
const SHELF_DISK_BYTES: u64 = 32 << 20;
const POLL: Duration = Duration::from_millis(20);
const ROUND_TIMEOUT: Duration = Duration::from_secs(90);

/// Four ports and a drive for the system plus one spare per round; two small drives for the
/// gateway's mirror plus one spare per round.
pub fn topology() -> String {
    let mut text = String::from("[appliance]\nid = \"bench-failover\"\nsite = \"qemu\"\n");
    for drive in 0..2 + ROUNDS {
        text.push_str(&format!(
            "[[device]]\nid = \"mirror-{drive}\"\nclass = 0x010802\nvendor_id = 0x1b36\n\
             device_id = 0x0010\nserial = \"FOMIRROR{drive:04}\"\nmodel = \"QEMU NVMe Ctrl\"\n\
             firmware = \"1.0\"\ncapacity_bytes = {MIRROR_DRIVE_BYTES}\nswitch = \"sw0\"\n"
        ));
    }
    for hba in 0..=ROUNDS {
        text.push_str(&format!(
            "[[device]]\nid = \"hba-{hba}\"\nclass = 0x010000\nvendor_id = 0x1af4\n\
             device_id = 0x1048\nserial = \"FOHBA{hba:04}\"\nmodel = \"virtio-scsi\"\n\
             firmware = \"1.0\"\ncapacity_bytes = 0\nswitch = \"sw0\"\ndisks = [\"shelf-0\"]\n"
        ));
    }
    text.push_str(&format!(
        "[[disk]]\nid = \"shelf-0\"\ncapacity_bytes = {SHELF_DISK_BYTES}\n"
    ));
    for port in 1..=6 {
        text.push_str(&format!(
            "[[port]]\nid = {port}\nswitch = \"sw0\"\nslot = {port}\n"
        ));
    }
    for drive in 0..=2 * ROUNDS {
        text.push_str(&format!(
            "[[device]]\nid = \"nvme-{drive}\"\nclass = 0x010802\nvendor_id = 0x1b36\n\
             device_id = 0x0010\nserial = \"FONVME{drive:04}\"\nmodel = \"QEMU NVMe Ctrl\"\n\
             firmware = \"1.0\"\ncapacity_bytes = 1073741824\nswitch = \"sw0\"\n"
        ));
    }
    text
}

/// The figures, in ms: mttd_smart, mttr_smart, mttd_removal, mttr_removal (medians) and their
/// samples.
#[derive(Debug, Default)]
pub struct Figures {
    pub detect_smart: Vec<u64>,
    pub recover_smart: Vec<u64>,
    pub detect_removal: Vec<u64>,
    pub recover_removal: Vec<u64>,
    pub recover_mirror: Vec<u64>,
    pub moved_mirror: Vec<u64>,
    pub rebuilt_mirror: Vec<u64>,
    pub recover_hba: Vec<u64>,
}

/// Makes the shelf disk's filesystem (ext4 with [`SHELF_UUID`]) in the run directory's pool,
/// before the boot.
pub fn prepare(paths: &crate::RunPaths) -> Result<()> {
    std::fs::create_dir_all(&paths.pool)?;
    let image = paths.pool_disk("shelf-0");
    let out = std::process::Command::new(image::tools::find_tool("mke2fs", "e2fsprogs")?)
        .args(["-q", "-F", "-t", "ext4", "-U", SHELF_UUID])
        .arg(&image)
        .arg(format!("{}k", SHELF_DISK_BYTES / 1024))
        .output()
        .context("run mke2fs")?;
    if !out.status.success() {
        bail!(
            "mke2fs {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Composes the system, then runs the SMART rounds and the removal rounds.
pub fn measure(vm: &crate::Vm, api: &Api) -> Result<Figures> {
    let _ = api.call(&json!({"order": {"create_tenant": {"name": "bench"}}}));
    let compose = json!({"order": {"compose": {"system": SYSTEM,
        "selection": {"specific": ["nvme-0"]},
        "create": {"tenant": "bench", "role": "render_node"}}}});
    let answer = api.call(&compose).context("compose the failover system")?;
    if answer["accepted"]["operation"]["state"] != "completed" {
        bail!("the failover system's compose did not complete: {answer}");
    }
    let mut figures = Figures::default();
    mirror_rounds(vm, api, &mut figures)?;
    hba_rounds(vm, api, &mut figures)?;
    for round in 0..ROUNDS {
        let drive = held_drive(api)?;
        let injected = Instant::now();
        vm.fabric()
            .set_smart_critical_warning(&drive, 0x04)
            .with_context(|| format!("SMART round {round} on {drive}"))?;
        poll(&format!("the alarm on {drive}"), || {
            Ok(alarm_of(api, &drive)?.map(|_| ()))
        })?;
        figures
            .detect_smart
            .push(injected.elapsed().as_millis() as u64);
        poll(&format!("{SYSTEM} off {drive}"), || {
            failed_over(api, &drive)
        })?;
        figures
            .recover_smart
            .push(injected.elapsed().as_millis() as u64);
    }
    for round in 0..ROUNDS {
        let drive = held_drive(api)?;
        vm.fabric()
            .surprise_remove(&drive)
            .with_context(|| format!("removal round {round} of {drive}"))?;
        poll(&format!("{SYSTEM} off {drive}"), || {
            failed_over(api, &drive)
        })?;
        let alarm = alarm_of(api, &drive)?.context("the removal's alarm")?;
        let seen_ms = alarm["raised_ms"].as_u64().context("raised_ms")?;
        let raised_at = alarm["sequence"].as_u64().context("sequence")?;
        let op = alarm["failover_op"]
            .as_u64()
            .context("the alarm's failover")?;
        let history =
            api.call(&json!({"query": {"history": {"of": {"system": SYSTEM}, "limit": 40}}}))?;
        let entries = history["history"].as_array().context("history")?;
        let completed = entries
            .iter()
            .find(|e| e["kind"] == "failover_completed" && e["op"] == op)
            .and_then(|e| e["timestamp_ms"].as_u64())
            .with_context(|| format!("failover {op} completed in {SYSTEM}'s history"))?;
        let raised =
            api.call(&json!({"query": {"history": {"of": {"device": drive}, "limit": 40}}}))?;
        let durable = raised["history"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["sequence"] == raised_at))
            .and_then(|e| e["timestamp_ms"].as_u64())
            .context("the alarm's record")?;
        figures.detect_removal.push(durable.saturating_sub(seen_ms));
        figures
            .recover_removal
            .push(completed.saturating_sub(seen_ms));
    }
    Ok(figures)
}

/// The gateway composes two small drives and mounts a mirror over them; each round a member
/// gets a SMART critical warning.
fn mirror_rounds(vm: &crate::Vm, api: &Api, figures: &mut Figures) -> Result<()> {
    let compose = json!({"order": {"compose": {"system": GATEWAY,
        "selection": {"specific": ["mirror-0", "mirror-1"]},
        "create": {"tenant": "bench", "role": "nas_gateway"}}}});
    let answer = api.call(&compose).context("compose the gateway")?;
    if answer["accepted"]["operation"]["state"] != "completed" {
        bail!("the gateway's compose did not complete: {answer}");
    }
    let mount = json!({"order": {"mount": {"system": GATEWAY, "mount": {
        "source": {"mirror": {"devices": ["mirror-0", "mirror-1"]}},
        "target": MIRROR, "filesystem": "ext4", "options": ""}}}});
    let answer = api.call(&mount).context("mount the gateway's mirror")?;
    if answer["accepted"]["operation"]["state"] != "completed" {
        bail!("the gateway's mirror was not mounted: {answer}");
    }
    poll("the mirror clean", || mirror_clean(api))?;
    for round in 0..ROUNDS {
        let members = mirror_members(api)?;
        let drive = members.first().context("a mirror member")?.clone();
        let injected = Instant::now();
        vm.fabric()
            .set_smart_critical_warning(&drive, 0x04)
            .with_context(|| format!("mirror round {round} on {drive}"))?;
        let mut rebuilding = None;
        poll(&format!("the mirror off {drive}"), || {
            let gateway = api.call(&json!({"query": {"system": {"name": GATEWAY}}}))?;
            let idle = gateway["system"]["pending"].is_null();
            let mount = mirror_mount(api)?;
            if rebuilding.is_none() && mount["condition"] == "rebuilding" {
                rebuilding = Some(injected.elapsed().as_millis() as u64);
            }
            Ok((idle && !mirror_members(api)?.contains(&drive)).then_some(()))
        })?;
        let moved = injected.elapsed().as_millis() as u64;
        figures.recover_mirror.push(rebuilding.unwrap_or(moved));
        figures.moved_mirror.push(moved);
        poll("the mirror clean again", || mirror_clean(api))?;
        figures
            .rebuilt_mirror
            .push(injected.elapsed().as_millis() as u64);
    }
    Ok(())
}

/// A second gateway mounts the shelf's filesystem behind hba-0; each round its HBA is pulled
/// and the next standby takes over.
fn hba_rounds(vm: &crate::Vm, api: &Api, figures: &mut Figures) -> Result<()> {
    const GW: &str = "gw-2";
    let compose = json!({"order": {"compose": {"system": GW,
        "selection": {"specific": ["hba-0"]},
        "create": {"tenant": "bench", "role": "nas_gateway"}}}});
    let answer = api.call(&compose).context("compose the HBA gateway")?;
    if answer["accepted"]["operation"]["state"] != "completed" {
        bail!("the HBA gateway's compose did not complete: {answer}");
    }
    let mount = json!({"order": {"mount": {"system": GW, "mount": {
        "source": {"disk": {"hba": "hba-0", "uuid": SHELF_UUID}},
        "target": SHELF, "filesystem": "ext4", "options": ""}}}});
    let answer = api.call(&mount).context("mount the shelf")?;
    if answer["accepted"]["operation"]["state"] != "completed" {
        bail!("the shelf was not mounted: {answer}");
    }
    for round in 0..ROUNDS {
        let answer = api.call(&json!({"query": {"system": {"name": GW}}}))?;
        let hba = answer["system"]["devices"][0]["id"]
            .as_str()
            .with_context(|| format!("{GW}'s HBA: {answer}"))?
            .to_string();
        vm.fabric()
            .surprise_remove(&hba)
            .with_context(|| format!("HBA round {round}: pull {hba}"))?;
        poll(&format!("{GW} off {hba}"), || {
            let answer = api.call(&json!({"query": {"system": {"name": GW}}}))?;
            let system = &answer["system"];
            let holds = system["devices"]
                .as_array()
                .is_some_and(|l| l.iter().any(|d| d["id"] == hba));
            Ok((system["pending"].is_null() && !holds).then_some(()))
        })?;
        let alarm = alarm_of(api, &hba)?.context("the pulled HBA's alarm")?;
        let seen_ms = alarm["raised_ms"].as_u64().context("raised_ms")?;
        let op = alarm["failover_op"]
            .as_u64()
            .context("the alarm's failover")?;
        let history =
            api.call(&json!({"query": {"history": {"of": {"system": GW}, "limit": 40}}}))?;
        let completed = history["history"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|e| e["kind"] == "failover_completed" && e["op"] == op)
            })
            .and_then(|e| e["timestamp_ms"].as_u64())
            .with_context(|| format!("failover {op} completed in {GW}'s history"))?;
        figures.recover_hba.push(completed.saturating_sub(seen_ms));
    }
    Ok(())
}

fn mirror_mount(api: &Api) -> Result<Value> {
    let answer = api.call(&json!({"query": {"system": {"name": GATEWAY}}}))?;
    let mounts = answer["system"]["mounts"].as_array().context("mounts")?;
    mounts
        .iter()
        .find(|m| m["target"] == MIRROR)
        .cloned()
        .with_context(|| format!("{GATEWAY} has no mount at {MIRROR}: {answer}"))
}

fn mirror_members(api: &Api) -> Result<Vec<String>> {
    let mount = mirror_mount(api)?;
    let devices = mount["source"]["mirror"]["devices"]
        .as_array()
        .with_context(|| format!("not a mirror: {mount}"))?;
    Ok(devices
        .iter()
        .filter_map(|d| d.as_str().map(String::from))
        .collect())
}

fn mirror_clean(api: &Api) -> Result<Option<()>> {
    Ok((mirror_mount(api)?["condition"] == "clean").then_some(()))
}

/// The NVMe drive the system holds now.
fn held_drive(api: &Api) -> Result<String> {
    let answer = api.call(&json!({"query": {"system": {"name": SYSTEM}}}))?;
    let devices = answer["system"]["devices"].as_array().context("devices")?;
    match devices.as_slice() {
        [one] => Ok(one["id"].as_str().context("id")?.to_string()),
        other => bail!("{SYSTEM} holds {} devices: {answer}", other.len()),
    }
}

fn alarm_of(api: &Api, drive: &str) -> Result<Option<Value>> {
    let answer = api.call(&json!({"query": "alarms"}))?;
    let alarms = answer["alarms"].as_array().context("alarms")?;
    Ok(alarms
        .iter()
        .find(|a| a["device"] == drive && a["severity"] == "critical")
        .cloned())
}

fn failed_over(api: &Api, drive: &str) -> Result<Option<()>> {
    let answer = api.call(&json!({"query": {"system": {"name": SYSTEM}}}))?;
    let system = &answer["system"];
    let holds = system["devices"]
        .as_array()
        .is_some_and(|l| l.iter().any(|d| d["id"] == drive));
    Ok((system["pending"].is_null() && !holds).then_some(()))
}

fn poll(what: &str, mut probe: impl FnMut() -> Result<Option<()>>) -> Result<()> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    loop {
        if probe()?.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} s waiting for {what}",
                ROUND_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}
