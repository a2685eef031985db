//! The kernel command line flags PID 1 understands (`appliance.*`); everything else is ignored.

/// Errors of reading the `appliance.*` flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line flag {flag}={value:?}: {reason}")]
    ParseFlag {
        flag: String,
        value: String,
        reason: String,
    },
}

/// What the kernel command line asks of PID 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFlags {
    /// `appliance.selftest=drivers`: run the drivers' in-guest self-test instead of serving.
    pub selftest: Option<SelfTest>,
    /// `appliance.test_hang_watchdog=1`: stop feeding the watchdog after ready (test only).
    pub test_hang_watchdog: bool,
    /// `appliance.test_kill_console=1`: kill the console's process once per data disk, 3 s
    /// after it first started, as a crash would (test only: the supervisor's restart of it is
    /// what is tested).
    pub test_kill_console: bool,
    /// `appliance.snapshots=off`: ignore the journal's snapshots at start and replay the whole
    /// journal (the bench measures replay this way); `on` is the default.
    pub ignore_snapshots: bool,
    /// `appliance.id=ID appliance.site=SITE`: the appliance's identity (the installer's, or the
    /// QEMU bench's from its topology), journaled when State holds another; both or neither.
    pub identity: Option<crate::model::Identity>,
    /// `appliance.panel=ttyS1`: the front panel is the character display on /dev/ttyS1; PID 1
    /// keeps `appliance console --panel` running on it beside the service.
    pub panel: Option<String>,
    /// `appliance.console=on`: PID 1 keeps the full-screen console on the serial console beside
    /// the service (`off`, the default: the serial console shows the boot's and the service's
    /// lines only, for the machines that read it, such as the end-to-end tests).
    pub console: bool,
}

/// Which self-test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTest {
    Drivers,
}

/// Parses `/proc/cmdline`. Unknown `appliance.*` flags are errors (a typo in a test flag must not
/// silently boot a normal appliance); other kernel parameters are ignored.
pub fn parse(cmdline: &str) -> Result<BootFlags, CmdlineError> {
    let mut flags = BootFlags::default();
    let (mut id, mut site) = (None, None);
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("appliance.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let bad = |reason: &str| CmdlineError::ParseFlag {
            flag: format!("appliance.{key}"),
            value: value.into(),
            reason: reason.into(),
        };
        match key {
            "selftest" => match value {
                "drivers" => flags.selftest = Some(SelfTest::Drivers),
                _ => return Err(bad("the only self-test is `drivers`")),
            },
            "test_hang_watchdog" | "test_kill_console" => {
                let on = match value {
                    "1" | "" => true,
                    "0" => false,
                    _ => return Err(bad("expected 0 or 1")),
                };
                match key {
                    "test_hang_watchdog" => flags.test_hang_watchdog = on,
                    _ => flags.test_kill_console = on,
                }
            }
            "snapshots" => {
                flags.ignore_snapshots = match value {
                    "off" => true,
                    "on" => false,
                    _ => return Err(bad("expected on or off")),
                }
            }
            "id" | "site" => {
                if !crate::model::domain::valid_name(value) {
                    return Err(bad("expected a name: printable, no spaces, not empty"));
                }
                let slot = if key == "id" { &mut id } else { &mut site };
                *slot = Some(value.to_string());
            }
            "console" => {
                flags.console = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("expected on or off")),
                }
            }
            "panel" => {
                let name_ok = !value.is_empty()
                    && value.len() <= 32
                    && value.bytes().all(|b| b.is_ascii_alphanumeric());
                if !name_ok {
                    return Err(bad("expected a device name under /dev, such as ttyS1"));
                }
                flags.panel = Some(format!("/dev/{value}"));
            }
            _ => return Err(bad("unknown appliance flag")),
        }
    }
    flags.identity = match (id, site) {
        (Some(appliance_id), Some(site)) => Some(crate::model::Identity { appliance_id, site }),
        (None, None) => None,
        (Some(id), None) => {
            return Err(CmdlineError::ParseFlag {
                flag: "appliance.id".into(),
                value: id,
                reason: "appliance.site must be given with it".into(),
            })
        }
        (None, Some(site)) => {
            return Err(CmdlineError::ParseFlag {
                flag: "appliance.site".into(),
                value: site,
                reason: "appliance.id must be given with it".into(),
            })
        }
    };
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cmdline_is_a_normal_boot() {
        let flags = parse("console=ttyS0 panic=1 intel_iommu=on\n").unwrap();
        assert_eq!(flags, BootFlags::default());
    }

    #[test]
    fn test_flags_are_read() {
        let flags =
            parse("console=ttyS0 appliance.selftest=drivers appliance.test_hang_watchdog=1")
                .unwrap();
        assert_eq!(flags.selftest, Some(SelfTest::Drivers));
        assert!(flags.test_hang_watchdog);
        assert!(
            !parse("appliance.test_hang_watchdog=0")
                .unwrap()
                .test_hang_watchdog
        );
        assert!(!flags.test_kill_console);
        assert!(
            parse("appliance.test_kill_console=1")
                .unwrap()
                .test_kill_console
        );
        assert!(parse("appliance.test_kill_console=yes").is_err());
    }

    #[test]
    fn snapshots_can_be_turned_off() {
        assert!(
            parse("console=ttyS0 appliance.snapshots=off")
                .unwrap()
                .ignore_snapshots
        );
        assert!(!parse("appliance.snapshots=on").unwrap().ignore_snapshots);
        let err = parse("appliance.snapshots=no").unwrap_err().to_string();
        assert!(
            err.contains("appliance.snapshots") && err.contains("expected on or off"),
            "{err}"
        );
        let err = parse("appliance.snapshots").unwrap_err().to_string();
        assert!(err.contains("appliance.snapshots"), "{err}");
    }

    #[test]
    fn identity_comes_in_pairs() {
        let flags = parse("appliance.id=studio-a1 appliance.site=london").unwrap();
        let identity = flags.identity.expect("an identity");
        assert_eq!(
            (identity.appliance_id.as_str(), identity.site.as_str()),
            ("studio-a1", "london")
        );
        let err = parse("appliance.id=studio-a1").unwrap_err().to_string();
        assert!(err.contains("appliance.site must be given"), "{err}");
        let err = parse("appliance.id= appliance.site=x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("appliance.id") && err.contains("expected a name"),
            "{err}"
        );
    }

    #[test]
    fn unknown_or_bad_flags_are_refused_by_name() {
        let err = parse("appliance.selftest=nvme").unwrap_err().to_string();
        assert!(
            err.contains("appliance.selftest") && err.contains("nvme"),
            "{err}"
        );
        let err = parse("appliance.test_hang_watchdg=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("appliance.test_hang_watchdg"), "{err}");
        let err = parse("appliance.test_hang_watchdog=yes")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 0 or 1"), "{err}");
    }

    #[test]
    fn the_panel_is_a_device_under_dev() {
        let flags = parse("console=ttyS0 appliance.panel=ttyS1").unwrap();
        assert_eq!(flags.panel.as_deref(), Some("/dev/ttyS1"));
        for bad in [
            "appliance.panel=../sda",
            "appliance.panel=",
            "appliance.panel=tty/S1",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("a device name under /dev"), "{bad}: {err}");
        }
    }
}
