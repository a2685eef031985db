//! End-to-end: compose an NVMe drive and a GPU stand-in through the control interface and see
//! them hot-added, bound and identified; a clean power-off keeps and re-attaches them; a power
//! cut in the middle of a compose loses nothing acknowledged and leaves a clean journal.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use appliance::api::control::Client;
use appliance::api::views::OperationState;
use appliance::api::{ErrorCode, Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::model::Role;
use tests::{
    boot, control, journal_copy, one_vm_at_a_time, options, power_off, tail, wait_until,
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

fn create_tenant(client: &mut Client) -> Result<()> {
    let verb = Verb::CreateTenant {
        name: "studio".into(),
    };
    match client.call(&Request::order(verb, Meta::default()))? {
        Ok(Reply::Accepted(_)) => Ok(()),
        Err(e) if e.code == ErrorCode::TenantExists => Ok(()),
        other => bail!("create tenant: {other:?}"),
    }
}

/// The ports the switch shows `device` attached to, waiting until it is.
fn attached_port(vm: &qemu::Vm, device: &str) -> Result<u16> {
    wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        &format!("{device} attached at the switch"),
        || {
            let inventory = vm.fabric().inventory();
            Ok(inventory
                .devices
                .iter()
                .find(|d| d.id == device)
                .and_then(|d| d.attached_port))
        },
    )
}

/// The system's devices as the appliance reports them.
fn system_devices(client: &mut Client) -> Result<Vec<String>> {
    match client.call(&Request::query(Query::System {
        name: SYSTEM.into(),
    }))? {
        Ok(Reply::System(system)) => Ok(system.devices.iter().map(|d| d.id.to_string()).collect()),
        other => bail!("show system {SYSTEM}: {other:?}"),
    }
}

/// Test 2, compose: in the guest the slots power on, nvme and vfio-pci bind, and the NVMe's identify
/// serial equals the pool's (the reconciler completes the compose only then).
#[test]
fn compose_nvme_and_gpu() -> Result<()> {
    let _one = one_vm_at_a_time();
    let booted = boot(options("compose")?)?;
    let mut client = control(&booted.vm)?;
    create_tenant(&mut client)?;
    let started = std::time::Instant::now();
    let response = client.call(&compose_request(true))?;
    let Ok(Reply::Accepted(accepted)) = response else {
        bail!("compose refused: {response:?}\n{}", tail(&booted.vm))
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
    let mut devices = system_devices(&mut client)?;
    devices.sort();
    ensure!(
        devices == ["gpu-0", "nvme-0"],
        "system devices: {devices:?}"
    );
    power_off(booted.vm)
}

/// Test 3, clean power-off and boot again: same system, devices and journal head; the devices are
/// attached again at the switch (the reconciler repairs the hardware).
#[test]
fn clean_power_off_keeps_and_reattaches_the_system() -> Result<()> {
    let _one = one_vm_at_a_time();
    let options = options("power_off_reattach")?;
    let first = boot(options.clone())?;
    let mut client = control(&first.vm)?;
    create_tenant(&mut client)?;
    let response = client.call(&compose_request(true))?;
    ensure!(
        matches!(response, Ok(Reply::Accepted(_))),
        "compose: {response:?}"
    );
    let head = match client.call(&Request::query(Query::Status))? {
        Ok(Reply::Status(status)) => status.journal_head,
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
    let mut client = control(&second.vm)?;
    let mut devices = system_devices(&mut client)?;
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
    let _one = one_vm_at_a_time();
    let options = options("power_cut")?;
    let mut first = boot(options.clone())?;
    let mut client = control(&first.vm)?;
    create_tenant(&mut client)?;
    let response = client.call(&compose_request(false))?;
    let Ok(Reply::Accepted(accepted)) = response else {
        bail!("compose refused: {response:?}")
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
    let mut client = control(&second.vm)?;
    let outcome = wait_until(
        Duration::from_millis(BOOT_TIMEOUT_MS),
        "the interrupted compose's outcome",
        || match client.call(&Request::query(Query::Operation { op }))? {
            Ok(Reply::Operation(operation)) => {
                Ok((operation.state != OperationState::Pending).then_some(operation.state))
            }
            other => bail!("show operation {op}: {other:?}"),
        },
    )?;
    println!("interrupted compose finished after reboot: {outcome:?}");
    drop(client);
    power_off(second.vm)?;
    let copy = tests::run_dir("power_cut_journal")?;
    let journal = journal_copy(&options.data_disk, &copy)?;
    let summary = journal::inspect::verify(&journal)
        .with_context(|| format!("journal verify {}", journal.display()))?;
    println!("journal verify: {summary:?}");
    Ok(())
}
