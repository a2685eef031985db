//! Prints the drivers' figures measurable on this machine's own kernel as JSON: a full PCI
//! enumeration (`pci_enumerate_us`, median of 200) and, when given an NVMe char device
//! (`host_figures /dev/nvme0`), `smart_uring_us` / `smart_ioctl_us` (median of 200, interleaved).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples = 200;
    let pci_us = drivers::selftest::pci_enumerate_us(Path::new("/"), samples)?;
    let devices = drivers::pci::PciBus::new(Path::new("/")).devices()?.len();
    let mut json = format!("{{\"pci_enumerate_us\": {pci_us}, \"pci_devices\": {devices}");
    if let Some(nvme) = std::env::args().nth(1) {
        let (uring_us, ioctl_us) = drivers::nvme::measure_smart_pair_us(Path::new(&nvme), samples)?;
        json.push_str(&format!(
            ", \"smart_uring_us\": {uring_us}, \"smart_ioctl_us\": {ioctl_us}"
        ));
    }
    println!("{json}}}");
    Ok(())
}
