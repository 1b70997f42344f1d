//! The file systems `MountImage` knows, and how each is mounted read-only.

use std::ffi::CStr;

/// What the floor allows when helper.toml says nothing: the read-only image formats. The
/// kernel's parsers are not hardened against hostile images, and these two are the smallest
/// and the ones systemd's portable images use.
pub const DEFAULT_FILESYSTEMS: [&str; 2] = ["squashfs", "erofs"];

/// A file system the helper can mount from a loop device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    Squashfs,
    Erofs,
    Ext4,
}

const ALL: [Filesystem; 3] = [Filesystem::Squashfs, Filesystem::Erofs, Filesystem::Ext4];

impl Filesystem {
    /// The file system of this kernel name (`fsopen`'s), if the helper knows it.
    pub fn named(name: &str) -> Option<Filesystem> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Squashfs => "squashfs",
            Filesystem::Erofs => "erofs",
            Filesystem::Ext4 => "ext4",
        }
    }

    pub(crate) fn kernel_name(self) -> &'static CStr {
        match self {
            Filesystem::Squashfs => c"squashfs",
            Filesystem::Erofs => c"erofs",
            Filesystem::Ext4 => c"ext4",
        }
    }

    /// `statfs`'s `f_type` of a mount of it (linux/magic.h).
    pub(crate) fn magic(self) -> u64 {
        match self {
            Filesystem::Squashfs => 0x7371_7368,
            Filesystem::Erofs => 0xE0F5_E1E2,
            Filesystem::Ext4 => 0xEF53,
        }
    }

    /// `fsconfig` flags besides `ro`. A journal is never replayed: the device is read-only,
    /// and replaying a hostile journal is one more parser to trust.
    pub(crate) fn flags(self) -> &'static [&'static CStr] {
        match self {
            Filesystem::Squashfs | Filesystem::Erofs => &[],
            Filesystem::Ext4 => &[c"norecovery"],
        }
    }
}

/// The names [`Filesystem::named`] knows, for error messages.
pub fn known_names() -> String {
    ALL.map(Filesystem::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_filesystem_is_found_by_its_name() {
        for fs in ALL {
            assert_eq!(Filesystem::named(fs.name()), Some(fs));
            assert_eq!(fs.kernel_name().to_str().unwrap(), fs.name());
        }
    }

    #[test]
    fn an_unknown_name_is_none() {
        assert_eq!(Filesystem::named("vfat"), None);
        assert_eq!(Filesystem::named(""), None);
    }
}
