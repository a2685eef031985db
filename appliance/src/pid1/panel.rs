//! The front panel's process, which PID 1 forks beside the service once the service is ready
//! (`appliance.panel=DEVICE` names the display's serial line): it keeps the 2x20 summary on the
//! display up to date through the console's socket (`console::run_panel`). It holds nothing the
//! service needs; PID 1 restarts it when it dies and kills it at shutdown.

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
