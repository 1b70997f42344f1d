//! GPT disk images laid out by the Discoverable Partitions Specification (DPS).
//!
//! The partition table is hostile input parsed by the unprivileged manager; the helper is
//! only told which byte range of the file to mount and checks nothing but its bounds and the
//! filesystem type. The parser reads through [`ReadAt`] (positional reads), checks the protective MBR,
//! the primary header and its entries (both CRC32s, every count and size bounded, every
//! partition inside the disk's usable area, no two overlapping), then picks the one root (or,
//! failing that, usr) partition for an architecture by its type GUID, skipping partitions
//! flagged no-auto as the DPS says, and notes the verity partitions that go with it.
//! Only the primary header is used: a disk whose primary header is bad is refused, not
//! repaired from the backup, so what is mounted is what every other reader of the primary
//! table sees too.

use std::io;

use thiserror::Error;

use super::dps::{Arch, Designator, FLAG_NO_AUTO, FLAG_READ_ONLY, Guid, PartitionType};

/// Sector sizes tried for the header, in order (the DPS allows 512 and 4096-byte sectors).
const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The header's signature, at the start of sector 1.
const HEADER_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Smallest header size the UEFI specification allows (the fields it defines).
const MIN_HEADER_SIZE: u32 = 92;
/// Most partition entries accepted. Tools write 128; the bound keeps a hostile count from
/// making the parser read or allocate without limit.
pub const MAX_ENTRIES: u32 = 1024;
/// Largest partition entry accepted (entries are 128 << n bytes; 128 in practice).
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// Most bytes of the entry array read: MAX_ENTRIES entries of 128 bytes.
const MAX_ENTRY_ARRAY: u64 = MAX_ENTRIES as u64 * 128;

/// One used entry of the partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based entry number, as `sfdisk` and `/dev/loopNpM` count.
    pub number: u32,
    pub type_guid: Guid,
    pub uuid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// The entry's name, control characters replaced.
    pub label: String,
    pub kind: PartitionType,
}

impl Partition {
    fn describe(&self) -> String {
        let kind = match self.kind {
            PartitionType::Dps(d, a) => format!("{} ({a})", d.name()),
            PartitionType::Other(name) => name.to_string(),
            PartitionType::Unknown => format!("type {}", self.type_guid),
        };
        let no_auto = if self.attributes & FLAG_NO_AUTO != 0 {
            ", no-auto"
        } else {
            ""
        };
        format!("#{} {kind}{no_auto}", self.number)
    }
}

/// A parsed, checked partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub sector_size: u64,
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

/// A partition's place in the disk file, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub size: u64,
}

/// The partition an image's root comes from, and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub designator: Designator,
    pub arch: Arch,
    pub number: u32,
    pub extent: Extent,
    /// The DPS read-only flag (berth mounts read-only whatever it says).
    pub read_only_flag: bool,
    /// The verity hash partition for the root (or usr) partition, if there is one.
    pub verity: Option<u32>,
    /// The verity signature partition, if there is one.
    pub verity_sig: Option<u32>,
}

/// Errors from reading a GPT disk image. Each names what is wrong with the table.
#[derive(Debug, Error)]
pub enum GptError {
    #[error("cannot read the {what} of the disk: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the disk is {size} bytes, too small to hold a GPT")]
    TooSmall { size: u64 },
    #[error("no protective MBR (no boot signature 55 aa, or no partition record of type 0xee)")]
    NoProtectiveMbr,
    #[error("no GPT header (no \"EFI PART\" signature at sector 1 for 512 or 4096-byte sectors)")]
    NoHeader,
    #[error("GPT header revision {revision:#010x} is not 1.x")]
    HeaderRevision { revision: u32 },
    #[error("GPT header size {size} is outside {MIN_HEADER_SIZE}..={sector_size}")]
    HeaderSize { size: u32, sector_size: u64 },
    #[error("GPT header CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("GPT header says it is at sector {lba}, not sector 1")]
    HeaderLba { lba: u64 },
    #[error(
        "GPT usable area {first}..={last} is empty or ends past the disk end ({sectors} sectors)"
    )]
    UsableArea { first: u64, last: u64, sectors: u64 },
    #[error("GPT entry size {size} is not a multiple of 128 between 128 and {MAX_ENTRY_SIZE}")]
    EntrySize { size: u32 },
    #[error("GPT has {count} partition entries, more than the {MAX_ENTRIES} accepted")]
    EntryCount { count: u32 },
    #[error("GPT entry array ({count} × {size} bytes) is larger than {MAX_ENTRY_ARRAY} bytes")]
    EntryArraySize { count: u32, size: u32 },
    #[error(
        "GPT entry array at sector {lba} ({bytes} bytes) is not between the header and the \
         usable area within the disk"
    )]
    EntryArrayPlace { lba: u64, bytes: u64 },
    #[error("GPT entry array CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    EntriesCrc { stored: u32, computed: u32 },
    #[error("partition #{number} ends (sector {last}) before it starts (sector {first})")]
    PartitionInverted { number: u32, first: u64, last: u64 },
    #[error(
        "partition #{number} (sectors {first}..={last}) extends past the disk end ({sectors} \
         sectors)"
    )]
    PartitionPastDiskEnd {
        number: u32,
        first: u64,
        last: u64,
        sectors: u64,
    },
    #[error(
        "partition #{number} (sectors {first}..={last}) lies outside the usable area \
         {usable_first}..={usable_last}"
    )]
    PartitionOutsideUsable {
        number: u32,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error(
        "partitions #{first} (sectors {first_start}..={first_end}) and #{second} (sectors \
         {second_start}..={second_end}) overlap"
    )]
    Overlap {
        first: u32,
        first_start: u64,
        first_end: u64,
        second: u32,
        second_start: u64,
        second_end: u64,
    },
    #[error("no DPS root or usr partition for {arch} (partitions: {found})")]
    NoRootPartition { arch: Arch, found: String },
    #[error(
        "{count} {designator} partitions for {arch} ({numbers}): which one to use is ambiguous"
    )]
    Ambiguous {
        designator: &'static str,
        arch: Arch,
        count: usize,
        numbers: String,
    },
    #[error(
        "the disk has both a root (#{root}) and a usr (#{usr}) partition; mounting usr over the \
         root's /usr is not supported"
    )]
    RootAndUsr { root: u32, usr: u32 },
    #[error(
        "the disk has a usr partition (#{number}) but no root partition; usr-only images need \
         an empty root with the partition mounted on /usr, which berth does not build yet"
    )]
    UsrOnly { number: u32 },
    #[error("this architecture ({0}) has no DPS partition types")]
    UnknownArch(&'static str),
}

/// Reads at an offset without moving a file position, so the caller's descriptor is left as it
/// was (the CLI's descriptor may be shared).
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

fn read_at<R: ReadAt + ?Sized>(
    disk: &R,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), GptError> {
    disk.read_exact_at(buf, offset)
        .map_err(|source| GptError::Read { what, source })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    Guid(g)
}

fn check_protective_mbr(mbr: &[u8; 512]) -> Result<(), GptError> {
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(GptError::NoProtectiveMbr);
    }
    // Four 16-byte partition records from offset 446; the type byte is the fifth.
    let protective = (0..4).any(|i| mbr[446 + i * 16 + 4] == 0xee);
    if protective {
        Ok(())
    } else {
        Err(GptError::NoProtectiveMbr)
    }
}

/// Parses and checks the partition table of a disk of `disk_size` bytes (the file's size: a
/// hostile table cannot claim a larger disk).
pub fn parse<R: ReadAt + ?Sized>(disk: &R, disk_size: u64) -> Result<Table, GptError> {
    if disk_size < 3 * 512 {
        return Err(GptError::TooSmall { size: disk_size });
    }
    let mut mbr = [0u8; 512];
    read_at(disk, 0, &mut mbr, "protective MBR")?;
    check_protective_mbr(&mbr)?;

    let mut found = None;
    for sector_size in SECTOR_SIZES {
        if disk_size < 3 * sector_size {
            break;
        }
        let mut sector = vec![0u8; sector_size as usize];
        read_at(disk, sector_size, &mut sector, "GPT header")?;
        if &sector[..8] == HEADER_SIGNATURE {
            found = Some((sector_size, sector));
            break;
        }
    }
    let (sector_size, header) = found.ok_or(GptError::NoHeader)?;
    let sectors = disk_size / sector_size;

    let revision = le_u32(&header, 8);
    if revision >> 16 != 1 {
        return Err(GptError::HeaderRevision { revision });
    }
    let header_size = le_u32(&header, 12);
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > sector_size {
        return Err(GptError::HeaderSize {
            size: header_size,
            sector_size,
        });
    }
    let stored = le_u32(&header, 16);
    let mut zeroed = header[..header_size as usize].to_vec();
    zeroed[16..20].fill(0);
    let computed = crc32fast::hash(&zeroed);
    if stored != computed {
        return Err(GptError::HeaderCrc { stored, computed });
    }
    let my_lba = le_u64(&header, 24);
    if my_lba != 1 {
        return Err(GptError::HeaderLba { lba: my_lba });
    }
    let usable_first = le_u64(&header, 40);
    let usable_last = le_u64(&header, 48);
    // The usable area must lie inside the disk too, but that is checked after the partitions:
    // on a truncated disk the partition cut off is the more useful thing to name.
    let usable_area_error = GptError::UsableArea {
        first: usable_first,
        last: usable_last,
        sectors,
    };
    if usable_first > usable_last || usable_first >= sectors {
        return Err(usable_area_error);
    }
    let disk_guid = guid_at(&header, 56);
    let entries_lba = le_u64(&header, 72);
    let count = le_u32(&header, 80);
    let entry_size = le_u32(&header, 84);
    let entries_crc = le_u32(&header, 88);

    if !(128..=MAX_ENTRY_SIZE).contains(&entry_size) || !entry_size.is_multiple_of(128) {
        return Err(GptError::EntrySize { size: entry_size });
    }
    if count > MAX_ENTRIES {
        return Err(GptError::EntryCount { count });
    }
    let array_bytes = u64::from(count) * u64::from(entry_size);
    if array_bytes > MAX_ENTRY_ARRAY {
        return Err(GptError::EntryArraySize {
            count,
            size: entry_size,
        });
    }
    // The array lies after the header and before the first usable sector (for the primary
    // table), so no partition can hold it. The products cannot overflow: the start is checked,
    // and the first usable sector lies inside the disk (checked above).
    let array_end_ok = entries_lba
        .checked_mul(sector_size)
        .and_then(|start| start.checked_add(array_bytes))
        .is_some_and(|end| end <= usable_first * sector_size);
    if entries_lba < 2 || !array_end_ok {
        return Err(GptError::EntryArrayPlace {
            lba: entries_lba,
            bytes: array_bytes,
        });
    }
    let mut array = vec![0u8; array_bytes as usize];
    read_at(
        disk,
        entries_lba * sector_size,
        &mut array,
        "GPT entry array",
    )?;
    let computed = crc32fast::hash(&array);
    if entries_crc != computed {
        return Err(GptError::EntriesCrc {
            stored: entries_crc,
            computed,
        });
    }

    let mut partitions = Vec::new();
    for (index, entry) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = guid_at(entry, 0);
        if type_guid.is_zero() {
            continue;
        }
        // index < count <= MAX_ENTRIES, so it fits.
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let first = le_u64(entry, 32);
        let last = le_u64(entry, 40);
        if last < first {
            return Err(GptError::PartitionInverted {
                number,
                first,
                last,
            });
        }
        if last >= sectors {
            return Err(GptError::PartitionPastDiskEnd {
                number,
                first,
                last,
                sectors,
            });
        }
        if first < usable_first || last > usable_last {
            return Err(GptError::PartitionOutsideUsable {
                number,
                first,
                last,
                usable_first,
                usable_last,
            });
        }
        partitions.push(Partition {
            number,
            type_guid,
            uuid: guid_at(entry, 16),
            first_lba: first,
            last_lba: last,
            attributes: le_u64(entry, 48),
            label: decode_label(&entry[56..128]),
            kind: PartitionType::of(type_guid),
        });
    }
    if usable_last >= sectors {
        return Err(usable_area_error);
    }
    check_overlaps(&partitions)?;
    Ok(Table {
        sector_size,
        disk_guid,
        partitions,
    })
}

fn check_overlaps(partitions: &[Partition]) -> Result<(), GptError> {
    let mut by_start: Vec<&Partition> = partitions.iter().collect();
    by_start.sort_by_key(|p| (p.first_lba, p.number));
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.first_lba <= a.last_lba {
            return Err(GptError::Overlap {
                first: a.number,
                first_start: a.first_lba,
                first_end: a.last_lba,
                second: b.number,
                second_start: b.first_lba,
                second_end: b.last_lba,
            });
        }
    }
    Ok(())
}

/// A partition name: up to 36 UTF-16LE units, ending at the first NUL.
fn decode_label(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Table {
    /// The DPS partitions of a designator and architecture that may be used automatically.
    fn candidates(&self, designator: Designator, arch: Arch) -> Vec<&Partition> {
        self.partitions
            .iter()
            .filter(|p| p.kind == PartitionType::Dps(designator, arch))
            .filter(|p| p.attributes & FLAG_NO_AUTO == 0)
            .collect()
    }

    /// At most one partition of a designator for an architecture; two are ambiguous.
    fn single(&self, designator: Designator, arch: Arch) -> Result<Option<&Partition>, GptError> {
        match self.candidates(designator, arch).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            many => Err(GptError::Ambiguous {
                designator: designator.name(),
                arch,
                count: many.len(),
                numbers: many
                    .iter()
                    .map(|p| format!("#{}", p.number))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn extent(&self, p: &Partition) -> Extent {
        Extent {
            offset: p.first_lba * self.sector_size,
            size: (p.last_lba - p.first_lba + 1) * self.sector_size,
        }
    }

    /// Picks the partition an image's root comes from, by the DPS: a root partition for
    /// `arch`, else for its secondary architecture, else a usr partition likewise; no-auto
    /// partitions are passed over, and two candidates of the same kind are refused.
    pub fn select(&self, arch: Arch) -> Result<Selection, GptError> {
        let arches: Vec<Arch> = std::iter::once(arch).chain(arch.secondary()).collect();
        let mut chosen = None;
        'search: for designator in [Designator::Root, Designator::Usr] {
            for &a in &arches {
                if let Some(p) = self.single(designator, a)? {
                    chosen = Some((designator, a, p));
                    break 'search;
                }
            }
        }
        let Some((designator, arch_found, partition)) = chosen else {
            let found = if self.partitions.is_empty() {
                "none".to_string()
            } else {
                self.partitions
                    .iter()
                    .map(Partition::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(GptError::NoRootPartition { arch, found });
        };
        if designator == Designator::Root
            && let Some(usr) = self.single(Designator::Usr, arch_found)?
        {
            return Err(GptError::RootAndUsr {
                root: partition.number,
                usr: usr.number,
            });
        }
        let (verity, sig) = designator
            .verity()
            .unwrap_or((Designator::RootVerity, Designator::RootVeritySig));
        let first_number = |d| {
            self.candidates(d, arch_found)
                .first()
                .map(|p: &&Partition| p.number)
        };
        Ok(Selection {
            designator,
            arch: arch_found,
            number: partition.number,
            extent: self.extent(partition),
            read_only_flag: partition.attributes & FLAG_READ_ONLY != 0,
            verity: first_number(verity),
            verity_sig: first_number(sig),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::dps::{FLAG_GROWFS, type_guid};
    use super::*;

    /// A 4 MiB test disk: 8192 sectors.
    const DISK_SECTORS: u64 = 8192;

    /// One entry of a hand-built table.
    #[derive(Clone)]
    pub(crate) struct Entry {
        type_guid: Guid,
        first: u64,
        last: u64,
        attributes: u64,
        label: &'static str,
    }

    pub(crate) fn entry(designator: Designator, arch: Arch, first: u64, last: u64) -> Entry {
        Entry {
            type_guid: type_guid(designator, arch),
            first,
            last,
            attributes: 0,
            label: designator.name(),
        }
    }

    /// A hand-built GPT disk; fields are public to the tests so each can break one thing.
    pub(crate) struct Disk {
        sector: u64,
        sectors: u64,
        entries: Vec<Entry>,
        count: u32,
        entry_size: u32,
        entries_lba: u64,
        usable_first: u64,
        usable_last: u64,
        mbr_type: u8,
        signature: [u8; 8],
        revision: u32,
        header_size: u32,
        my_lba: u64,
        /// Applied to the header after its CRC is computed.
        pub(crate) corrupt_header_crc: bool,
        corrupt_entries_crc: bool,
    }

    impl Disk {
        pub(crate) fn new(entries: Vec<Entry>) -> Disk {
            Disk {
                sector: 512,
                sectors: DISK_SECTORS,
                entries,
                count: 128,
                entry_size: 128,
                entries_lba: 2,
                usable_first: 34,
                usable_last: DISK_SECTORS - 34,
                mbr_type: 0xee,
                signature: *HEADER_SIGNATURE,
                revision: 0x0001_0000,
                header_size: 92,
                my_lba: 1,
                corrupt_header_crc: false,
                corrupt_entries_crc: false,
            }
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            let sector = self.sector;
            let mut disk = vec![0u8; (self.sectors * sector) as usize];
            disk[446 + 4] = self.mbr_type;
            disk[510] = 0x55;
            disk[511] = 0xaa;

            let mut array = vec![0u8; self.count as usize * self.entry_size as usize];
            for (i, e) in self.entries.iter().enumerate() {
                let at = i * self.entry_size as usize;
                let slot = &mut array[at..at + 128];
                slot[0..16].copy_from_slice(&e.type_guid.0);
                slot[16..32].copy_from_slice(&[i as u8 + 1; 16]);
                slot[32..40].copy_from_slice(&e.first.to_le_bytes());
                slot[40..48].copy_from_slice(&e.last.to_le_bytes());
                slot[48..56].copy_from_slice(&e.attributes.to_le_bytes());
                for (j, unit) in e.label.encode_utf16().take(36).enumerate() {
                    slot[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
                }
            }
            let mut entries_crc = crc32fast::hash(&array);
            if self.corrupt_entries_crc {
                entries_crc ^= 1;
            }
            let start = (self.entries_lba * sector) as usize;
            let end = (start + array.len()).min(disk.len());
            disk[start..end].copy_from_slice(&array[..end - start]);

            let mut h = vec![0u8; sector as usize];
            h[0..8].copy_from_slice(&self.signature);
            h[8..12].copy_from_slice(&self.revision.to_le_bytes());
            h[12..16].copy_from_slice(&self.header_size.to_le_bytes());
            h[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
            h[32..40].copy_from_slice(&(self.sectors - 1).to_le_bytes());
            h[40..48].copy_from_slice(&self.usable_first.to_le_bytes());
            h[48..56].copy_from_slice(&self.usable_last.to_le_bytes());
            h[56..72].copy_from_slice(&[0xd1; 16]);
            h[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&self.count.to_le_bytes());
            h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
            h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
            let size = (self.header_size as usize).min(h.len());
            let mut crc = crc32fast::hash(&h[..size]);
            if self.corrupt_header_crc {
                crc ^= 1;
            }
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            disk[sector as usize..2 * sector as usize].copy_from_slice(&h);
            disk
        }

        fn parse(&self) -> Result<Table, GptError> {
            let bytes = self.bytes();
            let len = bytes.len() as u64;
            parse(bytes.as_slice(), len)
        }

        fn select(&self) -> Result<Selection, GptError> {
            self.parse()?.select(Arch::X86_64)
        }
    }

    pub(crate) fn root(first: u64, last: u64) -> Entry {
        entry(Designator::Root, Arch::X86_64, first, last)
    }

    #[test]
    fn a_single_root_partition_is_selected_with_its_byte_extent() {
        let disk = Disk::new(vec![root(2048, 4095)]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.designator, Designator::Root);
        assert_eq!(selection.arch, Arch::X86_64);
        assert_eq!(selection.number, 1);
        assert_eq!(
            selection.extent,
            Extent {
                offset: 2048 * 512,
                size: 2048 * 512
            }
        );
        assert_eq!(selection.verity, None);
    }

    #[test]
    fn a_disk_with_4096_byte_sectors_is_read_with_them() {
        let mut disk = Disk::new(vec![root(256, 511)]);
        disk.sector = 4096;
        disk.sectors = 1024;
        disk.usable_last = 1024 - 34;

        let selection = disk.select().expect("select");

        assert_eq!(
            selection.extent,
            Extent {
                offset: 256 * 4096,
                size: 256 * 4096
            }
        );
    }

    #[test]
    fn labels_and_other_types_are_parsed() {
        let mut esp = root(40, 99);
        esp.type_guid = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        esp.label = "EFI System";
        let disk = Disk::new(vec![esp, root(2048, 4095)]);

        let table = disk.parse().expect("parse");

        assert_eq!(table.partitions.len(), 2);
        assert_eq!(table.partitions[0].label, "EFI System");
        assert_eq!(table.partitions[0].kind, PartitionType::Other("esp"));
        assert_eq!(
            table.partitions[1].kind,
            PartitionType::Dps(Designator::Root, Arch::X86_64)
        );
    }

    #[test]
    fn verity_and_signature_partitions_are_recognised_for_the_root() {
        let disk = Disk::new(vec![
            root(2048, 4095),
            entry(Designator::RootVerity, Arch::X86_64, 4096, 4351),
            entry(Designator::RootVeritySig, Arch::X86_64, 4352, 4359),
        ]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.verity, Some(2));
        assert_eq!(selection.verity_sig, Some(3));
    }

    #[test]
    fn verity_for_another_architecture_is_not_paired() {
        let disk = Disk::new(vec![
            root(2048, 4095),
            entry(Designator::RootVerity, Arch::Arm64, 4096, 4351),
        ]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.verity, None);
    }

    #[test]
    fn a_usr_partition_is_used_when_there_is_no_root() {
        let disk = Disk::new(vec![
            entry(Designator::Usr, Arch::X86_64, 2048, 4095),
            entry(Designator::UsrVerity, Arch::X86_64, 4096, 4351),
        ]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.designator, Designator::Usr);
        assert_eq!(selection.verity, Some(2));
    }

    #[test]
    fn the_secondary_architecture_is_used_when_there_is_no_native_root() {
        let disk = Disk::new(vec![entry(Designator::Root, Arch::X86, 2048, 4095)]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.arch, Arch::X86);
    }

    #[test]
    fn a_native_root_wins_over_a_secondary_one() {
        let disk = Disk::new(vec![
            entry(Designator::Root, Arch::X86, 100, 1999),
            root(2048, 4095),
        ]);

        let selection = disk.select().expect("select");

        assert_eq!((selection.arch, selection.number), (Arch::X86_64, 2));
    }

    #[test]
    fn a_no_auto_root_is_passed_over() {
        let mut hidden = root(100, 1999);
        hidden.attributes = FLAG_NO_AUTO;
        let disk = Disk::new(vec![hidden, root(2048, 4095)]);

        let selection = disk.select().expect("select");

        assert_eq!(selection.number, 2);
    }

    #[test]
    fn the_read_only_flag_is_reported() {
        let mut ro = root(2048, 4095);
        ro.attributes = FLAG_READ_ONLY | FLAG_GROWFS;
        let disk = Disk::new(vec![ro]);

        let selection = disk.select().expect("select");

        assert!(selection.read_only_flag);
    }

    #[test]
    fn only_wrong_types_is_refused_naming_what_was_found() {
        let mut generic = root(40, 99);
        generic.type_guid = Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4");
        let disk = Disk::new(vec![
            generic,
            entry(Designator::Root, Arch::Arm64, 2048, 4095),
        ]);

        let err = disk.select().expect_err("no x86-64 root");

        assert!(matches!(err, GptError::NoRootPartition { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("#1 linux-generic"), "{text}");
        assert!(text.contains("#2 root (arm64)"), "{text}");
    }

    #[test]
    fn a_root_flagged_no_auto_alone_is_refused() {
        let mut hidden = root(2048, 4095);
        hidden.attributes = FLAG_NO_AUTO;
        let disk = Disk::new(vec![hidden]);

        let err = disk.select().expect_err("no usable root");

        assert!(
            err.to_string().contains("#1 root (x86-64), no-auto"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_table_is_refused() {
        let disk = Disk::new(vec![]);

        let err = disk.select().expect_err("no partitions");

        assert!(err.to_string().contains("partitions: none"), "{err}");
    }

    #[test]
    fn two_root_partitions_are_ambiguous() {
        let disk = Disk::new(vec![root(100, 1999), root(2048, 4095)]);

        let err = disk.select().expect_err("two roots");

        assert!(matches!(err, GptError::Ambiguous { count: 2, .. }), "{err}");
    }

    #[test]
    fn root_beside_usr_is_refused() {
        let disk = Disk::new(vec![
            root(100, 1999),
            entry(Designator::Usr, Arch::X86_64, 2048, 4095),
        ]);

        let err = disk.select().expect_err("root and usr");

        assert!(
            matches!(err, GptError::RootAndUsr { root: 1, usr: 2 }),
            "{err}"
        );
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let disk = Disk::new(vec![root(2048, 4095), root(4000, 5000)]);

        let err = disk.parse().expect_err("overlap");

        assert!(
            matches!(
                err,
                GptError::Overlap {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn partitions_sharing_one_sector_overlap() {
        let disk = Disk::new(vec![root(3000, 4095), root(2048, 3000)]);

        let err = disk.parse().expect_err("overlap");

        assert!(
            matches!(
                err,
                GptError::Overlap {
                    first: 2,
                    second: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_bad_header_crc_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.corrupt_header_crc = true;

        let err = disk.parse().expect_err("header crc");

        assert!(matches!(err, GptError::HeaderCrc { .. }), "{err}");
    }

    #[test]
    fn a_bad_entry_array_crc_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.corrupt_entries_crc = true;

        let err = disk.parse().expect_err("entries crc");

        assert!(matches!(err, GptError::EntriesCrc { .. }), "{err}");
    }

    #[test]
    fn a_partition_past_the_disk_end_is_refused() {
        let mut disk = Disk::new(vec![root(2048, DISK_SECTORS + 100)]);
        disk.usable_last = DISK_SECTORS - 34;

        let err = disk.parse().expect_err("past end");

        assert!(
            matches!(err, GptError::PartitionPastDiskEnd { number: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("past the disk end"), "{err}");
    }

    #[test]
    fn a_usable_area_past_the_disk_end_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.usable_last = DISK_SECTORS;

        let err = disk.parse().expect_err("usable area");

        assert!(matches!(err, GptError::UsableArea { .. }), "{err}");
    }

    #[test]
    fn a_partition_over_the_entry_array_is_refused() {
        let disk = Disk::new(vec![root(10, 4095)]);

        let err = disk.parse().expect_err("outside usable");

        assert!(
            matches!(err, GptError::PartitionOutsideUsable { .. }),
            "{err}"
        );
    }

    #[test]
    fn an_inverted_partition_is_refused() {
        let disk = Disk::new(vec![root(4095, 2048)]);

        let err = disk.parse().expect_err("inverted");

        assert!(matches!(err, GptError::PartitionInverted { .. }), "{err}");
    }

    /// A valid disk whose header is then changed by `edit` and given a fresh CRC, for
    /// values the writer cannot lay out (a count of 4 G entries, an array far off the disk).
    fn with_header_edit(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut bytes = Disk::new(vec![root(2048, 4095)]).bytes();
        let h = &mut bytes[512..1024];
        edit(h);
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_reading() {
        let bytes = with_header_edit(|h| h[80..84].copy_from_slice(&u32::MAX.to_le_bytes()));
        let len = bytes.len() as u64;

        let err = parse(bytes.as_slice(), len).expect_err("huge count");

        assert!(
            matches!(err, GptError::EntryCount { count: u32::MAX }),
            "{err}"
        );
        assert!(
            err.to_string().contains("4294967295 partition entries"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_array_too_large_in_bytes_is_refused() {
        let mut disk = Disk::new(vec![]);
        disk.count = MAX_ENTRIES;
        disk.entry_size = 4096;
        disk.sectors = 16384;
        disk.usable_first = 8200;
        disk.usable_last = 16000;

        let err = disk.parse().expect_err("array too large");

        assert!(matches!(err, GptError::EntryArraySize { .. }), "{err}");
    }

    #[test]
    fn an_odd_entry_size_is_refused() {
        let mut disk = Disk::new(vec![]);
        disk.entry_size = 130;

        let err = disk.parse().expect_err("entry size");

        assert!(matches!(err, GptError::EntrySize { size: 130 }), "{err}");
    }

    #[test]
    fn an_entry_array_reaching_into_the_usable_area_is_refused() {
        let mut disk = Disk::new(vec![]);
        disk.entries_lba = 30;

        let err = disk.parse().expect_err("array place");

        assert!(matches!(err, GptError::EntryArrayPlace { .. }), "{err}");
    }

    #[test]
    fn an_entry_array_lba_that_overflows_is_refused() {
        let bytes = with_header_edit(|h| h[72..80].copy_from_slice(&(u64::MAX / 4).to_le_bytes()));
        let len = bytes.len() as u64;

        let err = parse(bytes.as_slice(), len).expect_err("array place");

        assert!(matches!(err, GptError::EntryArrayPlace { .. }), "{err}");
    }

    #[test]
    fn a_missing_protective_mbr_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.mbr_type = 0x83;

        let err = disk.parse().expect_err("mbr");

        assert!(matches!(err, GptError::NoProtectiveMbr), "{err}");
    }

    #[test]
    fn a_missing_header_signature_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.signature = *b"NOT PART";

        let err = disk.parse().expect_err("signature");

        assert!(matches!(err, GptError::NoHeader), "{err}");
    }

    #[test]
    fn a_header_size_beyond_its_sector_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.header_size = 513;

        let err = disk.parse().expect_err("header size");

        assert!(
            matches!(err, GptError::HeaderSize { size: 513, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_header_revision_2_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.revision = 0x0002_0000;

        let err = disk.parse().expect_err("revision");

        assert!(matches!(err, GptError::HeaderRevision { .. }), "{err}");
    }

    #[test]
    fn a_header_claiming_another_lba_is_refused() {
        let mut disk = Disk::new(vec![root(2048, 4095)]);
        disk.my_lba = 8191;

        let err = disk.parse().expect_err("my lba");

        assert!(matches!(err, GptError::HeaderLba { lba: 8191 }), "{err}");
    }

    #[test]
    fn a_truncated_disk_is_a_read_error_not_a_panic() {
        let bytes = Disk::new(vec![root(2048, 4095)]).bytes();
        let short = bytes[..1024].to_vec();

        let err = parse(short.as_slice(), 8192 * 512).expect_err("truncated");

        assert!(matches!(err, GptError::Read { .. }), "{err}");
    }

    #[test]
    fn a_tiny_file_is_refused() {
        let err = parse([0u8; 100].as_slice(), 100).expect_err("tiny");

        assert!(matches!(err, GptError::TooSmall { size: 100 }), "{err}");
    }

    #[test]
    fn control_characters_in_labels_are_replaced() {
        let mut e = root(2048, 4095);
        e.label = "a\u{1b}[31mb";
        let disk = Disk::new(vec![e]);

        let table = disk.parse().expect("parse");

        assert_eq!(table.partitions[0].label, "a?[31mb");
    }
}
