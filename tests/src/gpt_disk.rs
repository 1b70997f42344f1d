//! GPT disk images for tests: a small writer (protective MBR, primary and backup header and
//! entries, CRC32s), with knobs that break one thing each for the hostile-image tests.
//!
//! It is written independently of berthd's parser on purpose: a fixture built by the code
//! under test would share its mistakes (a test checks that sfdisk reads these disks too).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub const SECTOR: u64 = 512;
/// Sectors taken by the entry array (128 entries of 128 bytes).
const ARRAY_SECTORS: u64 = 32;
/// Partitions start on 1 MiB boundaries, as partitioning tools place them.
const ALIGN: u64 = 2048;

/// DPS type GUIDs used by the tests.
pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const ROOT_X86_64_VERITY: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
pub const ROOT_X86_64_VERITY_SIG: &str = "41092b05-9fc8-4523-994f-2def0408b176";
pub const ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
pub const LINUX_GENERIC: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// The on-disk bytes of a GUID: the first three fields little-endian, the rest as printed.
pub fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        bail!("{text} is not a GUID");
    }
    let mut printed = [0u8; 16];
    for (i, byte) in printed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{text} is not a GUID"))?;
    }
    let p = printed;
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[p[3], p[2], p[1], p[0]]);
    out[4..6].copy_from_slice(&[p[5], p[4]]);
    out[6..8].copy_from_slice(&[p[7], p[6]]);
    out[8..].copy_from_slice(&p[8..]);
    Ok(out)
}

struct Partition {
    type_guid: String,
    first_lba: u64,
    sectors: u64,
    contents: Vec<u8>,
    attributes: u64,
    name: String,
}

/// `GptDisk::new().partition(ROOT_X86_64, squashfs_bytes).write(path)`.
#[derive(Default)]
pub struct GptDisk {
    partitions: Vec<Partition>,
    /// The entry count the header claims (128 when unset); entries past 128 are not written.
    claimed_entries: Option<u32>,
    corrupt_header_crc: bool,
    /// Sectors cut off the end of the finished file.
    truncate_sectors: u64,
}

impl GptDisk {
    pub fn new() -> GptDisk {
        GptDisk::default()
    }

    fn next_free(&self) -> u64 {
        let end = self
            .partitions
            .iter()
            .map(|p| p.first_lba + p.sectors)
            .max()
            .unwrap_or(0);
        end.div_ceil(ALIGN).max(1) * ALIGN
    }

    /// Adds a partition of type `type_guid` holding `contents`, after the previous ones.
    pub fn partition(self, type_guid: &str, contents: Vec<u8>) -> GptDisk {
        let first = self.next_free();
        let sectors = (contents.len() as u64).div_ceil(SECTOR).max(1);
        self.partition_at(type_guid, first, sectors, contents)
    }

    /// Adds a partition at an explicit place (which may overlap others or pass the disk end).
    pub fn partition_at(
        mut self,
        type_guid: &str,
        first_lba: u64,
        sectors: u64,
        contents: Vec<u8>,
    ) -> GptDisk {
        let name = format!("part{}", self.partitions.len() + 1);
        self.partitions.push(Partition {
            type_guid: type_guid.to_owned(),
            first_lba,
            sectors,
            contents,
            attributes: 0,
            name,
        });
        self
    }

    /// Sets the attribute bits of the last partition added (e.g. `1 << 63`, DPS no-auto).
    pub fn attributes(mut self, bits: u64) -> GptDisk {
        if let Some(p) = self.partitions.last_mut() {
            p.attributes = bits;
        }
        self
    }

    /// Makes the header claim `count` entries (a hostile count; only 128 are written).
    pub fn claim_entries(mut self, count: u32) -> GptDisk {
        self.claimed_entries = Some(count);
        self
    }

    /// Stores a header CRC32 that does not match the header.
    pub fn corrupt_header_crc(mut self) -> GptDisk {
        self.corrupt_header_crc = true;
        self
    }

    /// Cuts `sectors` off the end of the file after writing (a truncated download).
    pub fn truncate(mut self, sectors: u64) -> GptDisk {
        self.truncate_sectors = sectors;
        self
    }

    /// The disk's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        // Room for the partitions placed in order, then a gap and the backup structures.
        let data_end = self.next_free() + ALIGN;
        let sectors = data_end + ARRAY_SECTORS + 1;
        let usable_first = 2 + ARRAY_SECTORS;
        let usable_last = sectors - ARRAY_SECTORS - 2;
        let mut disk = vec![0u8; (sectors * SECTOR) as usize];

        // Protective MBR: one record of type 0xee covering the disk.
        let mbr_sectors = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
        let record = &mut disk[446..462];
        record[2] = 0x02; // CHS start 0/0/2, as tools write it
        record[4] = 0xee;
        record[5..8].fill(0xff);
        record[8..12].copy_from_slice(&1u32.to_le_bytes());
        record[12..16].copy_from_slice(&mbr_sectors.to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;

        let mut array = vec![0u8; 128 * 128];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&guid_bytes(&p.type_guid)?);
            let mut unique = [0u8; 16];
            unique[0] = i as u8 + 1;
            unique[15] = 0x5a;
            e[16..32].copy_from_slice(&unique);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&(p.first_lba + p.sectors - 1).to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
            let start = (p.first_lba * SECTOR) as usize;
            if let Some(slot) = disk.get_mut(start..start + p.contents.len()) {
                slot.copy_from_slice(&p.contents);
            }
        }
        let array_crc = crc32fast::hash(&array);

        let header = |my_lba: u64, alternate: u64, entries_lba: u64| {
            let mut h = vec![0u8; SECTOR as usize];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my_lba.to_le_bytes());
            h[32..40].copy_from_slice(&alternate.to_le_bytes());
            h[40..48].copy_from_slice(&usable_first.to_le_bytes());
            h[48..56].copy_from_slice(&usable_last.to_le_bytes());
            h[56..72].copy_from_slice(&[0x42; 16]);
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            let count = self.claimed_entries.unwrap_or(128);
            h[80..84].copy_from_slice(&count.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&array_crc.to_le_bytes());
            let crc = crc32fast::hash(&h[..92]);
            let crc = if self.corrupt_header_crc { !crc } else { crc };
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let last = sectors - 1;
        let place = |disk: &mut Vec<u8>, lba: u64, bytes: &[u8]| {
            let at = (lba * SECTOR) as usize;
            disk[at..at + bytes.len()].copy_from_slice(bytes);
        };
        place(&mut disk, 1, &header(1, last, 2));
        place(&mut disk, 2, &array);
        place(&mut disk, last - ARRAY_SECTORS, &array);
        place(&mut disk, last, &header(last, 1, last - ARRAY_SECTORS));
        let keep = disk.len() - (self.truncate_sectors * SECTOR) as usize;
        disk.truncate(keep);
        Ok(disk)
    }

    /// Writes the disk to `path`, readable by all (berthd reads images as user `berth`).
    pub fn write(&self, path: &Path) -> Result<()> {
        fs::write(path, self.bytes()?).with_context(|| format!("writing {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
        Ok(())
    }
}

/// A squashfs image of the directory `tree`, as bytes (mksquashfs must be installed).
pub fn squashfs_of(tree: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let out = scratch.join("partition.squashfs");
    let status = std::process::Command::new("mksquashfs")
        .args([tree.as_os_str(), out.as_os_str()])
        .args(["-quiet", "-no-progress", "-noappend", "-all-root"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running mksquashfs (Debian package squashfs-tools)")?;
    if !status.success() {
        bail!("mksquashfs failed: {status}");
    }
    let bytes = fs::read(&out)?;
    fs::remove_file(&out)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_use_the_mixed_endian_encoding() {
        let bytes = guid_bytes(ROOT_X86_64).unwrap();

        assert_eq!(
            &bytes[..8],
            &[0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d]
        );
        assert_eq!(
            &bytes[8..],
            &[0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09]
        );
    }

    /// sfdisk (util-linux) reads the disk as written: types, places, a valid table.
    #[test]
    fn sfdisk_reads_the_disk_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        GptDisk::new()
            .partition(ROOT_X86_64, vec![7u8; 4096])
            .partition(ROOT_X86_64_VERITY, vec![8u8; 512])
            .write(&path)
            .unwrap();

        let out = std::process::Command::new("sfdisk")
            .arg("--dump")
            .arg(&path)
            .output()
            .expect("sfdisk (Debian package fdisk)");
        let verify = std::process::Command::new("sfdisk")
            .arg("--verify")
            .arg(&path)
            .output()
            .unwrap();

        let dump = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{dump}");
        assert!(
            dump.contains(&format!(
                "start=        2048, size=           8, type={ROOT_X86_64}"
            )),
            "{dump}"
        );
        assert!(
            dump.contains(&format!(
                "start=        4096, size=           1, type={ROOT_X86_64_VERITY}"
            )),
            "{dump}"
        );
        let verified = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success() && verified.contains("No errors detected"),
            "{verified}"
        );
    }
}
