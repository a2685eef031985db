//! The hardware watchdog (`/dev/watchdog`): open it (which arms it) with a timeout, falling back
//! to the driver's default when the driver refuses it; keep it alive; and close it with the
//! magic character so a clean shutdown does not reset the machine.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::info_span;

/// Limits of a timeout we ask for (the i6300esb accepts 1..2046 s).
pub const TIMEOUT_SECS_MIN: u32 = 1;
pub const TIMEOUT_SECS_MAX: u32 = 3600;

/// Errors of the watchdog.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timeout {secs} s is outside {TIMEOUT_SECS_MIN}..={TIMEOUT_SECS_MAX}")]
    BadTimeout { secs: u32 },
    #[error("{operation} on {path}")]
    Ioctl {
        operation: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("magic close of {path}")]
    Close {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The driver refused the timeout asked for at [`Watchdog::open_with_timeout`]: it keeps its
/// default, and the watchdog is armed all the same (it must be fed either way).
#[derive(Debug, thiserror::Error)]
#[error("WDIOC_SETTIMEOUT {secs} on {path}")]
pub struct TimeoutRefused {
    pub secs: u32,
    pub path: String,
    #[source]
    pub source: nix::Error,
}

nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// An open watchdog. Dropping it without [`Watchdog::close`] leaves it armed (the machine
/// resets when the timeout passes): that is what a crash should do.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    file: File,
}

impl Watchdog {
    /// Opens the device, which arms the watchdog.
    pub fn open(path: &Path) -> Result<Watchdog, WatchdogError> {
        let _span = info_span!("watchdog_open", path = %path.display()).entered();
        let file =
            File::options()
                .write(true)
                .open(path)
                .map_err(|source| WatchdogError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
        Ok(Watchdog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens (arms) the watchdog and asks for a timeout of `secs`. The second value is the
    /// timeout the driver chose (it may round), or its refusal: then the driver's default stays,
    /// which is a note rather than an error, since the device is armed already.
    pub fn open_with_timeout(
        path: &Path,
        secs: u32,
    ) -> Result<(Watchdog, Result<u32, TimeoutRefused>), WatchdogError> {
        check_timeout(secs)?;
        let watchdog = Watchdog::open(path)?;
        let set = watchdog
            .ioctl_set_timeout(secs)
            .map_err(|source| TimeoutRefused {
                secs,
                path: path.display().to_string(),
                source,
            });
        Ok((watchdog, set))
    }

    fn ioctl_err(&self, operation: &'static str) -> impl FnOnce(nix::Error) -> WatchdogError + '_ {
        move |source| WatchdogError::Ioctl {
            operation,
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Sets the timeout; returns the one the driver chose (it may round).
    pub fn set_timeout(&mut self, secs: u32) -> Result<u32, WatchdogError> {
        check_timeout(secs)?;
        self.ioctl_set_timeout(secs)
            .map_err(self.ioctl_err("WDIOC_SETTIMEOUT"))
    }

    fn ioctl_set_timeout(&self, secs: u32) -> Result<u32, nix::Error> {
        let mut value = secs as libc::c_int;
        // SAFETY: a valid fd of a watchdog device and a valid c_int, as WDIOC_SETTIMEOUT expects;
        // the driver writes the timeout it chose into it.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }?;
        Ok(value.max(0) as u32)
    }

    /// The current timeout.
    pub fn timeout(&self) -> Result<u32, WatchdogError> {
        let mut value: libc::c_int = 0;
        // SAFETY: a valid fd and a valid c_int for the driver to fill.
        unsafe { wdioc_gettimeout(self.file.as_raw_fd(), &mut value) }
            .map_err(self.ioctl_err("WDIOC_GETTIMEOUT"))?;
        Ok(value.max(0) as u32)
    }

    /// Resets the countdown (feeds the watchdog).
    pub fn keepalive(&self) -> Result<(), WatchdogError> {
        let mut ignored: libc::c_int = 0;
        // SAFETY: a valid fd; WDIOC_KEEPALIVE ignores its argument, which is a valid c_int.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut ignored) }
            .map_err(self.ioctl_err("WDIOC_KEEPALIVE"))?;
        Ok(())
    }

    /// Writes the magic 'V' and closes: the driver disarms (unless built with nowayout).
    pub fn close(mut self) -> Result<(), WatchdogError> {
        let _span = info_span!("watchdog_close", path = %self.path.display()).entered();
        self.file
            .write_all(b"V")
            .map_err(|source| WatchdogError::Close {
                path: self.path.display().to_string(),
                source,
            })
    }
}

fn check_timeout(secs: u32) -> Result<(), WatchdogError> {
    if !(TIMEOUT_SECS_MIN..=TIMEOUT_SECS_MAX).contains(&secs) {
        return Err(WatchdogError::BadTimeout { secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error_chain;

    /// /dev/null opens for writing like a watchdog but takes no watchdog ioctl: the refused
    /// timeout comes back as a note naming the ioctl, the value and the path.
    #[test]
    fn a_refused_timeout_is_a_note_and_the_device_stays_open() {
        let (watchdog, set) =
            Watchdog::open_with_timeout(Path::new("/dev/null"), 20).expect("open /dev/null");
        let refused = set.expect_err("/dev/null takes no WDIOC_SETTIMEOUT");
        assert_eq!((refused.secs, refused.source), (20, nix::Error::ENOTTY));
        assert_eq!(
            error_chain(&refused),
            format!("WDIOC_SETTIMEOUT 20 on /dev/null: {}", nix::Error::ENOTTY)
        );
        watchdog.close().expect("the magic 'V' is a plain write");
    }

    #[test]
    fn a_timeout_out_of_bounds_is_refused_before_opening() {
        for secs in [0, TIMEOUT_SECS_MAX + 1] {
            match Watchdog::open_with_timeout(Path::new("/dev/watchdog-none"), secs) {
                Err(WatchdogError::BadTimeout { secs: refused }) => assert_eq!(refused, secs),
                other => panic!("{secs}: expected BadTimeout, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_device_is_an_error_naming_it() {
        match Watchdog::open_with_timeout(Path::new("/dev/watchdog-none"), 20) {
            Err(WatchdogError::Open { path, .. }) => assert_eq!(path, "/dev/watchdog-none"),
            other => panic!("expected Open, got {other:?}"),
        }
    }
}
