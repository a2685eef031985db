//! End-to-end, through the appliance's HTTPS API: compose an NVMe drive and a GPU stand-in and
//! see them hot-added, bound and identified; compose and delete a system the Redfish way
//! (`POST /redfish/v1/Systems` with `Links.ResourceBlocks`, its task followed to the end) and
//! see the switch attach and detach; faults the appliance answers on its own (a SMART critical
//! warning, a pulled drive, a NIC's link down past its grace), each with its alarm and a
//! failover to a spare; an operator's drain of the GPU moves the system onto the spare GPU;
//! a clean power-off keeps and re-attaches them; a power cut
//! in the middle of a compose loses nothing acknowledged and leaves a clean journal.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use appliance::api::client::{Answer, Client};
use appliance::api::views::{AlarmView, OperationState};
use appliance::api::{Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::model::{DrainScope, Role, Severity};
use serde_json::{json, Value};
use tests::{
    api, boot, call, journal_copy, one_vm_at_a_time, options, power_off, tail, wait_until,
    BOOT_TIMEOUT_MS,
};

const SYSTEM: &str = "ws-1";

fn compose_request(wait: bool) -> Request {
    let verb = Verb::Compose {
        system: SYSTEM.into(),
        selection: Selection::Specific(vec!["nvme-0".into(), "gpu-0".into()]),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role: Role::Workstation,
        }),
        tenant: Some("studio".into()),
        reservation: None,
    };
    let meta = Meta {
        request_id: Some("e2e-compose-1".into()),
        expected_version: None,
        wait,
    };
    Request::order(verb, meta)
}

fn create_tenant(client: &Client) -> Result<()> {
    let verb = Verb::CreateTenant {
        name: "studio".into(),
    };
    match client.request(&Request::order(verb, Meta::default()))? {
        Ok(Reply::Accepted(_)) => Ok(()),
        Err(answer)
            if answer.status == 409 && answer.json().to_string().contains("tenant_exists") =>
        {
            Ok(())
        }
        Ok(other) => bail!("create tenant: {other:?}"),
        Err(answer) => bail!("create tenant: {} {}", answer.status, answer.json()),
    }
}

/// The port the switch shows `device` attached to, if any.
fn port_of(vm: &qemu::Vm, device: &str) -> Option<u16> {
    let inventory = vm.fabric().inventory();
    inventory
        .devices
        .iter()
        .find(|d| d.id == device)
        .and_then(|d| d.attached_port)
}

/// The port the switch shows `device` attached to, waiting until it is.
fn attached_port(vm: &qemu::Vm, device: &str) -> Result<u16> {
    wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        &format!("{device} attached at the switch"),
        || Ok(port_of(vm, device)),
    )
}

/// The system's devices as the appliance reports them.
fn system_devices(client: &Client) -> Result<Vec<String>> {
    match call(
        client,
        &Request::query(Query::System {
            name: SYSTEM.into(),
        }),
    )? {
        Reply::System(system) => Ok(system.devices.iter().map(|d| d.id.to_string()).collect()),
        other => bail!("show system {SYSTEM}: {other:?}"),
    }
}

/// Follows a 202's task monitor until the task answers something else.
fn settle(client: &Client, mut answer: Answer) -> Result<Answer> {
    let deadline = std::time::Instant::now() + Duration::from_millis(BOOT_TIMEOUT_MS);
    while answer.status == 202 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the task never finished: {}",
            answer.json()
        );
        let monitor = answer
            .header("location")
            .context("a 202 names its task monitor")?
            .to_string();
        std::thread::sleep(Duration::from_millis(200));
        answer = client.get(monitor.strip_prefix(client.base()).unwrap_or(&monitor))?;
    }
    Ok(answer)
}

fn block(device: &str) -> Value {
    json!({"@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{device}")})
}

/// Test 2, compose: in the guest the slots power on, nvme and vfio-pci bind, and the NVMe's identify
/// serial equals the pool's (the reconciler completes the compose only then).
#[test]
fn compose_nvme_and_gpu() -> Result<()> {
    let _one = one_vm_at_a_time();
    let mut options = options("compose")?;
    options.topology = qemu::BenchTopology::parse(
        &format!(
            "{}{}{SPARE_NIC}{SPARE_GPU}{}{}{}",
            qemu::topology::SAMPLE,
            spare_nvme(2),
            spare_nvme(3),
            spare_nvme(4),
            spare_nvme(5)
        ),
        "the sample with spare NVMe drives, a spare NIC and a spare GPU",
    )?;
    let booted = boot(options)?;
    let client = api(&booted.vm)?;
    create_tenant(&client)?;
    let started = std::time::Instant::now();
    let response = call(&client, &compose_request(true))
        .with_context(|| format!("compose; console:\n{}", tail(&booted.vm)))?;
    let Reply::Accepted(accepted) = response else {
        bail!("compose answered: {response:?}")
    };
    let operation = accepted
        .operation
        .context("a waited compose reports its operation")?;
    ensure!(
        operation.state == OperationState::Completed,
        "compose outcome: {:?} {:?}; console:\n{}",
        operation.state,
        operation.failure,
        tail(&booted.vm)
    );
    println!(
        "compose to bound and identified: {} ms",
        started.elapsed().as_millis()
    );
    let nvme_port = attached_port(&booted.vm, "nvme-0")?;
    attached_port(&booted.vm, "gpu-0")?;
    let path = format!(
        "/machine/peripheral/{}",
        qemu::args::pool_device_id("nvme-0")
    );
    let serial = booted.vm.qmp().qom_get(&path, "serial")?;
    let pool = booted.vm.fabric().inventory();
    let record = pool
        .devices
        .iter()
        .find(|d| d.id == "nvme-0")
        .context("nvme-0 in the pool")?;
    ensure!(
        serial == serde_json::json!(record.serial),
        "QEMU's NVMe serial {serial} vs pool {}",
        record.serial
    );
    ensure!(nvme_port > 0, "a real port");
    let mut devices = system_devices(&client)?;
    devices.sort();
    ensure!(
        devices == ["gpu-0", "nvme-0"],
        "system devices: {devices:?}"
    );
    the_front_panel_shows_the_compose(&booted.vm)?;
    redfish_compose_and_delete(&booted.vm, &client)?;
    smart_warning_fails_the_drive_over(&booted.vm, &client)?;
    a_pulled_drive_fails_over(&booted.vm, &client)?;
    a_link_down_past_its_grace_fails_the_nic_over(&booted.vm, &client)?;
    a_drained_gpu_moves_the_system_onto_the_spare(&booted.vm, &client)?;
    media_errors_fail_the_drive_over(&booted.vm, &client)?;
    pcie_errors_fail_the_drive_over(&booted.vm, &client)?;
    a_port_down_at_the_switch_fails_the_drive_over(&booted.vm, &client)?;
    power_off(booted.vm)
}

/// The switch's own report: the bench switch says, on the fabric link, that the port of ws-1's
/// NVMe went down; the appliance degrades the drive (a warning with the switch's words), and
/// past the link's grace (3 s by default) fails ws-1 over to the spare.
fn a_port_down_at_the_switch_fails_the_drive_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let reported = std::time::Instant::now();
    let port = vm.fabric().set_port_link("nvme-4", false)?;
    let warning = alarm_of(client, "nvme-4", Severity::Warning)?;
    ensure!(
        warning.message == format!("fabric port {port} down")
            && warning.evidence.contains("surprise down (injected)"),
        "the warning carries the switch's report: {warning:?}"
    );
    let devices = failed_over(vm, client, "nvme-4")?;
    println!(
        "port down at the switch to ws-1 failed over (grace 3000 ms + recover): {} ms",
        reported.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-1", "nic-1", "nvme-5"],
        "ws-1 after the port down's failover: {devices:?}"
    );
    attached_port(vm, "nvme-5")?;
    alarm_of(client, "nvme-4", Severity::Critical)?;
    Ok(())
}

/// PCIe errors: the root port of ws-1's NVMe's slot reports an uncorrectable (non-fatal)
/// poisoned TLP through QEMU's AER injection; the guest kernel's AER driver counts it in the
/// port's `aer_dev_nonfatal`, the appliance's AER poller sees the count rise, journals the drive
/// failed with the counters as evidence, and fails ws-1 over to the last spare.
fn pcie_errors_fail_the_drive_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let injected = std::time::Instant::now();
    vm.fabric().inject_pcie_error("nvme-3")?;
    let devices = failed_over(vm, client, "nvme-3")?;
    println!(
        "PCIe AER error to ws-1 failed over (detect + recover): {} ms",
        injected.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-1", "nic-1", "nvme-4"],
        "ws-1 after the PCIe error's failover: {devices:?}"
    );
    attached_port(vm, "nvme-4")?;
    let alarm = alarm_of(client, "nvme-3", Severity::Critical)?;
    ensure!(
        alarm.message == "PCIe uncorrectable non-fatal errors (AER)"
            && alarm.evidence.contains("nonfatal:TLP +1")
            && alarm.failover.as_ref().map(|o| o.state) == Some(OperationState::Completed),
        "the alarm carries the AER counters' evidence and names its failover: {alarm:?}"
    );
    Ok(())
}

/// The front panel: PID 1 runs the panel's process on the guest's second serial port, which
/// the bench writes to `panel.txt`; after the compose a frame shows one GPU and one NVMe
/// composed and ws-1 as the one system.
fn the_front_panel_shows_the_compose(vm: &qemu::Vm) -> Result<()> {
    let path = vm.paths().panel.clone();
    wait_until(
        Duration::from_secs(30),
        "the front panel shows the compose",
        || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let shown = text.split('\x0c').any(|frame| {
                frame.contains("GPU 1/")
                    && frame.contains("NVMe 1/")
                    && frame.contains("OK 1 system")
            });
            Ok(shown.then_some(()))
        },
    )
    .with_context(|| {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        format!("{} holds:\n{text}\nconsole:\n{}", path.display(), tail(vm))
    })
}

/// Media errors: ws-1's NVMe starts failing its reads with I/O errors (blkdebug under QEMU's
/// drive); the appliance's read probe sees the guest kernel return EIO, journals the drive
/// failed with the probe's evidence, and fails ws-1 over to the spare.
fn media_errors_fail_the_drive_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let injected = std::time::Instant::now();
    vm.fabric().inject_media_errors("nvme-2")?;
    let devices = failed_over(vm, client, "nvme-2")?;
    println!(
        "media errors to ws-1 failed over (detect + recover): {} ms",
        injected.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-1", "nic-1", "nvme-3"],
        "ws-1 after the media errors' failover: {devices:?}"
    );
    attached_port(vm, "nvme-3")?;
    let alarm = alarm_of(client, "nvme-2", Severity::Critical)?;
    ensure!(
        alarm.message.starts_with("NVMe reads fail")
            && alarm.evidence.contains("read probe of /dev/nvme")
            && alarm.failover.as_ref().map(|o| o.state) == Some(OperationState::Completed),
        "the alarm carries the read probe's evidence and names its failover: {alarm:?}"
    );
    Ok(())
}

/// A second GPU stand-in for the compose test's pool, where the drain moves ws-1.
const SPARE_GPU: &str = r#"
[[device]]
id = "gpu-1"
class = 0x030000
vendor_id = 0x1234
device_id = 0x1111
serial = "POOLGPU0001"
model = "bochs-display"
firmware = "1.0"
capacity_bytes = 16777216
switch = "sw0"
"#;

/// Maintenance the operator's way: a drain of ws-1's healthy GPU takes it out of service and
/// the appliance fails ws-1 over to the spare GPU through the same saga as a fault's (the switch
/// detaches gpu-0, attaches gpu-1, vfio-pci binds it); the drained GPU is free, out of service,
/// no longer draining; its history shows the operator's drain and the appliance's failover.
fn a_drained_gpu_moves_the_system_onto_the_spare(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let verb = Verb::Drain {
        scope: DrainScope::Device("gpu-0".into()),
        reason: "fan replacement".into(),
    };
    let ordered = std::time::Instant::now();
    let answer = call(client, &Request::order(verb, Meta::default()))?;
    ensure!(
        matches!(answer, Reply::Accepted(_)),
        "drain gpu-0: {answer:?}"
    );
    let devices = failed_over(vm, client, "gpu-0")?;
    println!(
        "drain of gpu-0 to ws-1 on the spare: {} ms",
        ordered.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-1", "nic-1", "nvme-2"],
        "ws-1 after the drain: {devices:?}"
    );
    attached_port(vm, "gpu-1")?;
    ensure!(
        port_of(vm, "gpu-0").is_none(),
        "gpu-0 is detached at the switch"
    );
    let query = Query::Device {
        device: "gpu-0".into(),
    };
    let Reply::Device(gpu) = call(client, &Request::query(query))? else {
        bail!("gpu-0 is not a device")
    };
    ensure!(
        gpu.system.is_none() && !gpu.in_service && !gpu.draining,
        "gpu-0 drained: {gpu:?}"
    );
    let of = appliance::api::HistoryOf::Device("gpu-0".into());
    let Reply::History(entries) =
        call(client, &Request::query(Query::History { of, limit: None }))?
    else {
        bail!("gpu-0's history")
    };
    let by = |kind: &str| {
        let entry = entries.iter().rev().find(|e| e.kind == kind);
        entry.and_then(|e| e.by.as_ref()).map(|b| b.door)
    };
    ensure!(
        by("drain_requested").is_some_and(|door| door != appliance::model::Door::Appliance)
            && by("failover_requested") == Some(appliance::model::Door::Appliance),
        "the operator's drain, the appliance's failover: {entries:?}"
    );
    Ok(())
}

/// A second NIC for the compose test's pool, the spare of the NIC's failover.
const SPARE_NIC: &str = r#"
[[device]]
id = "nic-1"
class = 0x020000
vendor_id = 0x1af4
device_id = 0x1000
serial = "POOLNIC0001"
model = "virtio-net"
capacity_bytes = 0
switch = "sw0"
rdma = true
"#;

/// The saga resumed after a power cut: ws-1's NVMe gets a SMART critical warning, the appliance
/// journals the alarm and its failover, and QEMU is killed while the failover runs (the old
/// drive's hot-remove takes seconds); after the next boot the reconciler finishes the failover
/// from the journal: ws-1 holds the spare, the switch has the spare attached and the failed drive
/// off its port, and the alarm still names the failover. Returns the booted VM.
fn power_cut_mid_failover(
    booted: tests::Booted,
    client: &Client,
    options: &qemu::VmOptions,
) -> Result<tests::Booted> {
    let mut devices = system_devices(client)?;
    if devices.is_empty() {
        let response = call(client, &compose_request(true))?;
        ensure!(
            matches!(response, Reply::Accepted(_)),
            "compose: {response:?}"
        );
        devices = system_devices(client)?;
    }
    devices.sort();
    ensure!(
        devices == ["gpu-0", "nvme-0"],
        "{SYSTEM} before the fault: {devices:?}"
    );
    booted
        .vm
        .fabric()
        .set_smart_critical_warning("nvme-0", 0x04)?;
    let running = |a: &AlarmView| {
        a.device.as_str() == "nvme-0"
            && a.failover.as_ref().map(|o| o.state) == Some(OperationState::Pending)
    };
    let alarm = alarm_where(client, "the failover journaled", running)?;
    let op = alarm.failover_op.context("the alarm's failover")?;
    let mut booted = booted;
    booted.vm.kill();
    drop(booted);
    let third = boot(options.clone())?;
    let client = api(&third.vm)?;
    let devices = failed_over(&third.vm, &client, "nvme-0")?;
    ensure!(
        devices == ["gpu-0", "nvme-1"],
        "{SYSTEM} after the resumed failover: {devices:?}"
    );
    let Reply::Operation(operation) = call(&client, &Request::query(Query::Operation { op }))?
    else {
        bail!("operation {op}")
    };
    ensure!(
        operation.state == OperationState::Completed,
        "{operation:?}"
    );
    attached_port(&third.vm, "nvme-1")?;
    ensure!(
        port_of(&third.vm, "nvme-0").is_none(),
        "the failed drive is off its port"
    );
    let alarm = alarm_of(&client, "nvme-0", Severity::Critical)?;
    ensure!(alarm.failover_op == Some(op), "{alarm:?}");
    println!("failover {op} interrupted by a power cut completed after the reboot");
    Ok(third)
}

/// Polls the alarms until one of `device` with `severity` is active; returns it.
fn alarm_of(client: &Client, device: &str, severity: Severity) -> Result<AlarmView> {
    let what = format!("a {} alarm on {device}", severity.name());
    alarm_where(client, &what, |a| {
        a.device.as_str() == device && a.severity == severity
    })
}

/// Polls the alarms until one matches `wanted`; returns it.
fn alarm_where(
    client: &Client,
    what: &str,
    wanted: impl Fn(&AlarmView) -> bool,
) -> Result<AlarmView> {
    wait_until(Duration::from_millis(BOOT_TIMEOUT_MS), what, || {
        let Reply::Alarms(alarms) = call(client, &Request::query(Query::Alarms))? else {
            bail!("alarms")
        };
        Ok(alarms.into_iter().find(&wanted))
    })
}

/// A composed NIC's link goes down (QMP `set_link`, the guest's virtio-net sees its carrier
/// drop; the host monitor hears it from rtnetlink): a warning first, and once the link has
/// stayed down past the default grace, the NIC counts as failed and ws-1 fails over to the
/// spare NIC.
fn a_link_down_past_its_grace_fails_the_nic_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let verb = Verb::Compose {
        system: SYSTEM.into(),
        selection: Selection::Specific(vec!["nic-0".into()]),
        create: None,
        tenant: None,
        reservation: None,
    };
    let Reply::Accepted(accepted) = call(client, &Request::order(verb, Meta::default()))? else {
        bail!("compose nic-0")
    };
    ensure!(
        accepted.operation.as_ref().map(|o| o.state) == Some(OperationState::Completed),
        "nic-0 composed into {SYSTEM}: {:?}; console:\n{}",
        accepted.operation,
        tail(vm)
    );
    let downed = std::time::Instant::now();
    vm.fabric().set_nic_link("nic-0", false)?;
    let warning = alarm_of(client, "nic-0", Severity::Warning)?;
    println!(
        "link down to its warning seen through the API: {} ms",
        downed.elapsed().as_millis()
    );
    ensure!(
        warning.message == "link down" && warning.evidence.contains("down"),
        "{warning:?}"
    );
    let devices = failed_over(vm, client, "nic-0")?;
    println!(
        "link down to ws-1 failed over (grace {} ms + recover): {} ms",
        appliance::decide::reflex::LINK_GRACE_DEFAULT.as_millis(),
        downed.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-0", "nic-1", "nvme-2"],
        "ws-1 after the NIC's failover: {devices:?}"
    );
    attached_port(vm, "nic-1")?;
    let critical = alarm_of(client, "nic-0", Severity::Critical)?;
    ensure!(
        critical.message.starts_with("link down for more than")
            && critical.failover.as_ref().map(|o| o.state) == Some(OperationState::Completed),
        "{critical:?}"
    );
    Ok(())
}

/// NVMe drive `n` of the compose test's pool beyond the sample's two: nvme-2 is the spare of
/// the second failover, nvme-3 of the media errors' failover.
fn spare_nvme(n: u32) -> String {
    format!(
        r#"
[[device]]
id = "nvme-{n}"
class = 0x010802
serial = "POOLNVME000{n}"
model = "QEMU NVMe Ctrl"
capacity_bytes = 1073741824
switch = "sw0"
"#
    )
}

/// The failover that follows the previous one: a surprise removal of ws-1's NVMe (the switch
/// drops it from its port without asking the guest; pciehp sees the slot empty) is observed as
/// a failure, and the appliance fails ws-1 over to the spare, though the switch refuses to
/// detach what it no longer holds.
fn a_pulled_drive_fails_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let pulled = std::time::Instant::now();
    vm.fabric().surprise_remove("nvme-1")?;
    let devices = failed_over(vm, client, "nvme-1")?;
    println!(
        "surprise removal to ws-1 failed over (detect + recover): {} ms",
        pulled.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-0", "nvme-2"],
        "ws-1 after the second failover: {devices:?}"
    );
    attached_port(vm, "nvme-2")?;
    let (_, block) = client.get_json("/redfish/v1/CompositionService/ResourceBlocks/nvme-1")?;
    ensure!(
        block["Status"]["State"] == "Disabled" && block["Status"]["Health"] == "Critical",
        "the pulled drive's block is Disabled and Critical: {block}"
    );
    Ok(())
}

/// Waits until ws-1 has no operation in flight and no longer holds `from`; its devices, sorted.
fn failed_over(vm: &qemu::Vm, client: &Client, from: &str) -> Result<Vec<String>> {
    let mut devices = wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        &format!("{SYSTEM} failed over from {from}"),
        || {
            let query = Query::System {
                name: SYSTEM.into(),
            };
            let Reply::System(system) = call(client, &Request::query(query))? else {
                bail!("{SYSTEM} is not a system")
            };
            let devices: Vec<String> = system.devices.iter().map(|d| d.id.to_string()).collect();
            let done = system.pending.is_none() && !devices.iter().any(|d| d == from);
            Ok(done.then_some(devices))
        },
    )
    .with_context(|| {
        let of = appliance::api::HistoryOf::Device(from.into());
        let history = call(client, &Request::query(Query::History { of, limit: None }));
        format!("{from}'s history: {history:?}\nconsole:\n{}", tail(vm))
    })?;
    devices.sort();
    Ok(devices)
}

/// The appliance's reflex on the real kernel: a SMART critical warning set on ws-1's composed
/// NVMe (QMP `qom-set`, as a dying drive raises it) reaches the guest's nvme driver as an
/// asynchronous event, the host monitor journals the drive failed, and the appliance on its own
/// takes it out of service and fails ws-1 over to the free drive: the switch detaches nvme-0
/// and attaches nvme-1; the GPU stays.
fn smart_warning_fails_the_drive_over(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let injected = std::time::Instant::now();
    vm.fabric().set_smart_critical_warning("nvme-0", 0x04)?;
    let devices = failed_over(vm, client, "nvme-0")?;
    println!(
        "SMART critical warning to ws-1 failed over (detect + recover): {} ms",
        injected.elapsed().as_millis()
    );
    ensure!(
        devices == ["gpu-0", "nvme-1"],
        "ws-1 after the failover: {devices:?}"
    );
    attached_port(vm, "nvme-1")?;
    ensure!(
        port_of(vm, "nvme-0").is_none(),
        "nvme-0 is detached at the switch"
    );
    let (_, block) = client.get_json("/redfish/v1/CompositionService/ResourceBlocks/nvme-0")?;
    ensure!(
        block["Status"]["State"] == "Disabled" && block["Status"]["Health"] == "Critical",
        "the failed drive's block is Disabled and Critical: {block}"
    );
    let condition = &block["Status"]["Conditions"][0];
    ensure!(
        condition["MessageId"] == "ResourceEvent.1.4.ResourceStatusChangedCritical"
            && condition["Message"]
                .as_str()
                .is_some_and(|m| m.contains("critical_warning=0x04")),
        "the failed drive's block carries its alarm as a Condition: {block}"
    );
    let alarm = alarm_of(client, "nvme-0", Severity::Critical)?;
    ensure!(
        alarm.message.contains("NVM subsystem reliability degraded")
            && alarm.system.as_ref().map(|s| s.as_str()) == Some(SYSTEM)
            && alarm.failover.as_ref().map(|o| o.state) == Some(OperationState::Completed),
        "the alarm names the fault, its system and the failover that answered it: {alarm:?}"
    );
    let history = call(
        client,
        &Request::query(Query::History {
            of: appliance::api::HistoryOf::System(SYSTEM.into()),
            limit: None,
        }),
    )?;
    let Reply::History(entries) = history else {
        bail!("history of {SYSTEM}: {history:?}")
    };
    let failover = entries
        .iter()
        .find(|e| e.kind == "failover_requested")
        .with_context(|| format!("a failover in {SYSTEM}'s history: {entries:?}"))?;
    ensure!(
        failover.by.as_ref().map(|b| b.door) == Some(appliance::model::Door::Appliance),
        "the appliance made the failover: {failover:?}"
    );
    Ok(())
}

/// The Redfish way, as sushy or Ansible would do it: `POST /redfish/v1/Systems` with the other
/// NVMe drive's resource block, the 202's task followed to a 201; the switch attaches the drive
/// and QEMU shows it on its root port; the ResourceBlock says Composed; `DELETE` gives it back
/// (the switch detaches it, the block is Unused); the journal's history names `admin`.
fn redfish_compose_and_delete(vm: &qemu::Vm, client: &Client) -> Result<()> {
    let body = json!({"Name": "rn-1", "Links": {"ResourceBlocks": [block("nvme-1")]}});
    let answer = settle(client, client.post("/redfish/v1/Systems", &body)?)?;
    ensure!(
        answer.status == 201 && answer.header("location") == Some("/redfish/v1/Systems/rn-1"),
        "Redfish compose: {} {:?} {}; console:\n{}",
        answer.status,
        answer.header("location"),
        answer.json(),
        tail(vm)
    );
    let port = attached_port(vm, "nvme-1")?;
    let path = format!(
        "/machine/peripheral/{}",
        qemu::args::pool_device_id("nvme-1")
    );
    let serial = vm.qmp().qom_get(&path, "serial")?;
    ensure!(
        serial == json!("POOLNVME0001"),
        "QEMU has nvme-1 on port {port} with the pool's serial: {serial}"
    );
    let (_, block) = client.get_json("/redfish/v1/CompositionService/ResourceBlocks/nvme-1")?;
    ensure!(
        block["CompositionStatus"]["CompositionState"] == "Composed",
        "nvme-1's block: {block}"
    );
    let (_, system) = client.get_json("/redfish/v1/Systems/rn-1")?;
    ensure!(
        system["SystemType"] == "Composed"
            && system["Links"]["ResourceBlocks"][0]["@odata.id"]
                == "/redfish/v1/CompositionService/ResourceBlocks/nvme-1",
        "the composed system: {system}"
    );
    let answer = settle(client, client.delete("/redfish/v1/Systems/rn-1")?)?;
    ensure!(
        answer.status == 200 || answer.status == 204,
        "Redfish delete: {} {}",
        answer.status,
        answer.json()
    );
    wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        "nvme-1 detached at the switch",
        || Ok(port_of(vm, "nvme-1").is_none().then_some(())),
    )?;
    let (status, _) = client.get_json("/redfish/v1/Systems/rn-1")?;
    ensure!(status == 404, "the deleted system answers {status}");
    let (_, block) = client.get_json("/redfish/v1/CompositionService/ResourceBlocks/nvme-1")?;
    ensure!(
        block["CompositionStatus"]["CompositionState"] == "Unused",
        "nvme-1's block after the delete: {block}"
    );
    let history = call(
        client,
        &Request::query(Query::History {
            of: appliance::api::HistoryOf::System("rn-1".into()),
            limit: None,
        }),
    )?;
    let Reply::History(entries) = history else {
        bail!("history of rn-1: {history:?}")
    };
    let compose = entries
        .iter()
        .find(|e| e.kind == "compose_requested")
        .with_context(|| format!("a compose in rn-1's history: {entries:?}"))?;
    let by = compose
        .by
        .as_ref()
        .context("the compose names who made it")?;
    ensure!(
        by.account.as_deref() == Some("admin") && by.door == appliance::model::Door::Api,
        "rn-1 was composed by admin through the API: {by:?}"
    );
    Ok(())
}

/// Test 3, clean power-off and boot again: same system, devices and journal head; the devices are
/// attached again at the switch (the reconciler repairs the hardware).
#[test]
fn clean_power_off_keeps_and_reattaches_the_system() -> Result<()> {
    let _one = one_vm_at_a_time();
    let options = options("power_off_reattach")?;
    let first = boot(options.clone())?;
    let client = api(&first.vm)?;
    create_tenant(&client)?;
    let response = call(&client, &compose_request(true))?;
    ensure!(
        matches!(response, Reply::Accepted(_)),
        "compose: {response:?}"
    );
    let head = match call(&client, &Request::query(Query::Status))? {
        Reply::Status(status) => status.journal_head,
        other => bail!("status: {other:?}"),
    };
    drop(client);
    power_off(first.vm)?;
    let second = boot(options)?;
    ensure!(
        second.ready.journal_head >= Some(head),
        "journal head {:?} after, {head} before",
        second.ready.journal_head
    );
    let client = api(&second.vm)?;
    let mut devices = system_devices(&client)?;
    devices.sort();
    ensure!(
        devices == ["gpu-0", "nvme-0"],
        "system devices after reboot: {devices:?}"
    );
    attached_port(&second.vm, "nvme-0").with_context(|| tail(&second.vm))?;
    attached_port(&second.vm, "gpu-0").with_context(|| tail(&second.vm))?;
    power_off(second.vm)
}

/// Test 4, power cut mid-compose: kill QEMU right after the compose is acknowledged; boot again:
/// the acknowledged intent is there, it is completed or rolled back, and the journal verifies.
#[test]
fn power_cut_mid_compose_loses_nothing_acknowledged() -> Result<()> {
    // Also a power cut in the middle of the appliance's own failover (same boots).
    let _one = one_vm_at_a_time();
    let options = options("power_cut")?;
    let mut first = boot(options.clone())?;
    let client = api(&first.vm)?;
    create_tenant(&client)?;
    let response = call(&client, &compose_request(false))?;
    let Reply::Accepted(accepted) = response else {
        bail!("compose answered: {response:?}")
    };
    let op = accepted.op.context("the compose has an operation id")?;
    first.vm.kill();
    drop(first);
    let second = boot(options.clone())?;
    ensure!(
        second.ready.journal_head >= Some(accepted.sequence),
        "acknowledged sequence {} lost: head {:?}",
        accepted.sequence,
        second.ready.journal_head
    );
    let client = api(&second.vm)?;
    let outcome = wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        "the interrupted compose's outcome",
        || match call(&client, &Request::query(Query::Operation { op }))? {
            Reply::Operation(operation) => {
                Ok((operation.state != OperationState::Pending).then_some(operation.state))
            }
            other => bail!("show operation {op}: {other:?}"),
        },
    )?;
    println!("interrupted compose finished after reboot: {outcome:?}");
    let failover = power_cut_mid_failover(second, &client, &options)?;
    drop(client);
    power_off(failover.vm)?;
    let copy = tests::run_dir("power_cut_journal")?;
    let journal = journal_copy(&options.data_disk, &copy)?;
    let summary = journal::inspect::verify(&journal)
        .with_context(|| format!("journal verify {}", journal.display()))?;
    println!("journal verify: {summary:?}");
    Ok(())
}
