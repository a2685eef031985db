//! PCIe Advanced Error Reporting counters, as the kernel's AER driver keeps them in sysfs
//! (`aer_dev_fatal`, `aer_dev_nonfatal`: one `NAME COUNT` line per error type and a
//! `TOTAL_ERR_FATAL` / `TOTAL_ERR_NONFATAL` line, counted since the device was enumerated).
//!
//! A device in a hotplug slot is judged by its own counters and by its slot's port's (the
//! downstream or root port above it, the parent of its sysfs directory): an error on the link
//! to the slot is logged by the port, and QEMU's emulated NVMe and NICs have no AER capability
//! of their own. Correctable errors (`aer_dev_correctable`) are the link retrying and healing;
//! they are not read as a fault.

use std::collections::BTreeMap;
use std::path::Path;

use crate::sysfs;
use crate::PciAddress;

/// The uncorrectable error counts of one device (or one device and its port), by
/// `fatal:NAME` / `nonfatal:NAME`, totals left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AerCounts(BTreeMap<String, u64>);

impl AerCounts {
    /// Parses one `aer_dev_fatal` or `aer_dev_nonfatal` file into `self`, each name prefixed
    /// with `prefix`; a line that is not `NAME COUNT` is an error naming the line.
    pub fn add(&mut self, prefix: &str, text: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(name, count)| Some((name, count.trim().parse::<u64>().ok()?)));
            let Some((name, count)) = parsed else {
                return Err(format!("line {}: {line:?} is not `NAME COUNT`", number + 1));
            };
            if name.starts_with("TOTAL_ERR") {
                continue;
            }
            *self.0.entry(format!("{prefix}:{name}")).or_default() += count;
        }
        Ok(())
    }

    /// The error types whose count is higher than in `before`, as `nonfatal:TLP +1`; empty when
    /// none rose (a new device behind the same port starts its own counters at zero).
    pub fn rises_since(&self, before: &AerCounts) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, &count)| {
                let was = before.0.get(name).copied().unwrap_or(0);
                (count > was).then(|| format!("{name} +{}", count - was))
            })
            .collect()
    }
}

/// The uncorrectable error counts of the device at `address` and of its port, read under
/// `root`; `None` when the kernel keeps no AER counters for either (no AER driver, or neither
/// has the capability). `where_` in an error names the file.
pub fn read(root: &Path, address: PciAddress) -> Result<Option<AerCounts>, String> {
    let device = sysfs::under(root, "sys/bus/pci/devices").join(address.to_string());
    let mut dirs = vec![device.clone()];
    // The port is the parent of the device's real directory (/sys/devices/pci0000:00/
    // 0000:00:01.0/0000:01:00.0), when that parent is a PCI function.
    if let Some(port) = std::fs::canonicalize(&device)
        .ok()
        .and_then(|dir| dir.parent().map(Path::to_path_buf))
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<PciAddress>().is_ok())
        })
    {
        dirs.push(port);
    }
    let mut counts = AerCounts::default();
    let mut found = false;
    for dir in dirs {
        for (prefix, file) in [("fatal", "aer_dev_fatal"), ("nonfatal", "aer_dev_nonfatal")] {
            let path = dir.join(file);
            let Some(text) = sysfs::read_optional(&path).map_err(|e| e.to_string())? else {
                continue;
            };
            found = true;
            counts
                .add(prefix, &text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(found.then_some(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `aer_dev_nonfatal` after one poisoned TLP, in the format of Linux 6.1's AER stats
    /// attributes (the error names of drivers/pci/pcie/aer.c, then the total).
    const NONFATAL_AFTER_POISON: &str = "Undefined 0\nDLP 0\nSDES 0\nTLP 1\nFCP 0\nCmpltTO 0\n\
        CmpltAbrt 0\nUnxCmplt 0\nRxOF 0\nMalfTLP 0\nECRC 0\nUnsupReq 0\nACSViol 0\nUncorrIntErr 0\n\
        BlockedTLP 0\nAtomicOpBlocked 0\nTLPBlockedErr 0\nPoisonTLPBlocked 0\n\
        TOTAL_ERR_NONFATAL 1\n";

    #[test]
    fn a_rise_names_the_error_type_and_totals_are_not_counted_twice() {
        let mut before = AerCounts::default();
        before
            .add("nonfatal", &NONFATAL_AFTER_POISON.replace("TLP 1", "TLP 0"))
            .unwrap();
        let mut after = AerCounts::default();
        after.add("nonfatal", NONFATAL_AFTER_POISON).unwrap();
        assert_eq!(after.rises_since(&before), ["nonfatal:TLP +1"]);
        assert!(before.rises_since(&after).is_empty());
        assert!(after.rises_since(&after).is_empty());
    }

    #[test]
    fn a_malformed_line_is_an_error_that_names_it() {
        let mut counts = AerCounts::default();
        let error = counts.add("fatal", "DLP 0\nSDES lots\n").unwrap_err();
        assert_eq!(error, "line 2: \"SDES lots\" is not `NAME COUNT`");
    }

    #[test]
    fn the_port_above_the_device_is_read_with_it() {
        let root = tempfile::tempdir().unwrap();
        let port = root.path().join("sys/devices/pci0000:00/0000:00:01.0");
        let device = port.join("0000:01:00.0");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(port.join("aer_dev_nonfatal"), NONFATAL_AFTER_POISON).unwrap();
        std::fs::write(device.join("aer_dev_fatal"), "DLP 2\nTOTAL_ERR_FATAL 2\n").unwrap();
        let bus = root.path().join("sys/bus/pci/devices");
        std::fs::create_dir_all(&bus).unwrap();
        std::os::unix::fs::symlink(&device, bus.join("0000:01:00.0")).unwrap();
        let address: PciAddress = "0000:01:00.0".parse().unwrap();
        let counts = read(root.path(), address).unwrap().expect("counters");
        assert_eq!(
            counts.rises_since(&AerCounts::default()),
            ["fatal:DLP +2", "nonfatal:TLP +1"]
        );
        let elsewhere: PciAddress = "0000:02:00.0".parse().unwrap();
        std::fs::create_dir_all(bus.join("0000:02:00.0")).unwrap();
        assert_eq!(read(root.path(), elsewhere).unwrap(), None);
    }
}
