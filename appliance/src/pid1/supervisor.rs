//! PID 1's supervisor loop: one `poll` over the signalfd (SIGCHLD, SIGTERM, SIGINT, SIGPWR), the
//! power button and the service's ready pipe; feeds the watchdog; reaps every child; restarts a
//! failed service with backoff; shuts down cleanly. Stays single-threaded so that `fork` is safe.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use drivers::error_chain;
use drivers::watchdog::Watchdog;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::cmdline::BootFlags;
use super::restart::{Decision, RestartPolicy};
use super::{say, service, sys, DataDisk, DATA_DIR, WATCHDOG_TIMEOUT_S};

/// How long the service gets to shut down (journal durable) before PID 1 powers off anyway.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Marker file on the data disk: the test-only watchdog hang has happened.
pub const TEST_HANG_MARKER: &str = "pid1-test-hang-watchdog.done";
/// Marker file on the data disk: the test-only kill of the console has happened.
pub const TEST_KILL_CONSOLE_MARKER: &str = "pid1-test-kill-console.done";
/// The loop wakes at least this often (restart timers, shutdown deadline, watchdog feeding).
const POLL_INTERVAL_MS: u64 = 500;
const _: () = assert!(POLL_INTERVAL_MS * 4 <= WATCHDOG_TIMEOUT_S as u64 * 1000);

/// What the boot stages hand the supervisor.
#[derive(Debug)]
pub struct Context {
    pub flags: BootFlags,
    pub signals: SignalFd,
    pub data: DataDisk,
    pub watchdog: Option<Watchdog>,
}

/// The signals PID 1 handles; blocked in every thread and process it starts, read via signalfd.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        REBOOT_SIGNAL,
        POWER_OFF_SIGNAL,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the handled signals and opens the signalfd; ctrl-alt-del becomes SIGINT to PID 1.
pub fn block_signals() -> SignalFd {
    let set = handled();
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        reboot_hopeless(&format!("sigprocmask: {e}"));
    }
    let _ = nix::sys::reboot::set_cad_enabled(false);
    match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => reboot_hopeless(&format!("signalfd: {e}")),
    }
}

struct Service {
    pid: Pid,
    started: Instant,
    ready_pipe: Option<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Waiting to restart the service at this instant.
    Restarting(Instant),
    /// No service will run (refused data disk, finished self-test).
    Idle,
    /// Stopping the service (until the deadline), then the machine as asked.
    ShuttingDown(Instant, Stop),
}

/// What PID 1 does once the service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    PowerOff,
    Reboot,
}

/// The signal the service sends PID 1 for an operator's reboot (power off is SIGUSR2; SIGTERM,
/// SIGINT from ctrl-alt-del and SIGPWR power off too).
pub const REBOOT_SIGNAL: Signal = Signal::SIGUSR1;
pub const POWER_OFF_SIGNAL: Signal = Signal::SIGUSR2;
/// With `appliance.test_kill_console=1`: how long after its first start the console is killed.
const TEST_KILL_CONSOLE_AFTER: Duration = Duration::from_secs(3);

/// A process PID 1 keeps beside the service once it is ready: the front panel
/// (`appliance.panel=`) and the console on the serial line (`appliance.console=on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Helper {
    Panel,
    Console,
}

/// A helper's process: running, or to be started again at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelperState {
    Off,
    Running(Pid),
    RestartAt(Instant),
}

/// How long after a helper's process died it is started again.
const HELPER_RESTART_MS: u64 = 1000;

impl Helper {
    fn name(self) -> &'static str {
        match self {
            Helper::Panel => "PANEL",
            Helper::Console => "CONSOLE",
        }
    }
}

struct Supervisor {
    ctx: Context,
    service: Option<Service>,
    /// The panel's and the console's processes.
    helpers: [(Helper, HelperState); 2],
    /// The console's terminal settings at boot, put back when the console's process is gone.
    console_termios: Option<nix::sys::termios::Termios>,
    phase: Phase,
    policy: RestartPolicy,
    ready_seen: bool,
    power_buttons: Vec<fs::File>,
    /// When the console's process first started (for `appliance.test_kill_console`).
    console_started: Option<Instant>,
}

/// Runs the supervisor loop forever.
pub fn run(ctx: Context) -> ! {
    let power_buttons: Vec<fs::File> =
        sys::find_power_buttons(Path::new("/sys/class/input"), Path::new("/dev/input"))
            .into_iter()
            .filter_map(|path| {
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags_nonblock()
                    .open(path)
                    .ok()
            })
            .collect();
    say(&format!(
        "APPLIANCE BOOT stage=power-button found={}",
        power_buttons.len()
    ));
    let phase = match &ctx.data {
        DataDisk::Mounted { .. } => Phase::Restarting(Instant::now()),
        DataDisk::Unusable { .. } if ctx.flags.selftest.is_some() => {
            Phase::Restarting(Instant::now())
        }
        DataDisk::Unusable { .. } => Phase::Idle,
    };
    let mut sup = Supervisor {
        ctx,
        service: None,
        helpers: [
            (Helper::Panel, HelperState::Off),
            (Helper::Console, HelperState::Off),
        ],
        console_termios: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        phase,
        policy: RestartPolicy::default(),
        ready_seen: false,
        power_buttons,
        console_started: None,
    };
    loop {
        sup.step();
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

impl Supervisor {
    fn step(&mut self) {
        if let Phase::Restarting(at) = self.phase {
            if Instant::now() >= at {
                self.start_service();
            }
        }
        for i in 0..self.helpers.len() {
            if let (helper, HelperState::RestartAt(at)) = self.helpers[i] {
                if Instant::now() >= at && !matches!(self.phase, Phase::ShuttingDown(..)) {
                    self.start_helper(helper);
                }
            }
        }
        if let Phase::ShuttingDown(deadline, stop) = self.phase {
            if Instant::now() >= deadline {
                say(&format!("APPLIANCE SHUTDOWN service did not stop within {SHUTDOWN_TIMEOUT_MS} ms; killing it"));
                if let Some(service) = self.service.take() {
                    let _ = kill(service.pid, Signal::SIGKILL);
                    let _ = waitpid(service.pid, None);
                }
                self.stop(stop, "shutdown timeout (service killed)");
            }
        }
        self.test_kill_console();
        let (signal_ready, buttons_ready, pipe_ready) = self.wait_events();
        self.feed_watchdog();
        if pipe_ready {
            self.read_ready_pipe();
        }
        if buttons_ready.into_iter().any(|i| self.power_pressed(i)) {
            self.begin_shutdown("ACPI power button", Stop::PowerOff);
        }
        if signal_ready {
            self.handle_signals();
        }
    }

    /// Waits for the signalfd, the power buttons or the ready pipe; returns which are readable
    /// (signals, indices of the buttons, pipe).
    fn wait_events(&self) -> (bool, Vec<usize>, bool) {
        let mut fds = vec![PollFd::new(self.ctx.signals.as_fd(), PollFlags::POLLIN)];
        for button in &self.power_buttons {
            fds.push(PollFd::new(button.as_fd(), PollFlags::POLLIN));
        }
        let pipe = self.service.as_ref().and_then(|s| s.ready_pipe.as_ref());
        if let Some(pipe) = pipe {
            fds.push(PollFd::new(
                pipe.as_fd(),
                PollFlags::POLLIN | PollFlags::POLLHUP,
            ));
        }
        let timeout = PollTimeout::try_from(POLL_INTERVAL_MS as i32).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_err() {
            return (false, Vec::new(), false);
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let buttons = (0..self.power_buttons.len())
            .filter(|i| ready(&fds[1 + i]))
            .collect();
        let pipe = pipe.is_some() && ready(&fds[fds.len() - 1]);
        (ready(&fds[0]), buttons, pipe)
    }

    fn feed_watchdog(&mut self) {
        let hang = self.ctx.flags.test_hang_watchdog && self.ready_seen;
        if let (Some(watchdog), false) = (self.ctx.watchdog.as_ref(), hang) {
            if let Err(e) = watchdog.keepalive() {
                say(&format!("APPLIANCE WATCHDOG {}", error_chain(&e)));
            }
        }
    }

    fn read_ready_pipe(&mut self) {
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let Some(pipe) = service.ready_pipe.take() else {
            return;
        };
        let mut buf = [0u8; 16];
        let mut file = fs::File::from(pipe);
        if matches!(file.read(&mut buf), Ok(n) if n > 0) {
            self.ready_seen = true;
            // Decided before the console draws: a line said later would land in its screen.
            if self.ctx.flags.test_kill_console
                && !first_time_on_this_disk(TEST_KILL_CONSOLE_MARKER, "kill_console")
            {
                say("APPLIANCE TEST kill_console: already done on this data disk");
                self.ctx.flags.test_kill_console = false;
            }
            if self.ctx.flags.selftest.is_none() {
                for (helper, state) in self.helpers {
                    if state == HelperState::Off {
                        self.start_helper(helper);
                    }
                }
            }
            if self.ctx.flags.test_hang_watchdog {
                self.arm_test_hang();
            }
        }
    }

    /// The test-only hang happens once per data disk (a marker on /data), so that the boot after
    /// the watchdog's reset recovers instead of hanging again.
    fn arm_test_hang(&mut self) {
        if !first_time_on_this_disk(TEST_HANG_MARKER, "hang_watchdog") {
            say("APPLIANCE TEST hang_watchdog: already done on this data disk; feeding the watchdog");
            self.ctx.flags.test_hang_watchdog = false;
            return;
        }
        say("APPLIANCE TEST hang_watchdog: no longer feeding the watchdog");
    }

    fn power_pressed(&mut self, index: usize) -> bool {
        let Some(button) = self.power_buttons.get_mut(index) else {
            return false;
        };
        let mut buf = [0u8; sys::INPUT_EVENT_BYTES * 16];
        let Ok(n) = button.read(&mut buf) else {
            return false;
        };
        buf[..n]
            .chunks(sys::INPUT_EVENT_BYTES)
            .any(sys::is_power_press)
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.ctx.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(REBOOT_SIGNAL) => self.begin_shutdown("the operator's reboot", Stop::Reboot),
                Ok(POWER_OFF_SIGNAL) => {
                    self.begin_shutdown("the operator's power off", Stop::PowerOff)
                }
                Ok(signal) => self.begin_shutdown(signal.as_str(), Stop::PowerOff),
                Err(_) => {}
            }
        }
        // SIGCHLDs coalesce: reap whatever is there on every wake-up.
        self.reap();
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { return };
                    if self.service.as_ref().is_some_and(|s| s.pid == pid) {
                        self.service_exited(status);
                    } else if let Some(i) = self
                        .helpers
                        .iter()
                        .position(|(_, state)| *state == HelperState::Running(pid))
                    {
                        let helper = self.helpers[i].0;
                        if helper == Helper::Console {
                            self.restore_console();
                        }
                        say(&format!(
                            "APPLIANCE {} exited {status:?}; starting it again in {HELPER_RESTART_MS} ms",
                            helper.name()
                        ));
                        self.helpers[i].1 = HelperState::RestartAt(
                            Instant::now() + Duration::from_millis(HELPER_RESTART_MS),
                        );
                    }
                }
            }
        }
    }

    fn service_exited(&mut self, status: WaitStatus) {
        let Some(service) = self.service.take() else {
            return;
        };
        let ran = service.started.elapsed();
        if let Phase::ShuttingDown(_, stop) = self.phase {
            say(&format!("APPLIANCE SHUTDOWN service stopped ({status:?})"));
            self.stop(stop, "clean shutdown");
        }
        if self.ctx.flags.selftest.is_some() {
            self.power_off("self-test finished");
        }
        say(&format!(
            "APPLIANCE SERVICE FAILED exited {status:?} after {} ms",
            ran.as_millis()
        ));
        match self.policy.on_exit(ran) {
            Decision::RestartAfter(delay) => {
                say(&format!(
                    "APPLIANCE SERVICE restarting in {} ms (failure {})",
                    delay.as_millis(),
                    self.policy.failures()
                ));
                self.phase = Phase::Restarting(Instant::now() + delay);
            }
            Decision::Reboot => self.reboot("the service keeps failing"),
        }
    }

    fn start_service(&mut self) {
        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pair) => pair,
            Err(e) => self.reboot(&format!("pipe2: {e}")),
        };
        // SAFETY: the supervisor is single-threaded (no thread was ever started in PID 1), so the
        // child may run arbitrary code after fork.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(read);
                service::run_child(&self.ctx.flags, write)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(write);
                self.service = Some(Service {
                    pid: child,
                    started: Instant::now(),
                    ready_pipe: Some(read),
                });
                self.phase = Phase::Running;
            }
            Err(e) => self.reboot(&format!("fork the service: {e}")),
        }
    }

    /// Forks a helper's process, when the kernel command line asks for it.
    fn start_helper(&mut self, helper: Helper) {
        let panel = self.ctx.flags.panel.clone();
        let wanted = match helper {
            Helper::Panel => panel.is_some(),
            Helper::Console => self.ctx.flags.console,
        };
        if !wanted {
            return;
        }
        let slot = self.helpers.iter().position(|(h, _)| *h == helper);
        let Some(slot) = slot else { return };
        // SAFETY: as for the service: PID 1 is single-threaded, so the child may run anything.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => match (helper, panel) {
                (Helper::Panel, Some(device)) => super::panel::run_child(&device),
                _ => super::panel::run_console(),
            },
            Ok(ForkResult::Parent { child }) => {
                say(&format!(
                    "APPLIANCE {} started (pid {child})",
                    helper.name()
                ));
                self.helpers[slot].1 = HelperState::Running(child);
                if helper == Helper::Console && self.console_started.is_none() {
                    self.console_started = Some(Instant::now());
                }
            }
            Err(e) => {
                say(&format!(
                    "APPLIANCE {} fork: {e}; trying again",
                    helper.name()
                ));
                self.helpers[slot].1 = HelperState::RestartAt(
                    Instant::now() + Duration::from_millis(HELPER_RESTART_MS),
                );
            }
        }
    }

    /// Kills the helpers' processes (they hold nothing to save) and reaps them.
    fn stop_helpers(&mut self) {
        for i in 0..self.helpers.len() {
            if let (helper, HelperState::Running(pid)) = self.helpers[i] {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                if helper == Helper::Console {
                    self.restore_console();
                }
            }
            self.helpers[i].1 = HelperState::Off;
        }
    }

    /// Puts the console's terminal settings back (a killed full screen leaves it raw).
    fn restore_console(&self) {
        if let Some(termios) = &self.console_termios {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                termios,
            );
        }
    }

    fn begin_shutdown(&mut self, why: &str, stop: Stop) {
        if let Phase::ShuttingDown(..) = self.phase {
            return;
        }
        say(&format!("APPLIANCE SHUTDOWN requested by {why}"));
        match &self.service {
            Some(service) => {
                let _ = kill(service.pid, Signal::SIGTERM);
                self.phase = Phase::ShuttingDown(
                    Instant::now() + Duration::from_millis(SHUTDOWN_TIMEOUT_MS),
                    stop,
                );
            }
            None => self.stop(stop, why),
        }
    }

    fn stop(&mut self, stop: Stop, why: &str) -> ! {
        match stop {
            Stop::PowerOff => self.power_off(why),
            Stop::Reboot => {
                self.finish();
                reboot_now(why)
            }
        }
    }

    /// `appliance.test_kill_console=1`: the console's process is killed (SIGKILL) once, a while
    /// after it first started, as a crash would end it; the helper's restart is what is tested.
    fn test_kill_console(&mut self) {
        if !self.ctx.flags.test_kill_console {
            return;
        }
        let Some(started) = self.console_started else {
            return;
        };
        if started.elapsed() < TEST_KILL_CONSOLE_AFTER {
            return;
        }
        if let Some((_, HelperState::Running(pid))) =
            self.helpers.iter().find(|(h, _)| *h == Helper::Console)
        {
            let pid = *pid;
            self.ctx.flags.test_kill_console = false;
            say(&format!(
                "APPLIANCE TEST kill_console: SIGKILL to the console (pid {pid})"
            ));
            let _ = kill(pid, Signal::SIGKILL);
        }
    }

    fn finish(&mut self) {
        self.stop_helpers();
        nix::unistd::sync();
        if let DataDisk::Mounted { .. } = self.ctx.data {
            if let Err(e) = nix::mount::umount(DATA_DIR) {
                say(&format!(
                    "APPLIANCE SHUTDOWN umount {DATA_DIR}: {e}; detaching"
                ));
                let _ = nix::mount::umount2(DATA_DIR, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        nix::unistd::sync();
        if let Some(watchdog) = self.ctx.watchdog.take() {
            let _ = watchdog.close();
        }
    }

    fn power_off(&mut self, why: &str) -> ! {
        self.finish();
        power_off_now(why)
    }

    fn reboot(&mut self, why: &str) -> ! {
        self.finish();
        reboot_hopeless(why)
    }
}

/// A test flag acts once per data disk (so that the boot after a reboot or a reset runs as a
/// normal one): true the first time, when `marker` is written (durably) in the data directory.
fn first_time_on_this_disk(marker: &str, flag: &str) -> bool {
    let marker = Path::new(DATA_DIR).join(marker);
    if marker.exists() {
        return false;
    }
    let written = fs::File::create(&marker).and_then(|f| f.sync_all());
    let dir_synced = fs::File::open(DATA_DIR).and_then(|d| d.sync_all());
    if let Err(e) = written.and(dir_synced) {
        say(&format!(
            "APPLIANCE TEST {flag}: cannot write {}: {e}",
            marker.display()
        ));
    }
    true
}

/// Powers off at once (after sync).
pub fn power_off_now(why: &str) -> ! {
    say(&format!("APPLIANCE POWEROFF {why}"));
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    halt_forever()
}

/// A hopeless state: log it and reboot.
pub fn reboot_hopeless(why: &str) -> ! {
    reboot_now(&format!("hopeless: {why}"))
}

/// Reboots at once (after sync).
fn reboot_now(why: &str) -> ! {
    say(&format!("APPLIANCE REBOOT {why}"));
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    halt_forever()
}

fn halt_forever() -> ! {
    loop {
        std::thread::park();
    }
}
