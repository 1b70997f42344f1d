//! What an image file is, from its type and its magic bytes (never from its name).
//!
//! The file is hostile: at most [`SNIFF_BYTES`] are read from its start, with `pread`, so the
//! file offset of a descriptor the caller passed is left alone.

use std::fmt;
use std::os::fd::AsFd;

use rustix::fs::FileType;
use rustix::io::Errno;

/// Bytes read from the start of a file to tell its format: the GPT header of a disk with
/// 4096-byte sectors sits at 4096.
pub const SNIFF_BYTES: usize = 4096 + 8;

/// What a file holds, as far as its first bytes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Directory,
    /// `hsqs` at 0.
    Squashfs,
    /// 0xE0F5E1E2 (little-endian) at 1024.
    Erofs,
    /// 0xEF53 (little-endian) at 1080.
    Ext4,
    /// `EFI PART` at 512 (512-byte sectors) or 4096 (4096-byte sectors).
    Gpt,
    /// `ustar` at 257.
    Tar,
    /// 1f 8b at 0.
    Gzip,
    /// 28 b5 2f fd at 0.
    Zstd,
    /// A regular file of no format known here: its first bytes, for the message.
    Unknown {
        head: Vec<u8>,
    },
    /// Neither a directory nor a regular file (a device, FIFO, socket, symlink).
    NotAnImage {
        file_type: &'static str,
    },
}

impl Format {
    /// The image type shown by `image list` (`directory`, `raw`, `gpt`, `tar`).
    pub fn image_type(&self) -> &'static str {
        match self {
            Format::Directory => "directory",
            Format::Squashfs | Format::Erofs | Format::Ext4 => "raw",
            Format::Gpt => "gpt",
            Format::Tar | Format::Gzip | Format::Zstd => "tar",
            Format::Unknown { .. } | Format::NotAnImage { .. } => "unknown",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Directory => f.write_str("directory"),
            Format::Squashfs => f.write_str("squashfs filesystem"),
            Format::Erofs => f.write_str("erofs filesystem"),
            Format::Ext4 => f.write_str("ext2/3/4 filesystem"),
            Format::Gpt => f.write_str("GPT disk image"),
            Format::Tar => f.write_str("tar archive"),
            Format::Gzip => f.write_str("gzip-compressed file"),
            Format::Zstd => f.write_str("zstd-compressed file"),
            Format::Unknown { head } if head.is_empty() => f.write_str("empty file"),
            Format::Unknown { head } => {
                f.write_str("unknown format (first bytes")?;
                for byte in head.iter().take(8) {
                    write!(f, " {byte:02x}")?;
                }
                f.write_str(")")
            }
            Format::NotAnImage { file_type } => f.write_str(file_type),
        }
    }
}

/// The format of the file `fd` refers to: its type from `fstat`, then for a regular file the
/// magic bytes of its first [`SNIFF_BYTES`].
pub fn sniff(fd: impl AsFd) -> Result<Format, Errno> {
    let fd = fd.as_fd();
    let stat = rustix::fs::fstat(fd)?;
    let file_type = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => return Ok(Format::Directory),
        FileType::RegularFile => None,
        FileType::BlockDevice => Some("block device"),
        FileType::CharacterDevice => Some("character device"),
        FileType::Fifo => Some("FIFO"),
        FileType::Socket => Some("socket"),
        FileType::Symlink => Some("symbolic link"),
        FileType::Unknown => Some("file of unknown type"),
    };
    if let Some(file_type) = file_type {
        return Ok(Format::NotAnImage { file_type });
    }
    let mut head = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match rustix::io::pread(fd, &mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(from_magic(&head))
}

/// The format the bytes at the start of a regular file show.
pub fn from_magic(head: &[u8]) -> Format {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    // Filesystems whose superblock starts the file first; the GPT header before erofs and ext4,
    // whose magic offsets fall inside a GPT's partition entries; tar (a header of names) before
    // them too, its magic being longer.
    if at(0, b"hsqs") {
        Format::Squashfs
    } else if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        Format::Gpt
    } else if at(257, b"ustar") {
        Format::Tar
    } else if at(1024, &0xE0F5_E1E2u32.to_le_bytes()) {
        Format::Erofs
    } else if at(1080, &0xEF53u16.to_le_bytes()) {
        Format::Ext4
    } else if at(0, &[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else if at(0, &[0x1f, 0x8b]) {
        Format::Gzip
    } else {
        Format::Unknown {
            head: head.iter().take(8).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    use super::*;

    /// 8 KiB of zeros with `magic` at `offset`.
    fn with_magic(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        bytes[offset..offset + magic.len()].copy_from_slice(magic);
        bytes
    }

    fn sniff_bytes(bytes: &[u8]) -> Format {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        sniff(&file).unwrap()
    }

    #[test]
    fn squashfs_magic() {
        assert_eq!(sniff_bytes(&with_magic(0, b"hsqs")), Format::Squashfs);
    }

    #[test]
    fn erofs_magic_at_1024() {
        let bytes = with_magic(1024, &[0xe2, 0xe1, 0xf5, 0xe0]);

        assert_eq!(sniff_bytes(&bytes), Format::Erofs);
    }

    #[test]
    fn ext4_magic_at_1080() {
        assert_eq!(sniff_bytes(&with_magic(1080, &[0x53, 0xef])), Format::Ext4);
    }

    #[test]
    fn gpt_header_at_512_and_at_4096() {
        assert_eq!(sniff_bytes(&with_magic(512, b"EFI PART")), Format::Gpt);
        assert_eq!(sniff_bytes(&with_magic(4096, b"EFI PART")), Format::Gpt);
    }

    #[test]
    fn gpt_wins_over_a_filesystem_magic_in_its_partition_entries() {
        let mut bytes = with_magic(512, b"EFI PART");
        bytes[1080..1082].copy_from_slice(&[0x53, 0xef]);

        assert_eq!(sniff_bytes(&bytes), Format::Gpt);
    }

    #[test]
    fn tar_magic_at_257() {
        assert_eq!(sniff_bytes(&with_magic(257, b"ustar")), Format::Tar);
    }

    #[test]
    fn gzip_magic() {
        assert_eq!(sniff_bytes(&[0x1f, 0x8b, 0x08, 0x00]), Format::Gzip);
    }

    #[test]
    fn zstd_magic() {
        assert_eq!(sniff_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0x00]), Format::Zstd);
    }

    #[test]
    fn garbage_is_unknown_and_shows_its_first_bytes() {
        let format = sniff_bytes(b"\x7fELF\x02\x01\x01\x00garbage");

        assert_eq!(format.image_type(), "unknown");
        assert_eq!(
            format.to_string(),
            "unknown format (first bytes 7f 45 4c 46 02 01 01 00)"
        );
    }

    #[test]
    fn a_short_file_is_unknown_not_an_error() {
        // Shorter than every magic offset but 0: the bounded checks must not index past it.
        assert!(matches!(sniff_bytes(b"hs"), Format::Unknown { .. }));
    }

    #[test]
    fn an_empty_file_says_so() {
        assert_eq!(sniff_bytes(b"").to_string(), "empty file");
    }

    #[test]
    fn a_directory_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();

        assert_eq!(sniff(&fd).unwrap(), Format::Directory);
    }

    #[test]
    fn a_socket_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let fd = rustix::fs::open(
            &path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();

        let format = sniff(&fd).unwrap();

        assert_eq!(
            format,
            Format::NotAnImage {
                file_type: "socket"
            }
        );
    }

    #[test]
    fn sniff_leaves_the_file_offset_alone() {
        // A file far larger than the bound: the offset stays 0 (pread), so a caller that
        // passed the fd can still read it from the start.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();

        sniff(&file).unwrap();

        let offset = rustix::fs::seek(&file, rustix::fs::SeekFrom::Current(0)).unwrap();
        assert_eq!(offset, 0);
    }
}
