//! The service process PID 1 forks: starts the appliance service (or the drivers' self-test),
//! prints the ready line, tells the supervisor through the ready pipe, and on SIGTERM shuts the
//! service down (journal durable) and exits.

use std::io::Write;
use std::os::fd::OwnedFd;

use nix::sys::signal::{SigSet, Signal};

use super::cmdline::{BootFlags, SelfTest};
use super::{say, sys, API_LISTEN};

/// What a started service reports for the ready line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyReport {
    pub journal_head: u64,
    pub replayed: u64,
}

/// The ready line, exactly as the bench and tests match it.
pub fn ready_line(report: ReadyReport, boot_ms: u64) -> String {
    format!(
        "APPLIANCE READY api=https://{API_LISTEN} journal_head={} replayed={} boot_ms={boot_ms}",
        report.journal_head, report.replayed
    )
}

/// Runs in the forked child; never returns.
pub fn run_child(flags: &BootFlags, ready_pipe: OwnedFd) -> ! {
    // A panic anywhere in the service kills the process, so the supervisor sees it and restarts.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    // The service's own warnings and errors go to the console too.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let code = match flags.selftest {
        Some(SelfTest::Drivers) => run_selftest(),
        None => serve(flags, ready_pipe),
    };
    std::process::exit(code)
}

fn serve(flags: &BootFlags, ready_pipe: OwnedFd) -> i32 {
    let running = match wiring::start(flags) {
        Ok(running) => running,
        Err(e) => {
            say(&format!("APPLIANCE SERVICE FAILED to start: {e:#}"));
            return 1;
        }
    };
    say(&ready_line(running.report(), sys::uptime_ms().unwrap_or(0)));
    let _ = std::fs::File::from(ready_pipe).write_all(b"ready\n");
    let mut stop = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        stop.add(signal);
    }
    let signal = stop.wait().map(|s| s.as_str()).unwrap_or("sigwait error");
    say(&format!("APPLIANCE SERVICE stopping on {signal}"));
    match running.shutdown() {
        Ok(()) => {
            say("APPLIANCE SERVICE stopped; journal durable");
            0
        }
        Err(e) => {
            say(&format!("APPLIANCE SERVICE shutdown failed: {e:#}"));
            2
        }
    }
}

fn run_selftest() -> i32 {
    match wiring::selftest(&mut std::io::stdout()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            say(&format!("SELFTEST FAIL setup {e:#}"));
            say("SELFTEST DONE passed=0 failed=1");
            1
        }
    }
}

/// The seam to the service and the drivers.
mod wiring {
    use std::path::Path;
    use std::sync::Arc;

    use anyhow::Context;
    use drivers::linux::LinuxHost;
    use drivers::serial_fabric::{SerialFabric, PORT_PATH};

    use super::super::provision::Provision;
    use super::super::{say, sys, API_LISTEN, DATA_DIR, DEVICE_POLL, DEVICE_WAIT, DEVICE_WAIT_MS};
    use super::BootFlags;
    use super::ReadyReport;
    use crate::api::redfish::tls::TlsSource;
    use crate::api::redfish::RedfishConfig;
    use crate::serve::{self, ApiDoor, FabricChoice, ServeOptions};

    /// The running service, as PID 1 sees it.
    #[derive(Debug)]
    pub struct Running(serve::Running);

    impl Running {
        pub fn report(&self) -> ReadyReport {
            let report = self.0.report();
            ReadyReport {
                journal_head: report.journal_head,
                replayed: report.events_replayed,
            }
        }

        /// Stops the service; the journal is durable when this returns Ok.
        pub fn shutdown(self) -> anyhow::Result<()> {
            self.0.shutdown()
        }
    }

    /// Starts the appliance service on the data disk, the bench's fabric link and this kernel.
    pub fn start(flags: &BootFlags) -> anyhow::Result<Running> {
        let port = Path::new(PORT_PATH);
        let sys_ports = Path::new("/sys/class/virtio-ports");
        let appeared = drivers::wait_until(DEVICE_WAIT, DEVICE_POLL, || {
            sys::link_virtio_ports(sys_ports, Path::new("/dev"));
            port.exists().then_some(())
        });
        if appeared.is_none() {
            anyhow::bail!("no fabric link: {PORT_PATH} did not appear within {DEVICE_WAIT_MS} ms (virtio-serial port fabric0)");
        }
        let fabric = SerialFabric::open(port)
            .with_context(|| format!("open the fabric link {PORT_PATH}"))?;
        let host = LinuxHost::new(Path::new("/")).context("open the host's PCI bus")?;
        let provision = Provision::new(Path::new(DATA_DIR));
        let options = ServeOptions {
            data_dir: DATA_DIR.into(),
            fabric: FabricChoice::Real {
                fabric: Arc::new(fabric),
                host: Arc::new(host),
                volumes: Arc::new(drivers::volume::LinuxVolumes::new(Path::new("/"))),
            },
            api: Some(api_door(&provision)?),
            identity: flags.identity.clone(),
            snapshots: !flags.ignore_snapshots,
            machine: Some(Arc::new(crate::pid1::machine::ApplianceMachine)),
        };
        let running = serve::start(options)?;
        if let Err(e) = provision.forget_password() {
            say(&format!(
                "APPLIANCE PROVISION the provisioned password was not removed: {e}"
            ));
        }
        if running.generated_admin_password().is_some() {
            say(&format!("APPLIANCE PROVISION no admin-password was provisioned: the account admin got a random password, in {DATA_DIR}/{}", crate::api::redfish::ADMIN_PASSWORD_FILE));
        }
        Ok(Running(running))
    }

    /// The HTTPS door on every address, with what the installer provisioned.
    fn api_door(provision: &Provision) -> anyhow::Result<ApiDoor> {
        let listen = API_LISTEN.parse().context("parse the API address")?;
        let mut config = RedfishConfig::new(listen, DATA_DIR.into());
        let provisioned = provision.read();
        for problem in &provisioned.problems {
            say(&format!("APPLIANCE PROVISION {problem}"));
        }
        if let Some((cert, key)) = provisioned.tls {
            config.tls = TlsSource::Files { cert, key };
        }
        Ok(ApiDoor {
            config,
            admin_password: provisioned.admin_password,
        })
    }

    /// The drivers' in-guest self-test; Ok(true) when every step passed.
    pub fn selftest(out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
        Ok(drivers::selftest::run_in_guest(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_has_the_agreed_shape() {
        let line = ready_line(
            ReadyReport {
                journal_head: 42,
                replayed: 7,
            },
            3100,
        );
        assert_eq!(
            line,
            "APPLIANCE READY api=https://0.0.0.0:443 journal_head=42 replayed=7 boot_ms=3100"
        );
    }
}
