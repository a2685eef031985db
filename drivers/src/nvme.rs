//! NVMe admin commands on a controller's char device (`/dev/nvmeN`): io_uring passthrough
//! (`URING_CMD` with `NVME_URING_CMD_ADMIN` on a ring of 128-byte SQEs and 32-byte CQEs), with the
//! `NVME_IOCTL_ADMIN_CMD` ioctl as fallback; Identify Controller / Namespace, the SMART log and
//! their parsers; and a read probe of a namespace through tokio-uring with O_DIRECT.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use serde::{Deserialize, Serialize};
use tracing::{debug, info_span};

/// `struct nvme_passthru_cmd` / `struct nvme_uring_cmd` (linux/nvme_ioctl.h): the same 72 bytes;
/// the last word is `result` for the ioctl and reserved for io_uring.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeAdminCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

pub const ADMIN_CMD_BYTES: usize = 72;
const _: () = assert!(std::mem::size_of::<NvmeAdminCmd>() == ADMIN_CMD_BYTES);
const _: () = assert!(
    ADMIN_CMD_BYTES <= 80,
    "must fit the 80 command bytes of a 128-byte SQE"
);

/// `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
pub const NVME_IOCTL_ADMIN_CMD: u32 = ioctl_iowr(b'N', 0x41, ADMIN_CMD_BYTES as u32);
/// `_IOWR('N', 0x82, struct nvme_uring_cmd)`.
pub const NVME_URING_CMD_ADMIN: u32 = ioctl_iowr(b'N', 0x82, ADMIN_CMD_BYTES as u32);

const fn ioctl_iowr(kind: u8, number: u8, size: u32) -> u32 {
    (3 << 30) | (size << 16) | ((kind as u32) << 8) | number as u32
}

pub const OPCODE_GET_LOG_PAGE: u8 = 0x02;
pub const OPCODE_IDENTIFY: u8 = 0x06;
pub const CNS_NAMESPACE: u32 = 0x00;
pub const CNS_CONTROLLER: u32 = 0x01;
pub const LOG_SMART: u32 = 0x02;
pub const IDENTIFY_BYTES: usize = 4096;
pub const SMART_LOG_BYTES: usize = 512;
/// The global namespace id: the controller-wide SMART log.
pub const NSID_ALL: u32 = 0xffff_ffff;
/// Time the kernel gives one admin command (0 means the driver's default of 60 s).
pub const ADMIN_TIMEOUT_MS: u32 = 10_000;
/// Entries in the passthrough ring: admin commands are issued one at a time.
const RING_ENTRIES: u32 = 4;

/// Errors of NVMe access.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("set up io_uring with SQE128/CQE32 for {path}")]
    Ring {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin command opcode {opcode:#04x} on {path} through {transport:?}")]
    Submit {
        path: String,
        opcode: u8,
        transport: Transport,
        #[source]
        source: std::io::Error,
    },
    #[error("admin command opcode {opcode:#04x} on {path}: controller status {status:#06x}")]
    Status {
        path: String,
        opcode: u8,
        status: u32,
    },
    #[error("{what} is {bytes} bytes, expected {expected}")]
    Short {
        what: &'static str,
        bytes: usize,
        expected: usize,
    },
    #[error("{what}: field {field} holds {value}, which is not valid")]
    BadField {
        what: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("read probe of {path} at byte {offset}")]
    Probe {
        path: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// How admin commands reach the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// io_uring `URING_CMD` passthrough (Linux 5.19+).
    Uring,
    /// The `NVME_IOCTL_ADMIN_CMD` ioctl.
    Ioctl,
}

/// A 4 KiB, page-aligned data buffer for admin commands and O_DIRECT reads.
#[repr(C, align(4096))]
#[derive(Debug, Clone)]
pub struct Page(pub [u8; 4096]);

impl Default for Page {
    fn default() -> Self {
        Page([0; 4096])
    }
}

/// Identify (CNS `cns`) of namespace `nsid` into `buffer`.
pub fn identify_command(cns: u32, nsid: u32, buffer: &mut Page) -> NvmeAdminCmd {
    NvmeAdminCmd {
        opcode: OPCODE_IDENTIFY,
        nsid,
        addr: buffer.0.as_mut_ptr() as u64,
        data_len: IDENTIFY_BYTES as u32,
        cdw10: cns,
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..Default::default()
    }
}

/// Get Log Page `log_id` of `bytes` bytes (a multiple of 4) into `buffer`.
pub fn get_log_page_command(
    log_id: u32,
    nsid: u32,
    bytes: usize,
    buffer: &mut Page,
) -> NvmeAdminCmd {
    let dwords_minus_one = (bytes / 4 - 1) as u32;
    NvmeAdminCmd {
        opcode: OPCODE_GET_LOG_PAGE,
        nsid,
        addr: buffer.0.as_mut_ptr() as u64,
        data_len: bytes as u32,
        // NUMDL in bits 31:16, LID in bits 7:0.
        cdw10: ((dwords_minus_one & 0xffff) << 16) | (log_id & 0xff),
        cdw11: dwords_minus_one >> 16,
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..Default::default()
    }
}

impl NvmeAdminCmd {
    /// The command as the 80 command bytes of a `URING_CMD` SQE.
    pub fn to_uring_bytes(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        let mut put =
            |offset: usize, bytes: &[u8]| out[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(0, &[self.opcode, self.flags]);
        put(2, &self.rsvd1.to_ne_bytes());
        put(4, &self.nsid.to_ne_bytes());
        put(8, &self.cdw2.to_ne_bytes());
        put(12, &self.cdw3.to_ne_bytes());
        put(16, &self.metadata.to_ne_bytes());
        put(24, &self.addr.to_ne_bytes());
        put(32, &self.metadata_len.to_ne_bytes());
        put(36, &self.data_len.to_ne_bytes());
        let words = [
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
            self.timeout_ms,
            self.result,
        ];
        for (i, word) in words.iter().enumerate() {
            put(40 + 4 * i, &word.to_ne_bytes());
        }
        out
    }
}

/// What Identify Controller says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerIdentity {
    pub vendor_id: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Total NVM capacity (TNVMCAP); 0 when not reported.
    pub total_capacity_bytes: u128,
    /// Number of namespaces (NN).
    pub namespaces: u32,
}

/// What Identify Namespace says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceIdentity {
    pub size_blocks: u64,
    pub capacity_blocks: u64,
    pub used_blocks: u64,
    pub block_bytes: u32,
}

impl NamespaceIdentity {
    pub fn size_bytes(&self) -> u64 {
        self.size_blocks.saturating_mul(u64::from(self.block_bytes))
    }
}

/// The SMART / health information log (log page 0x02).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartLog {
    /// Bit 0 spare below threshold, 1 temperature, 2 reliability degraded, 3 read-only,
    /// 4 volatile backup failed, 5 persistent memory read-only.
    pub critical_warning: u8,
    pub temperature_kelvin: u16,
    pub available_spare_percent: u8,
    pub available_spare_threshold_percent: u8,
    pub percentage_used: u8,
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub error_log_entries: u128,
}

fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), NvmeError> {
    if bytes.len() < expected {
        return Err(NvmeError::Short {
            what,
            bytes: bytes.len(),
            expected,
        });
    }
    Ok(())
}

fn le_u128(bytes: &[u8], offset: usize) -> u128 {
    let mut word = [0u8; 16];
    word.copy_from_slice(&bytes[offset..offset + 16]);
    u128::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

fn le_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

/// An ASCII field, space padded; refuses bytes that are not printable ASCII.
fn ascii_field(what: &'static str, field: &'static str, bytes: &[u8]) -> Result<String, NvmeError> {
    let trimmed = bytes.split(|b| *b == 0).next().unwrap_or_default();
    if !trimmed.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(NvmeError::BadField {
            what,
            field,
            value: format!("{bytes:02x?}"),
        });
    }
    Ok(String::from_utf8_lossy(trimmed).trim().to_string())
}

/// Parses the 4096-byte Identify Controller data structure.
pub fn parse_identify_controller(bytes: &[u8]) -> Result<ControllerIdentity, NvmeError> {
    const WHAT: &str = "Identify Controller";
    check_len(WHAT, bytes, IDENTIFY_BYTES)?;
    Ok(ControllerIdentity {
        vendor_id: u16::from_le_bytes([bytes[0], bytes[1]]),
        serial: ascii_field(WHAT, "SN", &bytes[4..24])?,
        model: ascii_field(WHAT, "MN", &bytes[24..64])?,
        firmware: ascii_field(WHAT, "FR", &bytes[64..72])?,
        total_capacity_bytes: le_u128(bytes, 280),
        namespaces: le_u32(bytes, 516),
    })
}

/// Parses the 4096-byte Identify Namespace data structure.
pub fn parse_identify_namespace(bytes: &[u8]) -> Result<NamespaceIdentity, NvmeError> {
    const WHAT: &str = "Identify Namespace";
    check_len(WHAT, bytes, IDENTIFY_BYTES)?;
    let formats = usize::from(bytes[25]) + 1;
    // FLBAS bits 3:0 and 6:5 select the LBA format (up to 64 formats).
    let flbas = bytes[26];
    let index = usize::from(flbas & 0x0f) | (usize::from((flbas >> 5) & 0x3) << 4);
    if index >= formats || index >= 64 {
        return Err(NvmeError::BadField {
            what: WHAT,
            field: "FLBAS",
            value: format!("{flbas:#04x} with {formats} formats"),
        });
    }
    let lbads = bytes[128 + 4 * index + 2];
    if !(9..=16).contains(&lbads) {
        return Err(NvmeError::BadField {
            what: WHAT,
            field: "LBADS",
            value: lbads.to_string(),
        });
    }
    let namespace = NamespaceIdentity {
        size_blocks: le_u64(bytes, 0),
        capacity_blocks: le_u64(bytes, 8),
        used_blocks: le_u64(bytes, 16),
        block_bytes: 1 << lbads,
    };
    if namespace.capacity_blocks > namespace.size_blocks {
        return Err(NvmeError::BadField {
            what: WHAT,
            field: "NCAP",
            value: namespace.capacity_blocks.to_string(),
        });
    }
    Ok(namespace)
}

/// Parses the 512-byte SMART / health information log.
pub fn parse_smart_log(bytes: &[u8]) -> Result<SmartLog, NvmeError> {
    const WHAT: &str = "SMART log";
    check_len(WHAT, bytes, SMART_LOG_BYTES)?;
    let log = SmartLog {
        critical_warning: bytes[0],
        temperature_kelvin: u16::from_le_bytes([bytes[1], bytes[2]]),
        available_spare_percent: bytes[3],
        available_spare_threshold_percent: bytes[4],
        percentage_used: bytes[5],
        data_units_read: le_u128(bytes, 32),
        data_units_written: le_u128(bytes, 48),
        power_cycles: le_u128(bytes, 112),
        power_on_hours: le_u128(bytes, 128),
        unsafe_shutdowns: le_u128(bytes, 144),
        media_errors: le_u128(bytes, 160),
        error_log_entries: le_u128(bytes, 176),
    };
    if log.available_spare_percent > 100 || log.available_spare_threshold_percent > 100 {
        let value = format!(
            "{}/{}",
            log.available_spare_percent, log.available_spare_threshold_percent
        );
        return Err(NvmeError::BadField {
            what: WHAT,
            field: "available spare",
            value,
        });
    }
    Ok(log)
}

/// An NVMe controller's char device, with its passthrough ring. Not `Send`: the ring is
/// created SINGLE_ISSUER, so only the thread that opened it may submit.
#[derive(Debug)]
pub struct NvmeController {
    path: PathBuf,
    file: File,
    ring: Option<Ring>,
    single_thread: std::marker::PhantomData<*const ()>,
}

struct Ring(IoUring<squeue::Entry128, cqueue::Entry32>);

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoUring<Entry128, Entry32>")
    }
}

impl NvmeController {
    /// Opens `/dev/nvmeN`. With `transport` `Uring`, sets up the ring now and fails if the kernel
    /// cannot; with `Ioctl`, uses only the ioctl.
    pub fn open(path: &Path, transport: Transport) -> Result<NvmeController, NvmeError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| NvmeError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let ring = match transport {
            Transport::Ioctl => None,
            Transport::Uring => Some(build_ring(path)?),
        };
        Ok(NvmeController {
            path: path.to_path_buf(),
            file,
            ring,
            single_thread: std::marker::PhantomData,
        })
    }

    /// Opens with io_uring if the kernel supports passthrough on this device, else the ioctl.
    pub fn open_best(path: &Path) -> Result<NvmeController, NvmeError> {
        let mut controller = match NvmeController::open(path, Transport::Uring) {
            Ok(c) => c,
            Err(NvmeError::Ring { .. }) => return NvmeController::open(path, Transport::Ioctl),
            Err(e) => return Err(e),
        };
        let mut page = Page::default();
        match controller.admin(&mut identify_command(CNS_CONTROLLER, 0, &mut page)) {
            Err(NvmeError::Submit { source, .. }) if is_unsupported(&source) => {
                debug!(path = %path.display(), "io_uring passthrough unsupported, using the ioctl");
                controller.ring = None;
            }
            _ => {}
        }
        Ok(controller)
    }

    pub fn transport(&self) -> Transport {
        if self.ring.is_some() {
            Transport::Uring
        } else {
            Transport::Ioctl
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one admin command; returns the completion's result dword (DW0).
    pub fn admin(&mut self, cmd: &mut NvmeAdminCmd) -> Result<u32, NvmeError> {
        let transport = self.transport();
        let opcode = cmd.opcode;
        let submit = |source| NvmeError::Submit {
            path: self.path.display().to_string(),
            opcode,
            transport,
            source,
        };
        let status = match &mut self.ring {
            Some(ring) => uring_admin(ring, self.file.as_raw_fd(), cmd).map_err(submit)?,
            None => ioctl_admin(self.file.as_raw_fd(), cmd).map_err(submit)?,
        };
        if status != 0 {
            return Err(NvmeError::Status {
                path: self.path.display().to_string(),
                opcode,
                status,
            });
        }
        Ok(cmd.result)
    }

    pub fn identify_controller(&mut self) -> Result<ControllerIdentity, NvmeError> {
        let _span = info_span!("nvme_identify_controller", path = %self.path.display()).entered();
        let mut page = Page::default();
        self.admin(&mut identify_command(CNS_CONTROLLER, 0, &mut page))?;
        parse_identify_controller(&page.0)
    }

    pub fn identify_namespace(&mut self, nsid: u32) -> Result<NamespaceIdentity, NvmeError> {
        let _span =
            info_span!("nvme_identify_namespace", path = %self.path.display(), nsid).entered();
        let mut page = Page::default();
        self.admin(&mut identify_command(CNS_NAMESPACE, nsid, &mut page))?;
        parse_identify_namespace(&page.0)
    }

    pub fn smart_log(&mut self) -> Result<SmartLog, NvmeError> {
        let _span = info_span!("nvme_smart_log", path = %self.path.display()).entered();
        let mut page = Page::default();
        self.admin(&mut get_log_page_command(
            LOG_SMART,
            NSID_ALL,
            SMART_LOG_BYTES,
            &mut page,
        ))?;
        parse_smart_log(&page.0[..SMART_LOG_BYTES])
    }
}

/// A ring of 128-byte SQEs and 32-byte CQEs (what NVMe passthrough needs). Completions of
/// passthrough commands run as task work; with SINGLE_ISSUER + DEFER_TASKRUN (6.1+) that work
/// runs when the submitter waits, with no extra wake-up, which makes io_uring as fast as the
/// ioctl in the guest (it was ~15% slower with neither flag). Older kernels refuse the flags
/// (EINVAL): then COOP_TASKRUN (5.19+), then none.
fn build_ring(path: &Path) -> Result<Ring, NvmeError> {
    let err = |source| NvmeError::Ring {
        path: path.display().to_string(),
        source,
    };
    let builder = IoUring::<squeue::Entry128, cqueue::Entry32>::builder;
    let attempts: [fn(&mut io_uring::Builder<squeue::Entry128, cqueue::Entry32>); 3] = [
        |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        },
        |b| {
            b.setup_coop_taskrun();
        },
        |_| {},
    ];
    let mut last = None;
    for configure in attempts {
        let mut b = builder();
        configure(&mut b);
        match b.build(RING_ENTRIES) {
            Ok(ring) => return Ok(Ring(ring)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

fn is_unsupported(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOTTY)
    )
}

/// Submits one `URING_CMD` and waits for its completion. Returns the NVMe status (0 = success);
/// the CQE32's big_cqe[0] carries the completion's result dword.
fn uring_admin(ring: &mut Ring, fd: i32, cmd: &mut NvmeAdminCmd) -> std::io::Result<u32> {
    let entry = opcode::UringCmd80::new(types::Fd(fd), NVME_URING_CMD_ADMIN)
        .cmd(cmd.to_uring_bytes())
        .build()
        .user_data(u64::from(cmd.opcode));
    // SAFETY: the SQE points at the data buffer named in `cmd.addr`, which the caller keeps alive
    // until this function returns, and this function waits for the completion before returning.
    unsafe { ring.0.submission().push(&entry) }
        .map_err(|_| std::io::Error::other("submission queue full"))?;
    ring.0.submit_and_wait(1)?;
    let cqe = ring
        .0
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::other("no completion after submit_and_wait"))?;
    let result = cqe.result();
    if result < 0 {
        return Err(std::io::Error::from_raw_os_error(-result));
    }
    cmd.result = cqe.big_cqe()[0] as u32;
    Ok(result as u32)
}

nix::ioctl_readwrite_bad!(nvme_ioctl_admin_cmd, NVME_IOCTL_ADMIN_CMD, NvmeAdminCmd);

/// Runs one admin command through the ioctl. Returns the NVMe status (0 = success).
fn ioctl_admin(fd: i32, cmd: &mut NvmeAdminCmd) -> std::io::Result<u32> {
    // SAFETY: `cmd` is a valid `struct nvme_passthru_cmd`; its `addr` points at a buffer of
    // `data_len` bytes that the caller keeps alive for the call.
    let status = unsafe { nvme_ioctl_admin_cmd(fd, cmd) }.map_err(std::io::Error::from)?;
    Ok(status as u32)
}

/// Latency of O_DIRECT reads of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadProbe {
    pub reads: u32,
    pub block_bytes: u32,
    pub median_us: u64,
    pub max_us: u64,
}

/// Reads `reads` blocks of 4 KiB spread over the first `span_bytes` of a namespace block device
/// (`/dev/nvmeXnY`) with O_DIRECT through tokio-uring, and reports the latency. Runs its own
/// tokio-uring runtime: call from a plain thread.
pub fn read_probe(path: &Path, span_bytes: u64, reads: u32) -> Result<ReadProbe, NvmeError> {
    let _span = info_span!("nvme_read_probe", path = %path.display(), reads).entered();
    let block = IDENTIFY_BYTES as u64;
    let blocks = (span_bytes / block).max(1);
    tokio_uring::start(async {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|source| NvmeError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let file = tokio_uring::fs::File::from_std(file);
        let mut latencies = Vec::with_capacity(reads as usize);
        let mut buffer = AlignedBlock::new();
        for i in 0..u64::from(reads.max(1)) {
            // A spread of offsets (multiplicative hashing) so the probe is not one cached block.
            let offset = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % blocks) * block;
            let started = Instant::now();
            let (result, returned) = file.read_at(buffer, offset).await;
            buffer = returned;
            let probe_err = |source| NvmeError::Probe {
                path: path.display().to_string(),
                offset,
                source,
            };
            let n = result.map_err(probe_err)?;
            if n as u64 != block {
                return Err(probe_err(std::io::Error::other(format!(
                    "short read of {n} bytes"
                ))));
            }
            latencies.push(started.elapsed());
        }
        let _ = file.close().await;
        Ok(summarize(&mut latencies))
    })
}

fn summarize(latencies: &mut [Duration]) -> ReadProbe {
    latencies.sort();
    let us = |d: Duration| d.as_micros() as u64;
    ReadProbe {
        reads: latencies.len() as u32,
        block_bytes: IDENTIFY_BYTES as u32,
        median_us: latencies
            .get(latencies.len() / 2)
            .map(|d| us(*d))
            .unwrap_or(0),
        max_us: latencies.last().map(|d| us(*d)).unwrap_or(0),
    }
}

/// A page-aligned 4 KiB buffer that tokio-uring can own during an O_DIRECT read.
#[derive(Debug)]
struct AlignedBlock {
    page: Box<Page>,
    initialized: usize,
}

impl AlignedBlock {
    fn new() -> AlignedBlock {
        AlignedBlock {
            page: Box::default(),
            initialized: 0,
        }
    }
}

// SAFETY: the pointer is to a heap allocation owned by the box, which does not move while the
// buffer is owned by the runtime; the sizes describe that allocation.
unsafe impl tokio_uring::buf::IoBuf for AlignedBlock {
    fn stable_ptr(&self) -> *const u8 {
        self.page.0.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.initialized
    }
    fn bytes_total(&self) -> usize {
        self.page.0.len()
    }
}

// SAFETY: as for IoBuf; `set_init` only records how many bytes the kernel wrote.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBlock {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.page.0.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.initialized = self.initialized.max(pos);
    }
}

/// Median latency of `count` SMART reads through `transport`, in microseconds.
pub fn measure_smart_us(path: &Path, transport: Transport, count: u32) -> Result<u64, NvmeError> {
    let mut controller = NvmeController::open(path, transport)?;
    let mut latencies = Vec::with_capacity(count as usize);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        controller.smart_log()?;
        latencies.push(started.elapsed());
    }
    Ok(summarize(&mut latencies).median_us)
}

/// Median latencies of SMART reads through io_uring and through the ioctl, `count` of each,
/// interleaved so that both see the same noise (a shared, emulated machine drifts). Returns
/// (uring_us, ioctl_us).
pub fn measure_smart_pair_us(path: &Path, count: u32) -> Result<(u64, u64), NvmeError> {
    let mut uring = NvmeController::open(path, Transport::Uring)?;
    let mut ioctl = NvmeController::open(path, Transport::Ioctl)?;
    let (mut uring_samples, mut ioctl_samples) = (Vec::new(), Vec::new());
    for _ in 0..count.max(1) {
        for (controller, samples) in [
            (&mut uring, &mut uring_samples),
            (&mut ioctl, &mut ioctl_samples),
        ] {
            let started = Instant::now();
            controller.smart_log()?;
            samples.push(started.elapsed());
        }
    }
    Ok((
        summarize(&mut uring_samples).median_us,
        summarize(&mut ioctl_samples).median_us,
    ))
}
