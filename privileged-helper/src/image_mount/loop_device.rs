//! Loop devices for image files: one per backing file and range, shared by every mount of it,
//! configured in one `LOOP_CONFIGURE` (read-only, autoclear, never partition-scanned).
//!
//! Autoclear is what keeps nothing behind: the device unbinds itself at its last close, which
//! is the last mount's, whoever holds it (berthd's mount fd, a service's mount namespace). The
//! helper therefore keeps no table of devices: sharing finds the bound one by asking each
//! device what it reads, as `losetup -j` does, and a restarted helper finds the same ones.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use super::syscalls::{
    ImageSyscalls, LO_FLAGS_AUTOCLEAR, LO_FLAGS_PARTSCAN, LO_FLAGS_READ_ONLY, LoopStatus,
};

/// The flags of every loop device the helper binds.
pub(crate) const FLAGS: u32 = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;

/// How often a free device is asked for when another process binds it first.
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot find a free loop device: {0}")]
    GetFree(#[source] Errno),
    #[error("cannot open /dev/loop{number}: {source}")]
    Open {
        number: u32,
        #[source]
        source: Errno,
    },
    #[error("cannot bind /dev/loop{number} to the image: {source}")]
    Configure {
        number: u32,
        #[source]
        source: Errno,
    },
    #[error("every free loop device was taken by someone else first ({ATTEMPTS} attempts)")]
    Contended,
}

/// What a loop device is to read: the backing file (by `st_dev`, `st_ino`) and the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub backing_dev: u64,
    pub backing_ino: u64,
    pub offset: u64,
    pub size: u64,
}

impl Range {
    /// True for a device the helper itself would have bound for this range.
    fn served_by(&self, status: &LoopStatus) -> bool {
        status.backing_dev == self.backing_dev
            && status.backing_ino == self.backing_ino
            && status.offset == self.offset
            && status.size_limit == self.size
            && status.flags & FLAGS == FLAGS
            && status.flags & LO_FLAGS_PARTSCAN == 0
    }
}

/// A loop device reading the range, held open until the file system is mounted from it.
#[derive(Debug)]
pub(crate) struct Attached {
    pub device: OwnedFd,
    pub number: u32,
    /// Bound before this call (by an earlier mount of the same range).
    pub shared: bool,
}

/// The bound device reading `range`, or a newly bound one.
pub(crate) fn attach(
    os: &impl ImageSyscalls,
    backing: BorrowedFd<'_>,
    range: &Range,
) -> Result<Attached, LoopError> {
    if let Some(shared) = find_bound(os, range) {
        return Ok(shared);
    }
    for _ in 0..ATTEMPTS {
        let number = os.loop_get_free().map_err(LoopError::GetFree)?;
        let device = os
            .open_loop(number)
            .map_err(|source| LoopError::Open { number, source })?;
        match os.loop_configure(device.as_fd(), backing, range.offset, range.size, FLAGS) {
            Ok(()) => {
                return Ok(Attached {
                    device,
                    number,
                    shared: false,
                });
            }
            // Bound by another process between GET_FREE and CONFIGURE: ask again.
            Err(Errno::BUSY) => continue,
            Err(source) => return Err(LoopError::Configure { number, source }),
        }
    }
    Err(LoopError::Contended)
}

/// A bound device already reading `range` with the helper's flags. It is checked after it is
/// opened: the open keeps it from autoclearing, so what the status says then stays true.
fn find_bound(os: &impl ImageSyscalls, range: &Range) -> Option<Attached> {
    // A device list that cannot be read only means nothing is shared.
    let bound = os.bound_loop_devices().unwrap_or_default();
    bound.into_iter().find_map(|number| {
        let device = os.open_loop(number).ok()?;
        let status = os.loop_status(device.as_fd()).ok()?;
        range.served_by(&status).then_some(Attached {
            device,
            number,
            shared: true,
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::ffi::CStr;

    use rustix::mount::MountAttrFlags;

    use super::*;
    use crate::image_mount::syscalls::MountFailure;

    /// Plays a set of loop devices: `bound` maps device numbers to what they read; `races`
    /// makes that many CONFIGUREs fail with EBUSY first.
    #[derive(Default)]
    pub(crate) struct FakeLoops {
        pub bound: RefCell<BTreeMap<u32, LoopStatus>>,
        pub races: RefCell<usize>,
        pub configured: RefCell<Vec<(u32, u64, u64, u32)>>,
        pub mounts: RefCell<Vec<RecordedMount>>,
        pub mount_error: Option<MountFailure>,
        /// Device numbers by the raw fd (of /dev/null) that stands for each open device.
        pub opened: RefCell<BTreeMap<i32, u32>>,
    }

    /// fstype, device, flags, attributes of one `mount_device`.
    pub(crate) type RecordedMount = (String, String, Vec<String>, MountAttrFlags);

    impl FakeLoops {
        fn number_of(&self, device: BorrowedFd<'_>) -> u32 {
            use std::os::fd::AsRawFd;
            self.opened.borrow()[&device.as_raw_fd()]
        }
    }

    impl ImageSyscalls for FakeLoops {
        fn bound_loop_devices(&self) -> Result<Vec<u32>, Errno> {
            Ok(self.bound.borrow().keys().copied().collect())
        }

        fn open_loop(&self, number: u32) -> Result<OwnedFd, Errno> {
            use std::os::fd::AsRawFd;
            let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            self.opened.borrow_mut().insert(fd.as_raw_fd(), number);
            Ok(fd)
        }

        fn loop_status(&self, device: BorrowedFd<'_>) -> Result<LoopStatus, Errno> {
            let number = self.number_of(device);
            self.bound.borrow().get(&number).copied().ok_or(Errno::NXIO)
        }

        fn loop_get_free(&self) -> Result<u32, Errno> {
            let bound = self.bound.borrow();
            Ok((0..).find(|n| !bound.contains_key(n)).unwrap())
        }

        fn loop_configure(
            &self,
            device: BorrowedFd<'_>,
            _backing: BorrowedFd<'_>,
            offset: u64,
            size: u64,
            flags: u32,
        ) -> Result<(), Errno> {
            let number = self.number_of(device);
            if *self.races.borrow() > 0 {
                *self.races.borrow_mut() -= 1;
                // Someone else's device now.
                self.bound.borrow_mut().insert(
                    number,
                    LoopStatus {
                        backing_dev: 0,
                        backing_ino: 0,
                        offset: 0,
                        size_limit: 0,
                        flags: 0,
                    },
                );
                return Err(Errno::BUSY);
            }
            self.configured
                .borrow_mut()
                .push((number, offset, size, flags));
            Ok(())
        }

        fn mount_device(
            &self,
            fstype: &CStr,
            device: &CStr,
            flags: &[&CStr],
            attrs: MountAttrFlags,
        ) -> Result<OwnedFd, MountFailure> {
            self.mounts.borrow_mut().push((
                fstype.to_string_lossy().into_owned(),
                device.to_string_lossy().into_owned(),
                flags
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect(),
                attrs,
            ));
            if let Some(error) = &self.mount_error {
                return Err(error.clone());
            }
            Ok(std::fs::File::open("/").unwrap().into())
        }
    }

    pub(crate) fn range() -> Range {
        Range {
            backing_dev: 64769,
            backing_ino: 4242,
            offset: 1 << 20,
            size: 8 << 20,
        }
    }

    pub(crate) fn status_of(range: &Range, flags: u32) -> LoopStatus {
        LoopStatus {
            backing_dev: range.backing_dev,
            backing_ino: range.backing_ino,
            offset: range.offset,
            size_limit: range.size,
            flags,
        }
    }

    fn backing() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn a_new_device_is_bound_read_only_autoclear_over_the_range() {
        let os = FakeLoops::default();

        let attached = attach(&os, backing().as_fd(), &range()).unwrap();

        assert!(!attached.shared);
        assert_eq!(
            *os.configured.borrow(),
            [(0, 1 << 20, 8 << 20, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR)]
        );
    }

    #[test]
    fn a_device_already_reading_the_range_is_shared() {
        let os = FakeLoops::default();
        os.bound.borrow_mut().insert(3, status_of(&range(), FLAGS));

        let attached = attach(&os, backing().as_fd(), &range()).unwrap();

        assert_eq!((attached.number, attached.shared), (3, true));
        assert!(os.configured.borrow().is_empty());
    }

    #[test]
    fn a_device_of_the_same_file_but_another_range_is_not_shared() {
        let os = FakeLoops::default();
        let other = Range {
            offset: 0,
            ..range()
        };
        os.bound.borrow_mut().insert(0, status_of(&other, FLAGS));

        let attached = attach(&os, backing().as_fd(), &range()).unwrap();

        assert_eq!((attached.number, attached.shared), (1, false));
    }

    #[test]
    fn a_writable_or_partition_scanned_device_of_the_file_is_not_shared() {
        for flags in [
            LO_FLAGS_AUTOCLEAR,
            FLAGS | LO_FLAGS_PARTSCAN,
            LO_FLAGS_READ_ONLY,
        ] {
            let os = FakeLoops::default();
            os.bound.borrow_mut().insert(0, status_of(&range(), flags));

            let attached = attach(&os, backing().as_fd(), &range()).unwrap();

            assert!(!attached.shared, "flags {flags:#x} were shared");
        }
    }

    #[test]
    fn a_device_taken_by_another_process_first_is_skipped() {
        let os = FakeLoops::default();
        *os.races.borrow_mut() = 2;

        let attached = attach(&os, backing().as_fd(), &range()).unwrap();

        assert_eq!(attached.number, 2);
    }

    #[test]
    fn endless_contention_gives_up() {
        let os = FakeLoops::default();
        *os.races.borrow_mut() = ATTEMPTS;

        let error = attach(&os, backing().as_fd(), &range()).unwrap_err();

        assert!(matches!(error, LoopError::Contended), "{error}");
    }
}
