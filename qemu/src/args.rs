//! Building the QEMU command line of the appliance VM: q35 with native-hotplug root ports (one per
//! fabric port), a virtual IOMMU, the data disk, the management NIC with the API's HTTPS port
//! forwarded, the i6300esb watchdog, the serial console, QMP, the fabric's virtio-serial link and
//! the backends of the pool devices (hot-added later by the switch).
//!
//! Every socket is a *client* chardev connecting to a listener the bench created before starting
//! QEMU, so no console output and no fabric request is lost between QEMU's start and the bench
//! connecting (a server chardev with `wait=off` drops what is written before the client comes).

use std::path::{Path, PathBuf};

use crate::topology::{BenchDevice, BenchTopology, DeviceKind};

/// Guest TCP port of the appliance's HTTPS API (Redfish).
pub const API_PORT_GUEST: u16 = 443;
/// MAC of the management NIC.
pub const MGMT_MAC: &str = "52:54:00:12:34:56";
/// Serial of the data disk, as PID 1 looks for it.
pub const DATA_DISK_SERIAL: &str = "appliance-data";

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// To the bench, which logs it to `console.log` and lets callers wait for lines.
    Captured,
    /// To the terminal (`-serial mon:stdio`; Ctrl-A X quits).
    Terminal,
}

/// Paths of the sockets and files of one VM, all inside its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
    pub qmp: PathBuf,
    pub console: PathBuf,
    pub console_log: PathBuf,
    pub fabric: PathBuf,
    pub pool: PathBuf,
    /// Where `qemu -- up` takes fault requests (`qemu -- fault`).
    pub faults: PathBuf,
    /// The front panel: the guest's second serial port (ttyS1), written to this file.
    pub panel: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
            qmp: dir.join("qmp.sock"),
            console: dir.join("console.sock"),
            console_log: dir.join("console.log"),
            fabric: dir.join("fabric.sock"),
            pool: dir.join("pool"),
            faults: dir.join("faults.sock"),
            panel: dir.join("panel.txt"),
        }
    }

    /// The sparse file behind a pool NVMe drive.
    pub fn pool_disk(&self, device_id: &str) -> PathBuf {
        self.pool.join(format!("{device_id}.img"))
    }
}

/// Everything the command line depends on, resolved (ports chosen, accelerator probed).
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: String,
    pub data_disk: &'a Path,
    pub topology: &'a BenchTopology,
    pub paths: &'a RunPaths,
    pub console: ConsoleMode,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The host's 127.0.0.1 port forwarded to the guest's API port.
    pub api_port_host: u16,
}

/// QEMU's id of the root port behind fabric port `port`.
pub fn root_port_id(port: u16) -> String {
    format!("rp{port}")
}

/// QEMU's id of a pool device once hot-added (its QOM path is /machine/peripheral/<id>).
pub fn pool_device_id(device_id: &str) -> String {
    format!("pool-{device_id}")
}

/// Node name of a pool NVMe drive's block backend.
pub fn pool_block_node(device_id: &str) -> String {
    format!("pool-{device_id}-blk")
}

/// Node name of a shelf disk's block backend (behind whichever HBA is attached).
pub fn shelf_block_node(disk_id: &str) -> String {
    format!("shelf-{disk_id}-blk")
}

/// QEMU's id of a shelf disk put behind HBA `hba` (a child of the HBA: it goes with it).
pub fn shelf_device_id(hba: &str, disk_id: &str) -> String {
    format!("pool-{hba}-{disk_id}")
}

/// Node name of the blkdebug filter under a pool NVMe drive (media-error injection).
pub fn pool_debug_node(device_id: &str) -> String {
    format!("pool-{device_id}-dbg")
}

/// Node name of the file under a pool NVMe drive.
pub fn pool_file_node(device_id: &str) -> String {
    format!("pool-{device_id}-file")
}

/// Id of a pool NIC's network backend.
pub fn pool_netdev_id(device_id: &str) -> String {
    format!("pool-{device_id}-net")
}

/// The argument vector (without the program name).
pub fn build(spec: &CommandSpec<'_>) -> Vec<String> {
    let mut args = machine_args(spec);
    args.extend(boot_args(spec));
    args.extend(root_port_args(spec.topology));
    args.extend(fixed_device_args(spec));
    args.extend(monitor_args(spec));
    for device in &spec.topology.devices {
        args.extend(pool_backend_args(device, spec.paths));
    }
    for disk in &spec.topology.disks {
        let file = spec.paths.pool_disk(&disk.id).display().to_string();
        let json = serde_json::json!({
            "driver": "raw",
            "node-name": shelf_block_node(&disk.id),
            "file": {"driver": "file", "filename": file},
        });
        args.extend(["-blockdev".to_string(), json.to_string()]);
    }
    args
}

fn machine_args(spec: &CommandSpec<'_>) -> Vec<String> {
    let (accel, cpu) = match spec.accel {
        Accel::Kvm => ("kvm", "host"),
        // RDRAND, as every server CPU has: the kernel's random pool is ready at boot instead of
        // after minutes of jitter collection under TCG (the appliance's TLS and sessions wait
        // for it).
        Accel::Tcg => ("tcg", "qemu64,+rdrand"),
    };
    strings(&[
        "-machine",
        // kernel-irqchip=split: the IOMMU's interrupt remapping (for vfio) needs the IOAPIC in
        // QEMU under KVM; TCG accepts and ignores it.
        "q35,kernel-irqchip=split",
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-m",
        &spec.memory_mib.to_string(),
        "-smp",
        &spec.cpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        // Native PCIe hotplug (pciehp) on the root ports instead of ACPI hotplug.
        "-global",
        "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
        // The IOMMU comes before every PCI device it translates for.
        "-device",
        "intel-iommu,intremap=on,caching-mode=on",
        "-action",
        "watchdog=reset",
    ])
}

fn boot_args(spec: &CommandSpec<'_>) -> Vec<String> {
    strings(&[
        "-kernel",
        &spec.kernel.display().to_string(),
        "-initrd",
        &spec.initramfs.display().to_string(),
        "-append",
        &spec.cmdline,
    ])
}

/// The prefetchable window each root port reserves (see `root_port_args`).
const PORT_PREFETCH_WINDOW: &str = "32M";

/// One `pcie-root-port` per fabric port; `chassis` = port id and `slot` = the port's slot make
/// every (chassis, slot) pair unique and name `/sys/bus/pci/slots/<slot>` in the guest. Each
/// port asks the firmware for a prefetchable window of `PORT_PREFETCH_WINDOW` below 4 GiB (as a
/// real switch's BIOS pads its hotplug ports): an empty port gets only 2 MiB otherwise, too small
/// for a GPU's 16 MiB BAR, and the guest kernel then has to find the window a new place at
/// hot-add ("can't assign; no space", then a second try).
fn root_port_args(topology: &BenchTopology) -> Vec<String> {
    let mut args = Vec::new();
    for port in &topology.ports {
        args.push("-device".to_string());
        args.push(format!(
            "pcie-root-port,id={},bus=pcie.0,chassis={},slot={},pref32-reserve={PORT_PREFETCH_WINDOW}",
            root_port_id(port.id),
            port.id,
            port.slot
        ));
    }
    args
}

fn fixed_device_args(spec: &CommandSpec<'_>) -> Vec<String> {
    let data = spec.data_disk.display().to_string().replace(',', ",,");
    strings(&[
        "-drive",
        &format!("file={data},format=raw,if=none,id=data,cache=writeback"),
        "-device",
        &format!("virtio-blk-pci,drive=data,serial={DATA_DISK_SERIAL}"),
        "-netdev",
        &format!(
            "user,id=mgmt,net=10.0.2.0/24,host=10.0.2.2,hostfwd=tcp:127.0.0.1:{}-:{API_PORT_GUEST}",
            spec.api_port_host
        ),
        "-device",
        &format!("virtio-net-pci,netdev=mgmt,mac={MGMT_MAC}"),
        "-device",
        "i6300esb",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        &format!("socket,id=fab0,path={}", spec.paths.fabric.display()),
        "-device",
        "virtserialport,bus=vser0.0,chardev=fab0,name=fabric0",
    ])
}

fn monitor_args(spec: &CommandSpec<'_>) -> Vec<String> {
    let mut args = strings(&[
        "-chardev",
        &format!("socket,id=qmp0,path={}", spec.paths.qmp.display()),
        "-mon",
        "chardev=qmp0,mode=control",
    ]);
    match spec.console {
        ConsoleMode::Captured => args.extend(strings(&[
            "-chardev",
            &format!("socket,id=con0,path={}", spec.paths.console.display()),
            "-serial",
            "chardev:con0",
        ])),
        ConsoleMode::Terminal => args.extend(strings(&["-serial", "mon:stdio"])),
    }
    // The front panel's serial line, after the console's: the guest's ttyS1.
    let panel = spec.paths.panel.display().to_string().replace(',', ",,");
    args.extend(strings(&[
        "-chardev",
        &format!("file,id=panel0,path={panel}"),
        "-serial",
        "chardev:panel0",
    ]));
    args
}

/// Backends of a pool device, defined at start so the switch's `device_add` only names them.
/// An NVMe drive is raw over blkdebug over its file, so media errors can be injected later.
fn pool_backend_args(device: &BenchDevice, paths: &RunPaths) -> Vec<String> {
    let id = &device.pool.id;
    match device.kind {
        DeviceKind::Nvme => {
            let file = paths.pool_disk(id).display().to_string().replace(',', ",,");
            let json = serde_json::json!({
                "driver": "raw",
                "node-name": pool_block_node(id),
                "file": {
                    "driver": "blkdebug",
                    "node-name": pool_debug_node(id),
                    "image": {"driver": "file", "node-name": pool_file_node(id), "filename": file},
                },
            });
            vec!["-blockdev".to_string(), json.to_string()]
        }
        DeviceKind::Nic => strings(&[
            "-netdev",
            &format!("user,id={},restrict=on", pool_netdev_id(id)),
        ]),
        DeviceKind::Gpu | DeviceKind::Hba => Vec::new(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_args(console: ConsoleMode, accel: Accel) -> Vec<String> {
        let topology = BenchTopology::sample();
        let paths = RunPaths::new(Path::new("/run/vm"));
        let spec = CommandSpec {
            kernel: Path::new("/img/vmlinuz"),
            initramfs: Path::new("/img/initramfs.cpio"),
            cmdline: "console=ttyS0 appliance.x=1".into(),
            data_disk: Path::new("/img/data,1.img"),
            topology: &topology,
            paths: &paths,
            console,
            accel,
            memory_mib: 1024,
            cpus: 2,
            api_port_host: 40123,
        };
        build(&spec)
    }

    fn value_after<'a>(args: &'a [String], flag: &str, containing: &str) -> Option<&'a str> {
        args.windows(2)
            .find(|w| w[0] == flag && w[1].contains(containing))
            .map(|w| w[1].as_str())
    }

    #[test]
    fn one_root_port_per_fabric_port_with_unique_slots() {
        let args = spec_args(ConsoleMode::Captured, Accel::Tcg);
        let ports: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("pcie-root-port"))
            .collect();
        assert_eq!(ports.len(), 4);
        assert_eq!(
            ports[0],
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,pref32-reserve=32M"
        );
        assert_eq!(
            ports[3],
            "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4,pref32-reserve=32M"
        );
    }

    #[test]
    fn native_hotplug_iommu_and_watchdog() {
        let args = spec_args(ConsoleMode::Captured, Accel::Tcg);
        assert!(
            value_after(&args, "-global", "acpi-pci-hotplug-with-bridge-support=off").is_some()
        );
        assert_eq!(value_after(&args, "-accel", ""), Some("tcg"));
        assert_eq!(value_after(&args, "-action", ""), Some("watchdog=reset"));
        assert!(value_after(&args, "-device", "i6300esb").is_some());
        let iommu = args
            .iter()
            .position(|a| a.starts_with("intel-iommu"))
            .unwrap();
        let first_pci = args
            .iter()
            .position(|a| a.starts_with("pcie-root-port"))
            .unwrap();
        assert!(
            iommu < first_pci,
            "the IOMMU must be created before the PCI devices"
        );
    }

    #[test]
    fn data_disk_management_nic_and_fabric_link() {
        let args = spec_args(ConsoleMode::Captured, Accel::Kvm);
        assert_eq!(value_after(&args, "-accel", ""), Some("kvm"));
        assert_eq!(
            value_after(&args, "-drive", "id=data"),
            Some("file=/img/data,,1.img,format=raw,if=none,id=data,cache=writeback")
        );
        assert!(value_after(&args, "-device", "serial=appliance-data").is_some());
        let netdev = value_after(&args, "-netdev", "id=mgmt").unwrap();
        assert!(
            netdev.contains("hostfwd=tcp:127.0.0.1:40123-:443"),
            "{netdev}"
        );
        assert!(value_after(&args, "-device", "mac=52:54:00:12:34:56").is_some());
        assert_eq!(
            value_after(&args, "-chardev", "id=fab0"),
            Some("socket,id=fab0,path=/run/vm/fabric.sock")
        );
        assert!(value_after(&args, "-device", "name=fabric0").is_some());
        assert_eq!(
            value_after(&args, "-append", ""),
            Some("console=ttyS0 appliance.x=1")
        );
    }

    #[test]
    fn console_goes_to_the_bench_or_the_terminal() {
        let captured = spec_args(ConsoleMode::Captured, Accel::Tcg);
        assert_eq!(value_after(&captured, "-serial", ""), Some("chardev:con0"));
        let terminal = spec_args(ConsoleMode::Terminal, Accel::Tcg);
        assert_eq!(value_after(&terminal, "-serial", ""), Some("mon:stdio"));
        assert!(value_after(&terminal, "-chardev", "id=con0").is_none());
    }

    #[test]
    fn pool_backends_are_defined_up_front() {
        let args = spec_args(ConsoleMode::Captured, Accel::Tcg);
        let blockdev = value_after(&args, "-blockdev", "pool-nvme-0-blk").unwrap();
        let json: serde_json::Value = serde_json::from_str(blockdev).unwrap();
        assert_eq!(json["file"]["driver"], "blkdebug");
        assert_eq!(json["file"]["image"]["filename"], "/run/vm/pool/nvme-0.img");
        assert!(value_after(&args, "-netdev", "id=pool-nic-0-net").is_some());
    }
}
