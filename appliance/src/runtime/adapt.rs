//! The one place where what the drivers report becomes the domain's words: PCI classes become
//! device kinds, the switch's pool devices become device facts, its inventory becomes
//! observations, driver errors become typed failures, and device kinds pick their driver.
//! Nothing else in `appliance` outside `runtime` and `testing` names a `drivers` type.

use std::collections::BTreeSet;

use drivers::{ClassCode, DriverChoice, FabricError, HostError, Inventory, PoolDevice};

use crate::decide::command::{Command, Observation};
use crate::model::{DeviceFacts, DeviceId, DeviceKind, Failure, PortId, State, SwitchStep};

/// What a pool device is, from its PCI class.
pub fn kind_of(class: ClassCode) -> DeviceKind {
    if class.is_display() {
        DeviceKind::Gpu
    } else if class.is_nvme() {
        DeviceKind::Nvme
    } else if class.is_ethernet() || class.is_infiniband() {
        DeviceKind::Nic
    } else if class.is_storage_hba() {
        DeviceKind::Hba
    } else {
        DeviceKind::Other
    }
}

/// A pool device's facts; `rdma` says the topology declares a NIC RoCE-capable (InfiniBand-class
/// NICs always are).
pub fn facts(pool: &PoolDevice, rdma: bool) -> DeviceFacts {
    DeviceFacts {
        id: pool.id.as_str().into(),
        kind: kind_of(pool.class),
        class: pool.class.0,
        vendor_id: pool.vendor_id,
        device_id: pool.device_id,
        serial: pool.serial.clone(),
        model: pool.model.clone(),
        firmware: pool.firmware.clone(),
        capacity_bytes: pool.capacity_bytes,
        rdma: rdma || pool.class.is_infiniband(),
        switch: pool.switch.as_str().into(),
    }
}

/// Observations that bring State's idea of the pool in line with the switch's inventory: every
/// port and device it lists (the core journals only what changed), and every device State
/// believes present that it no longer lists. `rdma` names the RoCE-capable NICs.
pub fn inventory_commands(
    inventory: &Inventory,
    state: &State,
    rdma: &BTreeSet<String>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for port in &inventory.ports {
        commands.push(Command::Observe(Observation::Port {
            port: PortId(port.id),
            switch: port.switch.as_str().into(),
            slot: port.slot,
        }));
    }
    for pool in &inventory.devices {
        commands.push(Command::Observe(Observation::Device {
            facts: facts(pool, rdma.contains(&pool.id)),
        }));
    }
    commands.extend(vanished_commands(inventory, state));
    commands
}

/// Observations of the devices State believes present that the inventory no longer lists.
pub fn vanished_commands(inventory: &Inventory, state: &State) -> Vec<Command> {
    let listed: BTreeSet<&str> = inventory.devices.iter().map(|d| d.id.as_str()).collect();
    state
        .devices
        .values()
        .filter(|d| d.present && !listed.contains(d.id.as_str()))
        .map(|d| {
            Command::Observe(Observation::Vanished {
                device: d.id.clone(),
            })
        })
        .collect()
}

/// The driver a device of this kind is bound to.
pub fn driver_for(kind: DeviceKind) -> DriverChoice {
    match kind {
        DeviceKind::Nvme => DriverChoice::Nvme,
        DeviceKind::Gpu => DriverChoice::VfioPci,
        DeviceKind::Nic | DeviceKind::Hba | DeviceKind::Other => DriverChoice::Default,
    }
}

/// The driver's name as failures and logs show it.
pub fn driver_name(driver: &DriverChoice) -> &'static str {
    match driver {
        DriverChoice::Nvme => "nvme",
        DriverChoice::VfioPci => "vfio-pci",
        DriverChoice::Default => "the kernel's default driver",
        DriverChoice::None => "no driver",
    }
}

/// A switch's refusal (or a device it no longer knows) as a failure.
pub fn switch_failure(
    device: &DeviceId,
    port: PortId,
    step: SwitchStep,
    error: &FabricError,
) -> Failure {
    match error {
        FabricError::UnknownDevice { .. } => Failure::DeviceVanished {
            device: device.clone(),
        },
        other => Failure::SwitchRefused {
            device: device.clone(),
            port,
            step,
            reason: drivers::error_chain(other),
        },
    }
}

/// A failed bind as a failure: a timeout is told apart from a refusal.
pub fn bind_failure(device: &DeviceId, driver: &DriverChoice, error: &HostError) -> Failure {
    let driver = driver_name(driver).to_string();
    let reason = drivers::error_chain(error);
    let device = device.clone();
    match error {
        HostError::Timeout { .. } => Failure::BindTimeout {
            device,
            driver,
            reason,
        },
        _ => Failure::BindFailed {
            device,
            driver,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_classes_become_kinds() {
        let cases = [
            (0x030000, DeviceKind::Gpu),
            (0x038000, DeviceKind::Gpu),
            (0x010802, DeviceKind::Nvme),
            (0x020000, DeviceKind::Nic),
            (0x020700, DeviceKind::Nic),
            // QEMU's virtio-scsi-pci, the bench's HBA, is a SCSI controller.
            (0x010000, DeviceKind::Hba),
            (0x010400, DeviceKind::Hba),
            (0x010700, DeviceKind::Hba),
            (0x0c0400, DeviceKind::Hba),
            (0x010601, DeviceKind::Other),
            (0x060400, DeviceKind::Other),
        ];
        for (class, kind) in cases {
            assert_eq!(kind_of(ClassCode(class)), kind, "class {class:#08x}");
        }
    }
}
