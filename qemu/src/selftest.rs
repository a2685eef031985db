//! The host side of the drivers' in-guest self-test (`appliance.selftest=drivers`): reads the
//! `SELFTEST` console lines of `drivers::selftest::run_in_guest`, answers each `SELFTEST WAIT`
//! through QMP, and collects the `FIGURE`s and the `DONE passed=N failed=M` counts.

use std::collections::BTreeMap;
use std::time::Instant;

use drivers::selftest::{
    SELFTEST_CRITICAL_WARNING, SELFTEST_DEVICE_ID, SELFTEST_DRIVE_BYTES, SELFTEST_NETDEV_ID,
    SELFTEST_SERIAL,
};
use serde_json::{json, Map};

use crate::{ConsoleError, QmpError, Vm, VmError};

/// The kernel command line that makes PID 1 run the drivers' self-test.
pub const SELFTEST_CMDLINE: &str = "appliance.selftest=drivers";
/// QEMU's block node behind the hot-added NVMe.
pub const DRIVE_NODE: &str = "selftest-blk";
/// The file of that node, in the VM's run directory.
pub const DRIVE_FILE: &str = "selftest-nvme.img";
/// SELFTEST lines kept at most (the guest prints a few dozen; fixtures a few thousand).
pub const LINES_MAX: usize = 100_000;

/// Errors of the self-test driver.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("wait for a SELFTEST WAIT or DONE line")]
    WaitLine(#[source] ConsoleError),
    #[error("the guest asked for {wait:?}, which the host does not know")]
    ParseWait { wait: String },
    #[error("parse the figure line {line:?}: value {value:?} is not a number")]
    ParseFigure { line: String, value: String },
    #[error("parse the DONE line {line:?}: expected `SELFTEST DONE passed=N failed=M`")]
    ParseDone { line: String },
    #[error("create the self-test drive {path}")]
    CreateDrive {
        path: String,
        #[source]
        source: VmError,
    },
    #[error("answer {wait:?} through QMP")]
    Answer {
        wait: String,
        #[source]
        source: QmpError,
    },
}

/// One host action a `SELFTEST WAIT` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Hot-add the self-test NVMe (id and serial from `drivers::selftest`).
    AddNvme,
    /// Set its `smart_critical_warning` property.
    CriticalWarning,
    /// Hot-remove it.
    RemoveNvme,
    /// `set_link` of the management NIC.
    SetLink { up: bool },
}

/// What the self-test reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SelftestOutcome {
    pub passed: u64,
    pub failed: u64,
    /// `SELFTEST FIGURE name value`, by name.
    pub figures: BTreeMap<String, f64>,
    /// Every SELFTEST line, from "SELFTEST" on.
    pub lines: Vec<String>,
}

/// The text from "SELFTEST " on (the console may prefix kernel output on the same line).
pub fn selftest_part(line: &str) -> Option<&str> {
    line.find("SELFTEST ").map(|at| &line[at..])
}

/// Parses the action of a WAIT line (the text after `SELFTEST WAIT `).
pub fn parse_wait(wait: &str) -> Result<Wait, SelftestError> {
    let wait = wait.trim();
    let add = format!("device_add nvme id={SELFTEST_DEVICE_ID} serial={SELFTEST_SERIAL}");
    let qom =
        format!("qom-set {SELFTEST_DEVICE_ID} smart_critical_warning={SELFTEST_CRITICAL_WARNING}");
    let del = format!("device_del {SELFTEST_DEVICE_ID}");
    let unknown = || SelftestError::ParseWait { wait: wait.into() };
    if wait == add {
        return Ok(Wait::AddNvme);
    }
    if wait == qom {
        return Ok(Wait::CriticalWarning);
    }
    if wait == del {
        return Ok(Wait::RemoveNvme);
    }
    let rest = wait.strip_prefix("set_link ").ok_or_else(unknown)?;
    match rest.split_once(' ') {
        Some((SELFTEST_NETDEV_ID, "off")) => Ok(Wait::SetLink { up: false }),
        Some((SELFTEST_NETDEV_ID, "on")) => Ok(Wait::SetLink { up: true }),
        _ => Err(unknown()),
    }
}

/// `Some((name, value))` for a `SELFTEST FIGURE name value` line, `None` for other lines.
pub fn parse_figure(line: &str) -> Option<Result<(String, f64), SelftestError>> {
    let mut words = selftest_part(line)?.split_whitespace().skip(1);
    let (Some("FIGURE"), Some(name), Some(value)) = (words.next(), words.next(), words.next())
    else {
        return None;
    };
    Some(match value.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((name.to_string(), v)),
        _ => Err(SelftestError::ParseFigure {
            line: line.into(),
            value: value.into(),
        }),
    })
}

/// `(passed, failed)` of a `SELFTEST DONE passed=N failed=M` line.
pub fn parse_done(line: &str) -> Result<(u64, u64), SelftestError> {
    let bad = || SelftestError::ParseDone { line: line.into() };
    let rest = selftest_part(line)
        .and_then(|p| p.strip_prefix("SELFTEST DONE "))
        .ok_or_else(bad)?;
    let mut words = rest.split_whitespace();
    let count = |word: Option<&str>, key: &str| {
        word.and_then(|w| w.strip_prefix(key))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let passed = count(words.next(), "passed=").ok_or_else(bad)?;
    let failed = count(words.next(), "failed=").ok_or_else(bad)?;
    if words.next().is_some() {
        return Err(bad());
    }
    Ok((passed, failed))
}

/// Collects the outcome from the SELFTEST lines and the DONE line.
pub fn outcome(lines: Vec<String>, done: &str) -> Result<SelftestOutcome, SelftestError> {
    let (passed, failed) = parse_done(done)?;
    let mut figures = BTreeMap::new();
    for line in &lines {
        if let Some(figure) = parse_figure(line) {
            let (name, value) = figure?;
            figures.insert(name, value);
        }
    }
    Ok(SelftestOutcome {
        passed,
        failed,
        figures,
        lines,
    })
}

/// Performs `wait` on `vm`; the NVMe goes on root port `root_port` (QEMU id, e.g. `rp7`).
pub fn answer(vm: &Vm, root_port: &str, wait: &Wait) -> Result<(), SelftestError> {
    let qmp = vm.qmp();
    let failed = |source| SelftestError::Answer {
        wait: format!("{wait:?}"),
        source,
    };
    match wait {
        Wait::AddNvme => {
            add_drive(vm)?;
            let mut properties = Map::new();
            properties.insert("id".into(), SELFTEST_DEVICE_ID.into());
            properties.insert("serial".into(), SELFTEST_SERIAL.into());
            properties.insert("drive".into(), DRIVE_NODE.into());
            properties.insert("bus".into(), root_port.into());
            qmp.device_add("nvme", properties).map_err(failed)
        }
        Wait::CriticalWarning => {
            let path = format!("/machine/peripheral/{SELFTEST_DEVICE_ID}");
            let value = json!(SELFTEST_CRITICAL_WARNING);
            qmp.qom_set(&path, "smart_critical_warning", value)
                .map_err(failed)
        }
        Wait::RemoveNvme => qmp.device_del(SELFTEST_DEVICE_ID, None).map_err(failed),
        Wait::SetLink { up } => qmp.set_link(SELFTEST_NETDEV_ID, *up).map_err(failed),
    }
}

/// Creates the drive file in the run directory and its QEMU block node.
fn add_drive(vm: &Vm) -> Result<(), SelftestError> {
    let drive = vm.paths().dir.join(DRIVE_FILE);
    crate::vm::create_sparse(&drive, SELFTEST_DRIVE_BYTES).map_err(|source| {
        SelftestError::CreateDrive {
            path: drive.display().to_string(),
            source,
        }
    })?;
    let file = json!({"driver": "file", "filename": drive.display().to_string()});
    let node = json!({"driver": "raw", "node-name": DRIVE_NODE, "file": file});
    vm.qmp()
        .execute("blockdev-add", node)
        .map(|_| ())
        .map_err(|source| SelftestError::Answer {
            wait: format!("blockdev-add {DRIVE_NODE}"),
            source,
        })
}

/// Drives the self-test of a VM booted with [`SELFTEST_CMDLINE`] until its DONE line or
/// `deadline`, answering each WAIT; the NVMe is hot-added on root port `root_port`.
#[tracing::instrument(skip(vm))]
pub fn run_driver_selftest(
    vm: &Vm,
    root_port: &str,
    deadline: Instant,
) -> Result<SelftestOutcome, SelftestError> {
    let is_event = |l: &str| {
        selftest_part(l)
            .is_some_and(|p| p.starts_with("SELFTEST WAIT ") || p.starts_with("SELFTEST DONE"))
    };
    let mut from = 0;
    let done = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = vm
            .console()
            .wait_for_line_matching(from, is_event, "SELFTEST WAIT or DONE", left)
            .map_err(SelftestError::WaitLine)?;
        from = at + 1;
        let part = selftest_part(&line).unwrap_or_default();
        if part.starts_with("SELFTEST DONE") {
            break part.to_string();
        }
        let wait = parse_wait(part.trim_start_matches("SELFTEST WAIT "))?;
        tracing::info!(?wait, "answering the guest");
        answer(vm, root_port, &wait)?;
    };
    let lines = vm
        .console()
        .lines()
        .iter()
        .filter_map(|l| selftest_part(l).map(String::from))
        .take(LINES_MAX)
        .collect();
    outcome(lines, &done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_line_of_the_guest_is_understood() {
        let add = format!("device_add nvme id={SELFTEST_DEVICE_ID} serial={SELFTEST_SERIAL}");
        assert_eq!(parse_wait(&add).unwrap(), Wait::AddNvme);
        let qom = format!(
            "qom-set {SELFTEST_DEVICE_ID} smart_critical_warning={SELFTEST_CRITICAL_WARNING}"
        );
        assert_eq!(parse_wait(&qom).unwrap(), Wait::CriticalWarning);
        let del = format!("device_del {SELFTEST_DEVICE_ID} ");
        assert_eq!(parse_wait(&del).unwrap(), Wait::RemoveNvme);
        let off = format!("set_link {SELFTEST_NETDEV_ID} off");
        assert_eq!(parse_wait(&off).unwrap(), Wait::SetLink { up: false });
        let on = format!("set_link {SELFTEST_NETDEV_ID} on");
        assert_eq!(parse_wait(&on).unwrap(), Wait::SetLink { up: true });
    }

    #[test]
    fn unknown_waits_are_errors_naming_the_line() {
        for wait in [
            "device_add nvme id=other serial=X",
            "set_link other off",
            "set_link mgmt sideways",
            "reboot",
        ] {
            let err = parse_wait(wait).unwrap_err();
            assert!(err.to_string().contains(wait), "{err}");
        }
    }

    #[test]
    fn figures_are_read_behind_kernel_output() {
        let line = "[   20.1] eth0: up SELFTEST FIGURE smart_uring_us 41.5";
        let (name, value) = parse_figure(line).unwrap().unwrap();
        assert_eq!((name.as_str(), value), ("smart_uring_us", 41.5));
        assert!(parse_figure("SELFTEST PASS nvme_smart ok").is_none());
        assert!(parse_figure("SELFTEST FIGURE lonely").is_none());
        let err = parse_figure("SELFTEST FIGURE x 12ms").unwrap().unwrap_err();
        assert!(err.to_string().contains("12ms"), "{err}");
        assert!(parse_figure("SELFTEST FIGURE x NaN").unwrap().is_err());
    }

    #[test]
    fn done_line_counts_are_parsed_and_bad_ones_rejected() {
        assert_eq!(
            parse_done("SELFTEST DONE passed=12 failed=0").unwrap(),
            (12, 0)
        );
        for bad in [
            "SELFTEST DONE",
            "SELFTEST DONE passed=x failed=0",
            "SELFTEST DONE failed=0 passed=1",
            "SELFTEST DONE passed=1 failed=0 extra",
        ] {
            assert!(parse_done(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcome_gathers_figures_and_counts() {
        let lines: Vec<String> = [
            "SELFTEST STEP pci_enumerate",
            "SELFTEST FIGURE pci_enumerate_us 900",
            "SELFTEST PASS pci_enumerate 3 devices",
            "SELFTEST FAIL rdma_rxe no module",
            "SELFTEST FIGURE hotplug_visible_ms 120",
            "SELFTEST DONE passed=1 failed=1",
        ]
        .map(String::from)
        .to_vec();
        let got = outcome(lines.clone(), &lines[5]).unwrap();
        assert_eq!((got.passed, got.failed), (1, 1));
        assert_eq!(got.figures.len(), 2);
        assert_eq!(got.figures["pci_enumerate_us"], 900.0);
        assert_eq!(got.figures["hotplug_visible_ms"], 120.0);
        assert_eq!(got.lines, lines);
    }
}
