//! The partition type GUIDs of the Discoverable Partitions Specification, as data: root, usr
//! and their verity and signature partitions for each architecture berth knows, and the other
//! well-known types (named in messages only).

use std::fmt;

/// Partition attribute bits the DPS defines (bits 63, 60, 59); berth mounts
/// read-only whatever they say and only heeds no-auto.
pub const FLAG_NO_AUTO: u64 = 1 << 63;
pub const FLAG_READ_ONLY: u64 = 1 << 60;
pub const FLAG_GROWFS: u64 = 1 << 59;

/// A GUID as stored on disk: the first three fields little-endian, the last eight bytes as
/// they are (the "mixed-endian" encoding of UEFI).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// The on-disk bytes of a GUID written in its usual text form
    /// (`4f68bce3-e8cd-4db1-96e7-fbcaf984b709`). A malformed literal fails to compile when
    /// used in a constant.
    pub const fn parse(text: &str) -> Guid {
        let t = text.as_bytes();
        assert!(t.len() == 36, "a GUID has 36 characters");
        assert!(t[8] == b'-' && t[13] == b'-' && t[18] == b'-' && t[23] == b'-');
        // The text's bytes in their printed order, hyphens skipped.
        let mut printed = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < 36 {
            if t[i] == b'-' {
                i += 1;
                continue;
            }
            printed[n] = (hex_digit(t[i]) << 4) | hex_digit(t[i + 1]);
            n += 1;
            i += 2;
        }
        let p = printed;
        Guid([
            p[3], p[2], p[1], p[0], p[5], p[4], p[7], p[6], p[8], p[9], p[10], p[11], p[12], p[13],
            p[14], p[15],
        ])
    }

    pub fn is_zero(&self) -> bool {
        *self == Guid::ZERO
    }
}

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit in a GUID"),
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// CPU architectures whose DPS partition types are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    X86,
    Arm64,
    Arm,
    RiscV64,
}

impl Arch {
    /// The architecture this berth was built for, if the DPS table knows it.
    pub fn native() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "x86" => Some(Arch::X86),
            "aarch64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Arm),
            "riscv64" => Some(Arch::RiscV64),
            _ => None,
        }
    }

    /// The architecture whose binaries this one also runs (the DPS "secondary" one).
    pub fn secondary(self) -> Option<Arch> {
        match self {
            Arch::X86_64 => Some(Arch::X86),
            Arch::Arm64 => Some(Arch::Arm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86-64",
            Arch::X86 => "x86",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::RiscV64 => "riscv64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a DPS partition type is for (only the kinds an image's root comes from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Designator {
    Root,
    Usr,
    RootVerity,
    UsrVerity,
    RootVeritySig,
    UsrVeritySig,
}

impl Designator {
    pub fn name(self) -> &'static str {
        match self {
            Designator::Root => "root",
            Designator::Usr => "usr",
            Designator::RootVerity => "root-verity",
            Designator::UsrVerity => "usr-verity",
            Designator::RootVeritySig => "root-verity-sig",
            Designator::UsrVeritySig => "usr-verity-sig",
        }
    }

    /// The verity and signature designators that go with a root or usr partition.
    pub fn verity(self) -> Option<(Designator, Designator)> {
        match self {
            Designator::Root => Some((Designator::RootVerity, Designator::RootVeritySig)),
            Designator::Usr => Some((Designator::UsrVerity, Designator::UsrVeritySig)),
            _ => None,
        }
    }
}

/// The DPS type GUIDs for root, usr and their verity partitions, per architecture, in the
/// order root, usr, root-verity, usr-verity, root-verity-sig, usr-verity-sig.
const ARCH_TYPES: [(Arch, [&str; 6]); 5] = [
    (
        Arch::X86_64,
        [
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "8484680c-9521-48c6-9c11-b0720656f69e",
            "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
            "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
            "41092b05-9fc8-4523-994f-2def0408b176",
            "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
        ],
    ),
    (
        Arch::X86,
        [
            "44479540-f297-41b2-9af7-d131d5f0458a",
            "75250d76-8cc6-458e-bd66-bd47cc81a812",
            "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
            "8f461b0d-14ee-4e81-9aa9-049b6fb97abd",
            "5996fc05-109c-48de-808b-23fa0830b676",
            "974a71c0-de41-43c3-be5d-5c5ccd1ad2c0",
        ],
    ),
    (
        Arch::Arm64,
        [
            "b921b045-1df0-41c3-af44-4c6f280d3fae",
            "b0e01050-ee5f-4390-949a-9101b17104e9",
            "df3300ce-d69f-4c92-978c-9bfb0f38d820",
            "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
            "6db69de6-29f4-4758-a7a5-962190f00ce3",
            "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
        ],
    ),
    (
        Arch::Arm,
        [
            "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
            "7d0359a3-02b3-4f0a-865c-654403e70625",
            "7386cdf2-203c-47a9-a498-f2ecce45a2d6",
            "c215d751-7bcd-4649-be90-6627490a4c05",
            "42b0455f-eb11-491d-98d3-56145ba9d037",
            "d7ff812f-37d1-4902-a810-d76ba57b975a",
        ],
    ),
    (
        Arch::RiscV64,
        [
            "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
            "beaec34b-8442-439b-a40b-984381ed097d",
            "b6ed5582-440b-4209-b8da-5ff7c419ea3d",
            "8f1056be-9b05-47c4-81d6-be53128e5b54",
            "efe0f087-ea8d-4469-821a-4c2a96a8386a",
            "d2f9000a-7a18-453f-b5cd-4d32f77a7b32",
        ],
    ),
];

const DESIGNATOR_ORDER: [Designator; 6] = [
    Designator::Root,
    Designator::Usr,
    Designator::RootVerity,
    Designator::UsrVerity,
    Designator::RootVeritySig,
    Designator::UsrVeritySig,
];

/// Other well-known types, named in errors so a refusal says what the disk does hold.
const OTHER_TYPES: [(&str, &str); 8] = [
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "esp"),
    ("bc13c2ff-59e6-4262-a352-b275fd6f7172", "xbootldr"),
    ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "swap"),
    ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "home"),
    ("3b8f8425-20e0-4f3b-907f-1a25a76f98e8", "srv"),
    ("4d21b016-b534-45c2-a9fb-5c16e091fd2d", "var"),
    ("7ec6f557-3bc5-4aca-b293-16ef5df639d1", "tmp"),
    ("0fc63daf-8483-4772-8e79-3d69d8477de4", "linux-generic"),
];

/// What a partition type GUID denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionType {
    Dps(Designator, Arch),
    Other(&'static str),
    Unknown,
}

impl PartitionType {
    pub fn of(guid: Guid) -> PartitionType {
        for (arch, guids) in ARCH_TYPES {
            for (text, designator) in guids.iter().zip(DESIGNATOR_ORDER) {
                if Guid::parse(text) == guid {
                    return PartitionType::Dps(designator, arch);
                }
            }
        }
        for (text, name) in OTHER_TYPES {
            if Guid::parse(text) == guid {
                return PartitionType::Other(name);
            }
        }
        PartitionType::Unknown
    }
}

/// The type GUID of a designator for an architecture (test kits and tools build disks with it).
pub fn type_guid(designator: Designator, arch: Arch) -> Guid {
    let (_, guids) = ARCH_TYPES
        .iter()
        .find(|(a, _)| *a == arch)
        .unwrap_or(&ARCH_TYPES[0]);
    let index = DESIGNATOR_ORDER
        .iter()
        .position(|d| *d == designator)
        .unwrap_or(0);
    Guid::parse(guids[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips_through_the_mixed_endian_encoding() {
        let text = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

        let guid = Guid::parse(text);

        assert_eq!(
            guid.0,
            [
                0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84,
                0xb7, 0x09
            ]
        );
        assert_eq!(guid.to_string(), text);
    }

    #[test]
    fn every_dps_guid_in_the_table_is_distinct() {
        let mut all: Vec<Guid> = ARCH_TYPES
            .iter()
            .flat_map(|(_, g)| g.iter().map(|t| Guid::parse(t)))
            .chain(OTHER_TYPES.iter().map(|(t, _)| Guid::parse(t)))
            .collect();
        let n = all.len();

        all.sort_by_key(|g| g.0);
        all.dedup();

        assert_eq!(all.len(), n);
    }
}
