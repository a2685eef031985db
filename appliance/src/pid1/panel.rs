//! The processes PID 1 forks beside the service once the service is ready: the front panel
//! (`appliance.panel=DEVICE` names the display's serial line), which keeps the 2x20 summary on
//! the display up to date (`console::run_panel`), and the console on the serial console
//! (`appliance.console=on`: the full screen, `console::screen`). Both reach the service through
//! the console's socket and hold nothing it needs; PID 1 restarts them when they die and kills
//! them at shutdown.

use std::os::fd::AsFd;

use nix::sys::termios::{self, SetArg};

use super::{say, DATA_DIR};
use crate::console::{self, panel::SerialPanel, Service};

/// Runs in the forked child; never returns.
pub fn run_child(device: &str) -> ! {
    let code = match run(device) {
        Ok(()) => 0,
        Err(e) => {
            say(&format!("APPLIANCE PANEL {device}: {e}"));
            1
        }
    };
    std::process::exit(code)
}

fn run(device: &str) -> std::io::Result<()> {
    let out = std::fs::OpenOptions::new().write(true).open(device)?;
    // Raw: the frames' CR LF go out as written, nothing is echoed or translated.
    let mut settings = termios::tcgetattr(out.as_fd())?;
    termios::cfmakeraw(&mut settings);
    termios::tcsetattr(out.as_fd(), SetArg::TCSANOW, &settings)?;
    let mut display = SerialPanel::new(out);
    let mut service = Service::of(std::path::Path::new(DATA_DIR));
    console::run_panel(&mut service, &mut display, console::PANEL_PAGE, || true)
}

/// Runs the full-screen console on PID 1's terminal (the serial console); never returns.
pub fn run_console() -> ! {
    let data = std::path::Path::new(DATA_DIR);
    let pins = crate::console::pin::PinStore::new(data);
    let idle = std::time::Duration::from_secs(300);
    let code = match console::screen::run(Service::of(data), pins, idle) {
        Ok(()) => 0,
        Err(e) => {
            say(&format!("APPLIANCE CONSOLE: {e}"));
            1
        }
    };
    std::process::exit(code)
}
