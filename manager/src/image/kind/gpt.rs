//! A GPT disk image following the Discoverable Partitions Specification.
//!
//! berthd parses the table itself ([`table`], unprivileged), picks the root (or usr) partition
//! for this architecture, tells the filesystem in it from the partition's first bytes
//! ([`sniff::from_magic`]), and asks the helper to mount exactly that byte range of the file;
//! the helper checks only the range's bounds and the filesystem type.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use berth_protocol::manager::{ImagePartition, ImageVerity};

use crate::image::mount::{self, Mount};
use crate::image::sniff::{self, SNIFF_BYTES};
use crate::image::verity::DeviceMapper;
use crate::image::{Format, ImageError, ImageRoot, OpenedImage};

pub mod dps;
pub mod table;

use dps::{Arch, Designator};
use table::{GptError, ReadAt, Selection};

/// Where in a GPT image the root comes from, and what verity data goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    pub selection: Selection,
    /// The filesystem in the selected partition, as the kernel names it (squashfs, erofs, ext4).
    pub fstype: &'static str,
    /// Why the verity data is not enforced, when the image has a verity partition.
    pub verity_unenforced: Option<&'static str>,
}

impl RootPartition {
    /// What inspect shows of the partition.
    pub fn details(&self) -> ImagePartition {
        let s = &self.selection;
        ImagePartition {
            designator: s.designator.name().to_owned(),
            number: i64::from(s.number),
            architecture: s.arch.name().to_owned(),
            filesystem: self.fstype.to_owned(),
            offset: i64::try_from(s.extent.offset).unwrap_or(i64::MAX),
            size: i64::try_from(s.extent.size).unwrap_or(i64::MAX),
        }
    }

    /// What inspect shows of the verity data, if the partition has any.
    pub fn verity(&self) -> Option<ImageVerity> {
        let s = &self.selection;
        let (verity, _) = s.designator.verity()?;
        Some(ImageVerity {
            partition: verity.name().to_owned(),
            number: i64::from(s.verity?),
            signature_number: s.verity_sig.map(i64::from),
            enforced: false,
            reason: self.verity_unenforced.map(str::to_owned),
        })
    }

    /// The attach warning for verity data that is found but not enforced.
    pub fn verity_warning(&self, image: &str) -> Option<String> {
        let reason = self.verity_unenforced?;
        let number = self.selection.verity?;
        let (verity, _) = self.selection.designator.verity()?;
        let sig = match self.selection.verity_sig {
            Some(n) => format!(" and a signature partition (#{n})"),
            None => String::new(),
        };
        Some(format!(
            "image {image}: {} partition #{number}{sig} found, but verity is NOT enforced: {reason}; \
             the image is mounted read-only without integrity checks",
            verity.name()
        ))
    }
}

/// Finds the partition to mount in the GPT image `file` of `disk_size` bytes.
pub fn locate(file: &File, disk_size: u64, label: &str) -> Result<RootPartition, ImageError> {
    locate_in(file, disk_size, label, DeviceMapper::probe())
}

fn locate_in<R: ReadAt + ?Sized>(
    disk: &R,
    disk_size: u64,
    label: &str,
    device_mapper: DeviceMapper,
) -> Result<RootPartition, ImageError> {
    let gpt = |source: GptError| ImageError::Gpt {
        image: label.to_owned(),
        source,
    };
    let arch = Arch::native().ok_or_else(|| gpt(GptError::UnknownArch(std::env::consts::ARCH)))?;
    let selection = table::parse(disk, disk_size)
        .and_then(|t| t.select(arch))
        .map_err(gpt)?;
    if selection.designator == Designator::Usr {
        return Err(gpt(GptError::UsrOnly {
            number: selection.number,
        }));
    }
    let extent = selection.extent;
    let mut head = vec![0u8; SNIFF_BYTES.min(usize::try_from(extent.size).unwrap_or(SNIFF_BYTES))];
    disk.read_exact_at(&mut head, extent.offset)
        .map_err(|source| {
            gpt(GptError::Read {
                what: "selected partition",
                source,
            })
        })?;
    let filesystem = sniff::from_magic(&head);
    let Some(fstype) = super::raw::fstype(&filesystem) else {
        return Err(ImageError::GptPartitionFormat {
            image: label.to_owned(),
            partition: format!(
                "{} partition #{}",
                selection.designator.name(),
                selection.number
            ),
            found: filesystem.to_string(),
        });
    };
    let verity_unenforced = selection.verity.map(|_| device_mapper.reason());
    Ok(RootPartition {
        selection,
        fstype,
        verity_unenforced,
    })
}

/// Opens the GPT image `fd` (a regular file open for reading): locates its root partition,
/// then has the helper mount that byte range of the file read-only.
pub fn open(fd: OwnedFd, label: &str) -> Result<OpenedImage, ImageError> {
    let file = File::from(fd);
    let size = file
        .metadata()
        .map_err(|source| ImageError::OpenImage {
            path: label.to_owned(),
            source,
        })?
        .len();
    let partition = locate(&file, size, label)?;
    let fd = OwnedFd::from(file);
    let extent = partition.selection.extent;
    let Mount { root, .. } = mount::mount_image(&fd, partition.fstype, extent.offset, extent.size)
        .map_err(|source| ImageError::Mount {
            image: label.to_owned(),
            format: format!(
                "{} in {} partition #{} of a GPT disk image",
                partition.fstype,
                partition.selection.designator.name(),
                partition.selection.number
            ),
            source: Box::new(source),
        })?;
    Ok(OpenedImage {
        root: ImageRoot::from_mount(root, fd, PathBuf::from(label))?,
        format: Format::Gpt,
        keep_alive: Vec::new(),
        partition: Some(partition),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::kind::gpt::table::tests::Disk;

    fn disk_with_root(fs_magic: &[u8], verity: bool) -> Vec<u8> {
        let mut entries = vec![table::tests::root(2048, 4095)];
        if verity {
            entries.push(table::tests::entry(
                Designator::RootVerity,
                Arch::X86_64,
                4096,
                4351,
            ));
        }
        let mut bytes = Disk::new(entries).bytes();
        bytes[2048 * 512..2048 * 512 + fs_magic.len()].copy_from_slice(fs_magic);
        bytes
    }

    fn locate_bytes(bytes: &[u8]) -> Result<RootPartition, ImageError> {
        locate_in(bytes, bytes.len() as u64, "disk.raw", DeviceMapper::Missing)
    }

    #[test]
    fn the_root_partition_s_filesystem_is_sniffed() {
        let bytes = disk_with_root(b"hsqs", false);

        let located = locate_bytes(&bytes).expect("locate");

        assert_eq!(located.fstype, "squashfs");
        assert_eq!(located.selection.extent.offset, 2048 * 512);
        assert_eq!(located.verity_unenforced, None);
        assert_eq!(located.verity_warning("disk.raw"), None);
    }

    #[test]
    fn a_root_partition_holding_no_filesystem_is_refused_naming_what_it_holds() {
        let bytes = disk_with_root(b"\x1f\x8b", false);

        let err = locate_bytes(&bytes).expect_err("gzip in the root partition");

        assert!(
            matches!(err, ImageError::GptPartitionFormat { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("root partition #1") && err.to_string().contains("gzip"),
            "{err}"
        );
    }

    #[test]
    fn a_verity_partition_without_device_mapper_gives_a_warning_naming_it() {
        let bytes = disk_with_root(b"hsqs", true);

        let located = locate_bytes(&bytes).expect("locate");
        let warning = located.verity_warning("disk.raw").expect("a warning");

        assert!(warning.contains("root-verity partition #2"), "{warning}");
        assert!(warning.contains("NOT enforced"), "{warning}");
        assert!(warning.contains("no device-mapper"), "{warning}");
    }

    #[test]
    fn a_usr_only_disk_is_refused_as_not_supported_yet() {
        let entries = vec![table::tests::entry(
            Designator::Usr,
            Arch::X86_64,
            2048,
            4095,
        )];
        let mut bytes = Disk::new(entries).bytes();
        bytes[2048 * 512..2048 * 512 + 4].copy_from_slice(b"hsqs");

        let err = locate_bytes(&bytes).expect_err("usr only");

        assert!(
            err.to_string().contains("usr partition (#1) but no root"),
            "{err}"
        );
    }

    #[test]
    fn a_table_error_names_the_image_and_the_problem() {
        let mut disk = Disk::new(vec![table::tests::root(2048, 4095)]);
        disk.corrupt_header_crc = true;
        let bytes = disk.bytes();

        let err = locate_bytes(&bytes).expect_err("bad crc");

        let text = err.to_string();
        assert!(
            text.contains("disk.raw") && text.contains("header CRC32"),
            "{text}"
        );
    }
}
