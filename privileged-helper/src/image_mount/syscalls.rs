//! The privileged operations of an image mount, behind a trait as the sandbox's are
//! (`sandbox/syscalls.rs`): [`LinuxImageSyscalls`] asks the kernel; the test-only
//! `RecordingImageSyscalls` in `tests` plays a set of loop devices, so the sharing and
//! configuration logic in `loop_device.rs` is checked without root.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// `LO_FLAGS_READ_ONLY` (linux/loop.h).
pub(crate) const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the device unbinds itself at its last close (the mount's).
pub(crate) const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_FLAGS_PARTSCAN`: never set; a partition table in a hostile image is not the kernel's
/// business (the manager reads GPT itself and asks for one range).
pub(crate) const LO_FLAGS_PARTSCAN: u32 = 8;

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// What a bound loop device reads (`LOOP_GET_STATUS64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoopStatus {
    /// `st_dev` and `st_ino` of the backing file.
    pub backing_dev: u64,
    pub backing_ino: u64,
    pub offset: u64,
    /// 0 for "to the end of the file".
    pub size_limit: u64,
    pub flags: u32,
}

/// A file system mount that failed: the errno and what the file system said (its `fsopen`
/// log, e.g. "squashfs: Can't find a SQUASHFS superblock on loop3").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountFailure {
    pub errno: Errno,
    pub messages: Vec<String>,
}

pub(crate) trait ImageSyscalls {
    /// Numbers of the loop devices now bound to a file (`/sys/block/loopN/loop` exists).
    fn bound_loop_devices(&self) -> Result<Vec<u32>, Errno>;
    /// `open("/dev/loopN", O_RDONLY)`.
    fn open_loop(&self, number: u32) -> Result<OwnedFd, Errno>;
    /// `LOOP_GET_STATUS64`; `ENXIO` when the device is not bound.
    fn loop_status(&self, device: BorrowedFd<'_>) -> Result<LoopStatus, Errno>;
    /// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: a free device's number (made if need be).
    fn loop_get_free(&self) -> Result<u32, Errno>;
    /// `LOOP_CONFIGURE`: binds `device` to `backing` over `offset`..`offset + size`, with
    /// `flags` (`LO_FLAGS_*`). `EBUSY` when someone bound it first.
    fn loop_configure(
        &self,
        device: BorrowedFd<'_>,
        backing: BorrowedFd<'_>,
        offset: u64,
        size: u64,
        flags: u32,
    ) -> Result<(), Errno>;
    /// `fsopen(fstype)`, `source` = `device`, the `ro` flag and `flags`, create, then
    /// `fsmount` with `attrs`: a detached mount, attached to no path.
    fn mount_device(
        &self,
        fstype: &CStr,
        device: &CStr,
        flags: &[&CStr],
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, MountFailure>;
}

/// The real kernel.
pub(crate) struct LinuxImageSyscalls;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// Reads the file system context's messages until none is left (each `read` returns one).
fn drain_log(fs: &OwnedFd) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buffer = [0u8; 512];
    // A context keeps a handful of messages; the bound guards against a kernel that repeats.
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buffer) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buffer[..n]);
                // "e ", "w " or "i " then the message.
                let text = text.get(2..).unwrap_or(&text).trim_end().to_string();
                messages.push(text);
            }
            _ => break,
        }
    }
    messages
}

impl ImageSyscalls for LinuxImageSyscalls {
    fn bound_loop_devices(&self) -> Result<Vec<u32>, Errno> {
        let entries = std::fs::read_dir("/sys/block")
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        let mut bound = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_prefix("loop"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if entry.path().join("loop").exists() {
                bound.push(number);
            }
        }
        bound.sort_unstable();
        Ok(bound)
    }

    fn open_loop(&self, number: u32) -> Result<OwnedFd, Errno> {
        let path = CString::new(format!("/dev/loop{number}")).map_err(|_| Errno::INVAL)?;
        rustix::fs::open(
            path.as_c_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
    }

    fn loop_status(&self, device: BorrowedFd<'_>) -> Result<LoopStatus, Errno> {
        let mut info = zeroed_info();
        // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through the pointer, which
        // points at a live, correctly laid out one.
        let ret = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_GET_STATUS64,
                &mut info as *mut LoopInfo64,
            )
        };
        if ret == -1 {
            return Err(last_errno());
        }
        Ok(LoopStatus {
            backing_dev: info.lo_device,
            backing_ino: info.lo_inode,
            offset: info.lo_offset,
            size_limit: info.lo_sizelimit,
            flags: info.lo_flags,
        })
    }

    fn loop_get_free(&self) -> Result<u32, Errno> {
        let control = rustix::fs::open(
            c"/dev/loop-control",
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let ret = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        u32::try_from(ret).map_err(|_| last_errno())
    }

    fn loop_configure(
        &self,
        device: BorrowedFd<'_>,
        backing: BorrowedFd<'_>,
        offset: u64,
        size: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        let mut info = zeroed_info();
        info.lo_offset = offset;
        info.lo_sizelimit = size;
        info.lo_flags = flags;
        let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| Errno::BADF)?;
        let config = LoopConfig {
            fd,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config through the pointer, which points
        // at a live, correctly laid out one; the backing fd it names is borrowed for the call.
        let ret = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if ret == -1 { Err(last_errno()) } else { Ok(()) }
    }

    fn mount_device(
        &self,
        fstype: &CStr,
        device: &CStr,
        flags: &[&CStr],
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, MountFailure> {
        let bare = |errno| MountFailure {
            errno,
            messages: Vec::new(),
        };
        let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(bare)?;
        let with_log = |errno| MountFailure {
            errno,
            messages: drain_log(&fs),
        };
        rustix::mount::fsconfig_set_string(&fs, c"source", device).map_err(with_log)?;
        rustix::mount::fsconfig_set_flag(&fs, c"ro").map_err(with_log)?;
        for flag in flags {
            rustix::mount::fsconfig_set_flag(&fs, *flag).map_err(with_log)?;
        }
        rustix::mount::fsconfig_create(&fs).map_err(with_log)?;
        rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(with_log)
    }
}
