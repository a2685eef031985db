//! The reconciler's table (`runtime::reconciler::RULES`), one scenario per row, on the simulated
//! fabric: each scenario builds the situation the row names, executes the operation, checks what
//! the switch shows afterwards (what was attached, detached or rolled back), and returns how the
//! execution ended; the test compares that with the row.

use std::path::Path;
use std::sync::Arc;

use appliance::decide::command::{Command, Observation};
use appliance::model::{
    DeviceId, Event, Made, MountSource, MountSpec, Operation, OperationId, PortId, Role, State,
};
use appliance::runtime::adapt::inventory_commands;
use appliance::runtime::reconciler::{execute, Drivers, Ends, Execution, ReconcileLimits, RULES};
use appliance::serve::SAMPLE_TOPOLOGY;
use appliance::testing::sim::{Fault, SimFabric};
use appliance::testing::volumes::SimVolumes;
use drivers::Fabric;

/// The sample pool, a tenant and system "s", and the simulated fabric under it.
struct Bench {
    state: State,
    sim: Arc<SimFabric>,
    volumes: Arc<SimVolumes>,
    drivers: Drivers,
}

impl Bench {
    fn new() -> Bench {
        let topology = appliance::topology::parse(SAMPLE_TOPOLOGY, Path::new("sample.toml"))
            .expect("the sample topology");
        let sim = Arc::new(SimFabric::new(&topology, 1));
        let volumes = Arc::new(SimVolumes::default());
        let mut bench = Bench {
            state: State::default(),
            drivers: Drivers {
                fabric: sim.clone(),
                host: sim.clone(),
                volumes: volumes.clone(),
                limits: ReconcileLimits::default(),
            },
            sim,
            volumes,
        };
        let inventory = topology.inventory();
        let mut events = Vec::new();
        for command in inventory_commands(&inventory, &bench.state, &Default::default()) {
            match command {
                Command::Observe(Observation::Port { port, switch, slot }) => {
                    events.push(Event::PortDiscovered { port, switch, slot })
                }
                Command::Observe(Observation::Device { facts }) => {
                    events.push(Event::DeviceDiscovered {
                        facts: Box::new(facts),
                    })
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        events.push(Event::TenantCreated {
            name: "t".into(),
            made: Made::default(),
        });
        events.push(Event::SystemCreated {
            name: "s".into(),
            tenant: "t".into(),
            role: Role::Workstation,
            made: Made::default(),
        });
        for event in events {
            bench.apply(event);
        }
        bench
    }

    fn apply(&mut self, event: Event) {
        let sequence = self.state.head + 1;
        self.state.apply(sequence, &event).expect("applies");
    }

    fn op(&self) -> Operation {
        let op = self
            .state
            .pending
            .values()
            .next()
            .expect("a pending operation");
        Operation::clone(op)
    }

    /// Journals a compose intent of `devices` and returns its operation.
    fn compose(&mut self, devices: &[(&str, u16)]) -> Operation {
        let devices = devices
            .iter()
            .map(|(d, p)| ((*d).into(), PortId(*p)))
            .collect();
        let op = self.state.next_operation;
        self.apply(Event::ComposeRequested {
            op,
            system: "s".into(),
            devices,
            made: Made::default(),
        });
        self.op()
    }

    /// Composes `devices` for real (executes and journals the outcome).
    fn composed(&mut self, devices: &[(&str, u16)]) {
        let op = self.compose(devices);
        let done = execute(&self.drivers, &self.state, &op);
        assert_eq!(done.result, Ok(()), "setting up: {done:?}");
        self.apply(Event::ComposeCompleted { op: op.id });
    }

    fn decompose(&mut self, devices: &[&str]) -> Operation {
        let op = self.state.next_operation;
        self.apply(Event::DecomposeRequested {
            op,
            system: "s".into(),
            devices: devices.iter().map(|d| (*d).into()).collect(),
            made: Made::default(),
        });
        self.op()
    }

    /// Journals a mount intent of `source` at `target` and returns its operation.
    fn mount(&mut self, source: MountSource, target: &str, filesystem: &str) -> Operation {
        let op = self.state.next_operation;
        let mount = MountSpec {
            source,
            target: target.into(),
            filesystem: filesystem.into(),
            options: String::new(),
        };
        self.apply(Event::MountRequested {
            op,
            system: "s".into(),
            mount: Box::new(mount),
            made: Made::default(),
        });
        self.op()
    }

    /// Mounts for real (executes and journals the outcome).
    fn mounted(&mut self, source: MountSource, target: &str, filesystem: &str) {
        let op = self.mount(source, target, filesystem);
        assert_eq!(self.run(&op).result, Ok(()), "setting up");
        self.apply(Event::MountCompleted { op: op.id });
    }

    /// Journals a failover intent of `from` to `to` at `port` and returns its operation.
    fn failover(&mut self, from: &str, to: &str, port: u16) -> Operation {
        let op = self.state.next_operation;
        self.apply(Event::FailoverRequested {
            op,
            system: "s".into(),
            from: from.into(),
            to: to.into(),
            port: PortId(port),
            made: Made::default(),
        });
        self.op()
    }

    fn run(&self, op: &Operation) -> Execution {
        execute(&self.drivers, &self.state, op)
    }

    /// The port the switch shows `device` attached to.
    fn port(&self, device: &str) -> Option<u16> {
        let inventory = self.sim.inventory().expect("inventory");
        inventory
            .devices
            .iter()
            .find(|d| d.id == device)
            .and_then(|d| d.attached_port)
    }
}

fn ends(execution: &Execution) -> Ends {
    match &execution.result {
        Ok(()) => Ends::Completed,
        Err(failure) => Ends::Failed(failure.code()),
    }
}

fn fault(sim: &SimFabric, fault: Fault) {
    sim.schedule(fault);
}

fn rule_1_device_free(b: &mut Bench) -> Ends {
    let op = b.compose(&[("gpu-0", 1), ("gpu-2", 2)]);
    let done = b.run(&op);
    assert_eq!(b.port("gpu-0"), Some(1), "{done:?}");
    // The first device attached, the compose went on to the second one.
    assert_eq!(b.sim.counters().attaches, 2);
    assert_eq!(b.port("gpu-2"), Some(2));
    Ends::Continues
}

fn rule_2_already_at_its_port(b: &mut Bench) -> Ends {
    b.sim.attach("gpu-0", 1).expect("attached before a restart");
    let op = b.compose(&[("gpu-0", 1)]);
    let done = b.run(&op);
    assert_eq!(done.result, Ok(()));
    assert_eq!(b.sim.counters().attaches, 1, "no second attach");
    assert!(b.sim.counters().binds >= 1, "bound all the same");
    Ends::Continues
}

fn rule_3_switch_refuses(b: &mut Bench) -> Ends {
    fault(
        &b.sim,
        Fault::RefuseAttach {
            device: "gpu-2".into(),
        },
    );
    let op = b.compose(&[("gpu-0", 1), ("gpu-2", 2)]);
    let done = b.run(&op);
    assert_eq!(b.port("gpu-0"), None, "rolled back: {done:?}");
    ends(&done)
}

fn rule_4_device_vanished(b: &mut Bench) -> Ends {
    fault(
        &b.sim,
        Fault::VanishOnAttach {
            device: "gpu-2".into(),
        },
    );
    let op = b.compose(&[("gpu-0", 1), ("gpu-2", 2)]);
    let done = b.run(&op);
    assert_eq!(b.port("gpu-0"), None, "rolled back: {done:?}");
    let vanished = Command::Observe(Observation::Vanished {
        device: "gpu-2".into(),
    });
    assert!(done.observations.contains(&vanished), "{done:?}");
    ends(&done)
}

fn rule_5_bind_times_out(b: &mut Bench) -> Ends {
    fault(
        &b.sim,
        Fault::BindTimeout {
            device: "gpu-2".into(),
        },
    );
    let op = b.compose(&[("gpu-0", 1), ("gpu-2", 2)]);
    let done = b.run(&op);
    assert_eq!((b.port("gpu-0"), b.port("gpu-2")), (None, None), "{done:?}");
    ends(&done)
}

fn rule_6_serial_differs(b: &mut Bench) -> Ends {
    fault(
        &b.sim,
        Fault::WrongSerial {
            device: "nvme-0".into(),
        },
    );
    let op = b.compose(&[("nvme-0", 3)]);
    let done = b.run(&op);
    assert_eq!(b.port("nvme-0"), None, "{done:?}");
    ends(&done)
}

fn rule_7_every_device_bound(b: &mut Bench) -> Ends {
    let op = b.compose(&[("gpu-0", 1), ("nvme-0", 3)]);
    let done = b.run(&op);
    assert_eq!((b.port("gpu-0"), b.port("nvme-0")), (Some(1), Some(3)));
    ends(&done)
}

fn rule_8_device_attached(b: &mut Bench) -> Ends {
    b.composed(&[("gpu-0", 1), ("gpu-2", 2)]);
    let op = b.decompose(&["gpu-0", "gpu-2"]);
    let done = b.run(&op);
    assert_eq!(done.result, Ok(()));
    assert_eq!(b.sim.counters().detaches, 2, "went on to the second device");
    Ends::Continues
}

fn rule_9_switch_no_longer_knows_it(b: &mut Bench) -> Ends {
    b.composed(&[("gpu-0", 1), ("gpu-2", 2)]);
    b.sim.vanish("gpu-0");
    let op = b.decompose(&["gpu-0", "gpu-2"]);
    let done = b.run(&op);
    assert_eq!(
        done.result,
        Ok(()),
        "the vanished device counts as detached"
    );
    assert_eq!(b.port("gpu-2"), None);
    Ends::Continues
}

fn rule_10_switch_refuses_the_detach(b: &mut Bench) -> Ends {
    b.composed(&[("gpu-0", 1), ("gpu-2", 2)]);
    fault(
        &b.sim,
        Fault::RefuseDetach {
            device: "gpu-2".into(),
        },
    );
    let op = b.decompose(&["gpu-0", "gpu-2"]);
    let done = b.run(&op);
    assert_eq!(
        (b.port("gpu-0"), b.port("gpu-2")),
        (Some(1), Some(2)),
        "gpu-0 attached again: {done:?}"
    );
    ends(&done)
}

fn rule_11_every_device_detached(b: &mut Bench) -> Ends {
    b.composed(&[("gpu-0", 1), ("nvme-0", 3)]);
    let op = b.decompose(&["gpu-0", "nvme-0"]);
    let done = b.run(&op);
    assert_eq!((b.port("gpu-0"), b.port("nvme-0")), (None, None));
    ends(&done)
}

fn failover(b: &mut Bench) -> Operation {
    b.composed(&[("gpu-0", 1)]);
    b.failover("gpu-0", "gpu-2", 2)
}

fn rule_12_failover_done(b: &mut Bench) -> Ends {
    let op = failover(b);
    let done = b.run(&op);
    assert_eq!((b.port("gpu-0"), b.port("gpu-2")), (None, Some(2)));
    ends(&done)
}

fn rule_13_replacement_fails(b: &mut Bench) -> Ends {
    let op = failover(b);
    fault(
        &b.sim,
        Fault::BindTimeout {
            device: "gpu-2".into(),
        },
    );
    let done = b.run(&op);
    assert_eq!(
        (b.port("gpu-0"), b.port("gpu-2")),
        (Some(1), None),
        "the old device stays: {done:?}"
    );
    ends(&done)
}

/// A switch that, like the QEMU bench's, refuses to detach a device no port holds.
struct StrictDetach(Arc<SimFabric>);

impl Fabric for StrictDetach {
    fn events(
        &self,
    ) -> Result<std::sync::mpsc::Receiver<drivers::FabricEvent>, drivers::FabricError> {
        self.0.events()
    }
    fn inventory(&self) -> Result<drivers::Inventory, drivers::FabricError> {
        self.0.inventory()
    }
    fn attach(&self, device: &str, port: u16) -> Result<(), drivers::FabricError> {
        self.0.attach(device, port)
    }
    fn detach(&self, device: &str, port: u16) -> Result<(), drivers::FabricError> {
        let inventory = self.0.inventory()?;
        let nowhere = inventory
            .devices
            .iter()
            .any(|d| d.id == device && d.attached_port.is_none());
        if nowhere {
            return Err(drivers::FabricError::Refused {
                operation: "detach",
                device: device.into(),
                port,
                reason: format!("port {port} holds nothing"),
            });
        }
        self.0.detach(device, port)
    }
}

fn rule_16_old_device_pulled(b: &mut Bench) -> Ends {
    let op = failover(b);
    // Pulled from its slot: the switch holds it at no port, and the slot is empty.
    b.sim.detach("gpu-0", 1).expect("pull gpu-0");
    b.drivers.fabric = Arc::new(StrictDetach(b.sim.clone()));
    let done = b.run(&op);
    assert_eq!(
        (b.port("gpu-0"), b.port("gpu-2")),
        (None, Some(2)),
        "{done:?}"
    );
    ends(&done)
}

fn mount(b: &mut Bench) -> Operation {
    b.composed(&[("nvme-0", 3)]);
    let source = MountSource::Namespace {
        device: DeviceId::from("nvme-0"),
        namespace: 1,
    };
    b.mount(source, "/mnt/scratch", "xfs")
}

fn rule_14_nvme_in_its_slot(b: &mut Bench) -> Ends {
    let op = mount(b);
    ends(&b.run(&op))
}

fn rule_15_nvme_not_in_its_slot(b: &mut Bench) -> Ends {
    let op = mount(b);
    b.sim.vanish("nvme-0");
    ends(&b.run(&op))
}

/// A mirror over nvme-0 and nvme-1 at /srv/projects, its intent journaled.
fn mirror_mount(b: &mut Bench) -> Operation {
    b.composed(&[("nvme-0", 3), ("nvme-1", 4)]);
    let source = MountSource::Mirror {
        devices: vec!["nvme-0".into(), "nvme-1".into()],
    };
    b.mount(source, "/srv/projects", "ext4")
}

fn rule_17_mirror_drives_in_their_slots(b: &mut Bench) -> Ends {
    let op = mirror_mount(b);
    let done = b.run(&op);
    let mounts = b.volumes.mounts();
    assert!(
        mounts.contains_key(Path::new("/srv/projects")),
        "{mounts:?}"
    );
    ends(&done)
}

fn rule_18_volumes_refuse(b: &mut Bench) -> Ends {
    let op = mirror_mount(b);
    b.volumes.refuse("mount");
    ends(&b.run(&op))
}

/// The mirror mounted, then a failover of nvme-0 to nvme-2 journaled.
fn mirror_failover(b: &mut Bench) -> Operation {
    let op = mirror_mount(b);
    assert_eq!(b.run(&op).result, Ok(()));
    b.apply(Event::MountCompleted { op: op.id });
    b.failover("nvme-0", "nvme-2", 1)
}

/// The simulated namespace of the device the switch shows at `port` (slot = port here).
fn namespace_at(port: u16) -> std::path::PathBuf {
    let address = appliance::testing::sim::address_of_slot(u32::from(port));
    appliance::testing::volumes::namespace_path(address, 1)
}

fn rule_19_mirror_member_replaced(b: &mut Bench) -> Ends {
    let op = mirror_failover(b);
    let done = b.run(&op);
    assert_eq!((b.port("nvme-0"), b.port("nvme-2")), (None, Some(1)));
    let members = b.volumes.members_with(&namespace_at(4));
    assert_eq!(
        members,
        Some(vec![namespace_at(4), namespace_at(1)]),
        "nvme-1 kept, nvme-2 added"
    );
    ends(&done)
}

fn rule_20_md_refuses_the_new_member(b: &mut Bench) -> Ends {
    let op = mirror_failover(b);
    b.volumes.refuse("add_member");
    let done = b.run(&op);
    assert_eq!(
        (b.port("nvme-0"), b.port("nvme-2")),
        (Some(3), None),
        "the replacement is detached: {done:?}"
    );
    ends(&done)
}

const SHELF_UUID: &str = "5e1f0a7c-2b4d-4c8e-9a61-0d3b7f2e8c15";

/// The shelf's filesystem mounted from behind hba-0, then a failover of hba-0 to hba-1
/// journaled.
fn hba_failover(b: &mut Bench) -> Operation {
    b.composed(&[("hba-0", 5)]);
    let source = MountSource::Disk {
        hba: "hba-0".into(),
        uuid: SHELF_UUID.into(),
    };
    b.mounted(source, "/srv/media", "ext4");
    b.failover("hba-0", "hba-1", 7)
}

fn rule_21_disk_mounted_from_the_standby(b: &mut Bench) -> Ends {
    let op = hba_failover(b);
    let done = b.run(&op);
    assert_eq!((b.port("hba-0"), b.port("hba-1")), (None, Some(7)));
    let address = appliance::testing::sim::address_of_slot(7);
    let behind_standby = format!("/dev/sim-disk-{:02x}-{SHELF_UUID}", address.bus);
    assert_eq!(
        b.volumes.mounts().get(Path::new("/srv/media")),
        Some(&behind_standby),
        "{done:?}"
    );
    ends(&done)
}

fn rule_22_no_filesystem_behind_the_standby(b: &mut Bench) -> Ends {
    let op = hba_failover(b);
    b.volumes.refuse("filesystem_behind");
    let done = b.run(&op);
    assert_eq!(
        (b.port("hba-0"), b.port("hba-1")),
        (Some(5), None),
        "the standby is detached: {done:?}"
    );
    ends(&done)
}

fn scenario(rule: u8) -> Ends {
    let mut bench = Bench::new();
    let b = &mut bench;
    match rule {
        1 => rule_1_device_free(b),
        2 => rule_2_already_at_its_port(b),
        3 => rule_3_switch_refuses(b),
        4 => rule_4_device_vanished(b),
        5 => rule_5_bind_times_out(b),
        6 => rule_6_serial_differs(b),
        7 => rule_7_every_device_bound(b),
        8 => rule_8_device_attached(b),
        9 => rule_9_switch_no_longer_knows_it(b),
        10 => rule_10_switch_refuses_the_detach(b),
        11 => rule_11_every_device_detached(b),
        12 => rule_12_failover_done(b),
        13 => rule_13_replacement_fails(b),
        14 => rule_14_nvme_in_its_slot(b),
        15 => rule_15_nvme_not_in_its_slot(b),
        16 => rule_16_old_device_pulled(b),
        17 => rule_17_mirror_drives_in_their_slots(b),
        18 => rule_18_volumes_refuse(b),
        19 => rule_19_mirror_member_replaced(b),
        20 => rule_20_md_refuses_the_new_member(b),
        21 => rule_21_disk_mounted_from_the_standby(b),
        22 => rule_22_no_filesystem_behind_the_standby(b),
        other => panic!("rule {other} has no scenario"),
    }
}

#[test]
fn every_rule_of_the_table_holds() {
    for rule in RULES {
        assert_eq!(
            scenario(rule.id),
            rule.ends,
            "rule {} ({} finds {})",
            rule.id,
            rule.operation,
            rule.finds
        );
    }
}

#[test]
fn an_operation_id_is_not_reused_by_a_scenario() {
    // The scenarios number operations from the State's own counter.
    let mut b = Bench::new();
    let first = b.compose(&[("gpu-0", 1)]);
    assert_eq!(first.id, OperationId(0));
}
