//! One appliance VM: its run directory (sockets, console log, pool disks), its data disk (made
//! and provisioned by the bench when missing, [`crate::provision`]), the QEMU process in its own
//! process group (killed on every exit path, Drop included), and its QMP session, console,
//! emulated fabric switch and forwarded HTTPS API.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::api::{Api, ApiError};
use crate::args::{self, Accel, CommandSpec, ConsoleMode, RunPaths};
use crate::console::{Console, ConsoleError};
use crate::host::{self, HostError};
use crate::provision::{self, Credentials, ProvisionError};
use crate::qmp::{Qmp, QmpError};
use crate::switch::Switch;
use crate::topology::{BenchTopology, DeviceKind};

/// Default size of the data disk when it is created (sparse).
pub const DATA_DISK_BYTES_DEFAULT: u64 = 1 << 30;
/// How long QEMU may take to connect its sockets after it starts.
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// How often [`Vm::wait_exit`] checks whether QEMU has exited.
const EXIT_POLL_MS: u64 = 50;
/// Tells PID 1 where the front panel is: the second serial port, which the bench writes to
/// `panel.txt` in the run directory.
pub const PANEL_FLAG: &str = "appliance.panel=ttyS1";

/// Errors launching or driving a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU did not connect {socket} within {timeout_ms} ms (exit status: {status}); arguments: {arguments}")]
    Connect {
        socket: String,
        timeout_ms: u64,
        status: String,
        arguments: String,
    },
    #[error("QMP handshake")]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error("QEMU did not exit within {timeout_ms} ms")]
    ExitTimeout { timeout_ms: u64 },
    #[error("provision the data disk")]
    Provision(#[from] ProvisionError),
    #[error("the bench did not make the data disk {disk} (no {missing} beside it), so it cannot log in to the appliance on it")]
    NoCredentials { disk: PathBuf, missing: PathBuf },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// How to run a VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The image's base kernel command line.
    pub cmdline: String,
    /// Appended to `cmdline` (e.g. `appliance.selftest=drivers`).
    pub extra_cmdline: String,
    /// The data disk; made by the bench (ext4, sparse, `data_disk_bytes`, with the provisioned
    /// admin password and certificate) when missing.
    pub data_disk: PathBuf,
    pub data_disk_bytes: u64,
    pub topology: BenchTopology,
    /// Sockets, console log and pool disks live here (kept across boots of the same fabric).
    pub run_dir: PathBuf,
    /// Captured console (tests, `--headless`) or the terminal.
    pub console: ConsoleMode,
    /// None probes: KVM when it works, else TCG.
    pub accel: Option<Accel>,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl VmOptions {
    /// Options for the image's artifacts, with the sample fabric, a captured console, and the
    /// data disk and sockets in `run_dir`.
    pub fn new(artifacts: &image::Artifacts, run_dir: &Path) -> VmOptions {
        VmOptions {
            kernel: artifacts.kernel.clone(),
            initramfs: artifacts.initramfs.clone(),
            cmdline: artifacts.cmdline.clone(),
            extra_cmdline: String::new(),
            data_disk: run_dir.join("data.img"),
            data_disk_bytes: DATA_DISK_BYTES_DEFAULT,
            topology: BenchTopology::sample(),
            run_dir: run_dir.to_path_buf(),
            console: ConsoleMode::Captured,
            accel: None,
            memory_mib: 1024,
            cpus: 2,
        }
    }
}

/// A running VM. Dropping it kills QEMU's process group.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    paths: RunPaths,
    qmp: Arc<Qmp>,
    console: Console,
    switch: Switch,
    api_port: u16,
    credentials: Option<Credentials>,
    data_disk: PathBuf,
    started: Instant,
    accel: Accel,
}

struct Listeners {
    qmp: UnixListener,
    console: Option<UnixListener>,
    fabric: UnixListener,
}

impl Vm {
    /// Starts QEMU and connects its QMP, console and fabric link.
    pub fn launch(options: VmOptions) -> Result<Vm, VmError> {
        let _span =
            tracing::info_span!("vm_launch", run_dir = %options.run_dir.display()).entered();
        let qemu = host::ensure_qemu()?;
        let paths = RunPaths::new(&options.run_dir);
        let credentials = prepare_files(&options, &paths)?;
        let accel = options.accel.unwrap_or_else(|| host::probe_accel(&qemu));
        let api_port = host::free_local_port()?;
        let identity = options
            .topology
            .identity
            .as_ref()
            .filter(|_| !options.extra_cmdline.contains("appliance.id="))
            .map(|identity| identity.cmdline())
            .unwrap_or_default();
        let cmdline = format!(
            "{} {identity} {PANEL_FLAG} {}",
            options.cmdline, options.extra_cmdline
        )
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
        let spec = CommandSpec {
            kernel: &options.kernel,
            initramfs: &options.initramfs,
            cmdline,
            data_disk: &options.data_disk,
            topology: &options.topology,
            paths: &paths,
            console: options.console,
            accel,
            memory_mib: options.memory_mib,
            cpus: options.cpus,
            api_port_host: api_port,
        };
        let arguments = args::build(&spec);
        let listeners = bind_listeners(&paths, options.console)?;
        let mut command = Command::new(&qemu);
        command.args(&arguments).stdin(Stdio::null());
        if options.console == ConsoleMode::Captured {
            // Own process group, so that killing it takes every thread and helper of QEMU.
            command.process_group(0);
        } else {
            command.stdin(Stdio::inherit());
        }
        let started = Instant::now();
        let child = command.spawn().map_err(|source| VmError::Spawn {
            program: qemu.display().to_string(),
            source,
        })?;
        let mut starting = Starting {
            child: Some(child),
            arguments: arguments.join(" "),
        };
        let qmp_stream = starting.accept(listeners.qmp, &paths.qmp)?;
        let fabric_stream = starting.accept(listeners.fabric, &paths.fabric)?;
        let console_stream = match listeners.console {
            Some(listener) => Some(starting.accept(listener, &paths.console)?),
            None => None,
        };
        let qmp = Arc::new(Qmp::handshake(
            qmp_stream,
            Duration::from_millis(CONNECT_TIMEOUT_MS),
        )?);
        let console = match console_stream {
            Some(stream) => {
                let keys = stream.try_clone().map_err(|source| VmError::Io {
                    operation: "clone for the console's keys",
                    path: paths.console.clone(),
                    source,
                });
                Console::capture(stream, &paths.console_log)?.with_keys(keys?)
            }
            None => Console::capture(std::io::empty(), &paths.console_log)?,
        };
        let switch = Switch::new(&options.topology, qmp.clone());
        switch
            .spawn_server(fabric_stream)
            .map_err(|source| VmError::Io {
                operation: "start the switch thread for",
                path: paths.fabric.clone(),
                source,
            })?;
        let child = starting
            .child
            .take()
            .ok_or(VmError::ExitTimeout { timeout_ms: 0 })?;
        tracing::info!(pid = child.id(), ?accel, api_port, "VM started");
        Ok(Vm {
            child,
            paths,
            qmp,
            console,
            switch,
            api_port,
            credentials,
            data_disk: options.data_disk.clone(),
            started,
            accel,
        })
    }

    /// The serial console (empty when it goes to the terminal).
    pub fn console(&self) -> &Console {
        &self.console
    }

    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// The emulated fabric switch (inventory, attach/detach, fault injection).
    pub fn fabric(&self) -> &Switch {
        &self.switch
    }

    /// 127.0.0.1:<port> forwarded to the guest's API port 443.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.api_port))
    }

    /// The API's URL on the host: `https://127.0.0.1:<port>` (the bench's certificate names
    /// 127.0.0.1).
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_addr())
    }

    /// The admin password and certificate the bench provisioned on the data disk.
    pub fn credentials(&self) -> Result<&Credentials, VmError> {
        self.credentials
            .as_ref()
            .ok_or_else(|| VmError::NoCredentials {
                disk: self.data_disk.clone(),
                missing: provision::credential_files(&self.data_disk).0,
            })
    }

    /// Logs in to the API as `admin`, waiting up to `timeout` for the appliance to listen.
    pub fn api(&self, timeout: Duration) -> Result<Api, VmError> {
        Ok(Api::login(&self.api_url(), self.credentials()?, timeout)?)
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for QEMU to exit on its own (after a power-off), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        // No event tells a parent that a child exited short of SIGCHLD handling; poll.
        let exited = drivers::try_wait_until(timeout, Duration::from_millis(EXIT_POLL_MS), || {
            self.child.try_wait()
        })
        .map_err(|source| VmError::Io {
            operation: "wait for QEMU of",
            path: self.paths.dir.clone(),
            source,
        })?;
        exited.ok_or_else(|| {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            VmError::ExitTimeout { timeout_ms }
        })
    }

    /// Waits for QEMU to exit when it was started with the console on the terminal.
    pub fn wait(&mut self) -> Result<ExitStatus, VmError> {
        self.child.wait().map_err(|source| VmError::Io {
            operation: "wait for QEMU of",
            path: self.paths.dir.clone(),
            source,
        })
    }

    /// Kills QEMU (a power cut) and reaps it.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group QEMU leads (it was
        // started with process_group(0), or it is our own child when it shares our group, in
        // which case the group kill is skipped below); no memory is involved.
        let group = unsafe { libc::getpgid(pid) };
        if group == pid {
            // SAFETY: as above; `group` is QEMU's own process group.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A QEMU that has not connected all its sockets yet; killed if launching fails.
struct Starting {
    child: Option<Child>,
    arguments: String,
}

impl Starting {
    /// Accepts QEMU's connection on `listener`, giving up when QEMU exits or the deadline passes.
    fn accept(&mut self, listener: UnixListener, path: &Path) -> Result<UnixStream, VmError> {
        let (tx, rx) = mpsc::channel();
        let _accept = thread::Builder::new()
            .name("vm-accept".into())
            .spawn(move || {
                let _ = tx.send(listener.accept().map(|(stream, _)| stream));
            })
            .map_err(|source| VmError::Io {
                operation: "spawn accept thread for",
                path: path.into(),
                source,
            })?;
        let deadline = Instant::now() + Duration::from_millis(CONNECT_TIMEOUT_MS);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(source)) => {
                    return Err(VmError::Io {
                        operation: "accept QEMU on",
                        path: path.into(),
                        source,
                    })
                }
                Err(_) => {}
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                break;
            }
        }
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status.to_string(),
            _ => "still running".into(),
        };
        // Unblock the accept thread.
        let _ = UnixStream::connect(path);
        Err(VmError::Connect {
            socket: path.display().to_string(),
            timeout_ms: CONNECT_TIMEOUT_MS,
            status,
            arguments: self.arguments.clone(),
        })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child);
        }
    }
}

fn bind_listeners(paths: &RunPaths, console: ConsoleMode) -> Result<Listeners, VmError> {
    let bind = |path: &Path| {
        let _ = fs::remove_file(path);
        UnixListener::bind(path).map_err(|source| VmError::Io {
            operation: "listen on",
            path: path.into(),
            source,
        })
    };
    Ok(Listeners {
        qmp: bind(&paths.qmp)?,
        console: if console == ConsoleMode::Captured {
            Some(bind(&paths.console)?)
        } else {
            None
        },
        fabric: bind(&paths.fabric)?,
    })
}

/// Creates the run directory, the data disk and the pool's NVMe files when missing (sparse);
/// returns the data disk's credentials when the bench made it.
fn prepare_files(options: &VmOptions, paths: &RunPaths) -> Result<Option<Credentials>, VmError> {
    let io = |operation, path: &Path| {
        let path = path.to_path_buf();
        move |source| VmError::Io {
            operation,
            path,
            source,
        }
    };
    fs::create_dir_all(&paths.pool).map_err(io("create", &paths.pool))?;
    if let Some(parent) = options.data_disk.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let credentials = provision::ensure(&options.data_disk, options.data_disk_bytes)?;
    for device in options
        .topology
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Nvme)
    {
        create_sparse(
            &paths.pool_disk(&device.pool.id),
            device.pool.capacity_bytes,
        )?;
    }
    for disk in &options.topology.disks {
        create_sparse(&paths.pool_disk(&disk.id), disk.capacity_bytes)?;
    }
    Ok(credentials)
}

/// Creates `path` sparse with `bytes` when it does not exist; an existing file is left as is.
pub fn create_sparse(path: &Path, bytes: u64) -> Result<(), VmError> {
    let io = |operation| {
        move |source| VmError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    };
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file.set_len(bytes).map_err(io("set the size of")),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(VmError::Io {
            operation: "create",
            path: path.to_path_buf(),
            source,
        }),
    }
}
