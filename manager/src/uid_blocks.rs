//! The attachments' blocks of host uids (DESIGN.md §5, "Users"): each image name holding
//! services that run as the image's own users gets a block of [`UID_BLOCK_SIZE`] host ids,
//! which its user namespace maps 0-65535 onto.
//!
//! A block is the lowest free one of berthd.toml's `user_block_min`..`user_block_max`
//! (systemd's container range by default), starting at a multiple of the block size, and never
//! one that overlaps a range of `/etc/subuid` or `/etc/subgid` (another user's namespaces) or
//! holds an id of the host's `/etc/passwd` or `/etc/group`. The blocks are kept in
//! `STATE/uid-blocks.json` (written atomically before a block is handed out): the files of an
//! attachment's persistent /var are owned by its block's ids on disk, so the image keeps its
//! block across detach, reattach and berthd restarts, and gives it back only when its state is
//! removed (`detach --clean`, [`UidBlocks::release`]). berth-helper checks every block again.

use std::collections::BTreeMap;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use berth_protocol::config_file::first_block_in;
use berth_protocol::sandbox::{UID_BLOCK_SIZE, UidBlock};

use crate::host_users;

/// Largest `uid-blocks.json` read: one short line per attached image.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Largest `/etc/subuid` or `/etc/subgid` read; a bigger one is refused rather than read in
/// part (a range not read could overlap).
const MAX_SUBORDINATE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UidBlockError {
    #[error("cannot read {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not berth's record of uid blocks: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path} to keep uid blocks clear of its ranges: {source}")]
    ReadSubordinate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no free block of {UID_BLOCK_SIZE} uids in {min}-{max} (berthd.toml user_block_min, \
         user_block_max): every one is taken by an attachment, /etc/subuid, /etc/subgid or a \
         host user or group"
    )]
    Exhausted { min: u32, max: u32 },
}

/// The host files whose ids a block must stay clear of (other paths in tests).
#[derive(Debug, Clone)]
pub struct HostIdFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl Default for HostIdFiles {
    fn default() -> Self {
        HostIdFiles {
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

/// What `uid-blocks.json` holds: each image name's block, by its first host id.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    blocks: BTreeMap<String, u32>,
}

/// The blocks handed out, by image name, and where they are kept.
#[derive(Debug)]
pub struct UidBlocks {
    path: PathBuf,
    min: u32,
    max: u32,
    blocks: BTreeMap<String, u32>,
    host: HostIdFiles,
}

impl UidBlocks {
    /// Reads the blocks kept at `path` (none when the file does not exist yet), to hand out
    /// new ones from `min..=max`. A block kept from an earlier range stays its image's.
    pub fn load(path: &Path, min: u32, max: u32) -> Result<UidBlocks, UidBlockError> {
        let blocks = match read_bounded(path, MAX_FILE_BYTES) {
            Ok(bytes) => parse(path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(UidBlockError::Load {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(UidBlocks {
            path: path.to_owned(),
            min,
            max,
            blocks,
            host: HostIdFiles::default(),
        })
    }

    /// Uses other host files than `/etc`'s (tests).
    pub fn with_host_files(mut self, host: HostIdFiles) -> Self {
        self.host = host;
        self
    }

    /// The block of image `image`: the one it has, else the lowest free one, recorded on disk
    /// before it is returned.
    pub fn allocate(&mut self, image: &str) -> Result<UidBlock, UidBlockError> {
        if let Some(block) = self.get(image) {
            return Ok(block);
        }
        let first = self.lowest_free()?;
        self.blocks.insert(image.to_owned(), first);
        if let Err(e) = self.save() {
            self.blocks.remove(image);
            return Err(e);
        }
        Ok(UidBlock::at(first))
    }

    /// The block image `image` has, if any.
    pub fn get(&self, image: &str) -> Option<UidBlock> {
        self.blocks.get(image).map(|first| UidBlock::at(*first))
    }

    /// Gives image `image`'s block back (its state is gone), recorded on disk; the block it had.
    pub fn release(&mut self, image: &str) -> Result<Option<UidBlock>, UidBlockError> {
        let Some(first) = self.blocks.remove(image) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.blocks.insert(image.to_owned(), first);
            return Err(e);
        }
        Ok(Some(UidBlock::at(first)))
    }

    fn lowest_free(&self) -> Result<u32, UidBlockError> {
        let exhausted = UidBlockError::Exhausted {
            min: self.min,
            max: self.max,
        };
        let Some(start) = first_block_in(self.min, self.max) else {
            return Err(exhausted);
        };
        let mut subordinate = subordinate_ranges(&self.host.subuid)?;
        subordinate.extend(subordinate_ranges(&self.host.subgid)?);
        let host_ids: Vec<u32> = host_users::entries(&self.host.passwd)
            .into_iter()
            .chain(host_users::entries(&self.host.group))
            .map(|e| e.id)
            .collect();
        let taken: std::collections::BTreeSet<u32> = self.blocks.values().copied().collect();
        let mut first = start;
        loop {
            let block = UidBlock::at(first);
            let ids = first..=block.last();
            let free = !taken.contains(&first)
                && !subordinate.iter().any(|r| overlaps(r, &ids))
                && !host_ids.iter().any(|id| ids.contains(id));
            if free {
                return Ok(first);
            }
            match first.checked_add(UID_BLOCK_SIZE) {
                Some(next)
                    if next
                        .checked_add(UID_BLOCK_SIZE - 1)
                        .is_some_and(|l| l <= self.max) =>
                {
                    first = next;
                }
                _ => return Err(exhausted),
            }
        }
    }

    fn save(&self) -> Result<(), UidBlockError> {
        let stored = Stored {
            blocks: self.blocks.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&stored).map_err(|e| UidBlockError::Save {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        text.push(b'\n');
        crate::atomic_write::write_atomic(&self.path, &text).map_err(|source| UidBlockError::Save {
            path: self.path.clone(),
            source,
        })
    }
}

fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, u32>, UidBlockError> {
    let invalid = |reason: String| UidBlockError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if let Some((image, first)) = stored.blocks.iter().find(|(_, first)| {
        **first == 0
            || **first % UID_BLOCK_SIZE != 0
            || first.checked_add(UID_BLOCK_SIZE - 1).is_none()
    }) {
        return Err(invalid(format!(
            "the block of {image} starts at {first}, not at a non-zero multiple of {UID_BLOCK_SIZE}"
        )));
    }
    Ok(stored.blocks)
}

/// The id ranges of a `/etc/subuid`-format file (`name:first:count` lines); none when it does
/// not exist. Lines that are not of that form are skipped, as shadow's tools skip them.
fn subordinate_ranges(path: &Path) -> Result<Vec<RangeInclusive<u32>>, UidBlockError> {
    let bytes = match read_bounded(path, MAX_SUBORDINATE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UidBlockError::ReadSubordinate {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let _name = fields.next()?;
            let first: u32 = fields.next()?.parse().ok()?;
            let count: u32 = fields.next()?.parse().ok()?;
            let last = first.saturating_add(count.checked_sub(1)?);
            Some(first..=last)
        })
        .collect())
}

fn overlaps(a: &RangeInclusive<u32>, b: &RangeInclusive<u32>) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u32 = 524_288;
    const MAX: u32 = 1_879_048_191;

    /// Blocks kept in `dir`, with host files of `dir` (empty unless a test writes them).
    fn blocks_in(dir: &tempfile::TempDir, min: u32, max: u32) -> UidBlocks {
        UidBlocks::load(&dir.path().join("uid-blocks.json"), min, max)
            .unwrap()
            .with_host_files(host_files(dir))
    }

    fn host_files(dir: &tempfile::TempDir) -> HostIdFiles {
        HostIdFiles {
            passwd: dir.path().join("passwd"),
            group: dir.path().join("group"),
            subuid: dir.path().join("subuid"),
            subgid: dir.path().join("subgid"),
        }
    }

    #[test]
    fn the_first_image_gets_the_first_block_of_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = blocks_in(&dir, MIN, MAX);

        let block = blocks.allocate("redis").unwrap();

        assert_eq!(block, UidBlock::at(524_288));
    }

    #[test]
    fn two_images_get_different_blocks_and_one_image_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = blocks_in(&dir, MIN, MAX);

        let redis = blocks.allocate("redis").unwrap();
        let nginx = blocks.allocate("nginx").unwrap();
        let again = blocks.allocate("redis").unwrap();

        assert_eq!(nginx, UidBlock::at(589_824));
        assert_eq!(again, redis);
        assert_eq!(blocks.get("nginx"), Some(nginx));
        assert_eq!(blocks.get("other"), None);
    }

    #[test]
    fn blocks_are_kept_on_disk_across_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = blocks_in(&dir, MIN, MAX);
        first.allocate("redis").unwrap();
        first.allocate("nginx").unwrap();

        let mut second = blocks_in(&dir, MIN, MAX);

        assert_eq!(second.get("nginx"), Some(UidBlock::at(589_824)));
        assert_eq!(second.allocate("web").unwrap(), UidBlock::at(655_360));
    }

    #[test]
    fn a_released_block_is_gone_from_disk_and_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = blocks_in(&dir, MIN, MAX);
        blocks.allocate("redis").unwrap();
        blocks.allocate("nginx").unwrap();

        let released = blocks.release("redis").unwrap();
        let reloaded = blocks_in(&dir, MIN, MAX);

        assert_eq!(released, Some(UidBlock::at(524_288)));
        assert_eq!(reloaded.get("redis"), None);
        assert_eq!(blocks.allocate("web").unwrap(), UidBlock::at(524_288));
        assert_eq!(blocks.release("none").unwrap(), None);
    }

    #[test]
    fn blocks_overlapping_subuid_or_subgid_ranges_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        // Ends inside the first block; starts inside the third and covers the fourth.
        std::fs::write(dir.path().join("subuid"), "alice:500000:24289\nbad line\n").unwrap();
        std::fs::write(dir.path().join("subgid"), "bob:700000:150000\n").unwrap();
        let mut blocks = blocks_in(&dir, MIN, MAX);

        let first = blocks.allocate("a").unwrap();
        let second = blocks.allocate("b").unwrap();

        assert_eq!(first, UidBlock::at(589_824));
        assert_eq!(second, UidBlock::at(851_968));
    }

    #[test]
    fn blocks_holding_a_host_user_or_group_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "odd:x:524300:100::/:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("group"), "odd:x:589824:\n").unwrap();
        let mut blocks = blocks_in(&dir, MIN, MAX);

        let block = blocks.allocate("a").unwrap();

        assert_eq!(block, UidBlock::at(655_360));
    }

    #[test]
    fn the_range_is_rounded_to_whole_aligned_blocks_and_can_run_out() {
        let dir = tempfile::tempdir().unwrap();
        // Two whole blocks: 131072-196607 and 196608-262143; 65537.. is cut.
        let mut blocks = blocks_in(&dir, 65_537, 262_143);

        let a = blocks.allocate("a").unwrap();
        let b = blocks.allocate("b").unwrap();
        let c = blocks.allocate("c");

        assert_eq!((a.first, b.first), (131_072, 196_608));
        assert!(
            matches!(
                c,
                Err(UidBlockError::Exhausted {
                    min: 65_537,
                    max: 262_143
                })
            ),
            "{c:?}"
        );
        assert_eq!(blocks.get("c"), None);
    }

    #[test]
    fn a_record_that_is_not_berths_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uid-blocks.json");
        std::fs::write(&path, "{\"blocks\": {\"redis\": 524289}}").unwrap();

        let misaligned = UidBlocks::load(&path, MIN, MAX);
        std::fs::write(&path, "not json").unwrap();
        let garbage = UidBlocks::load(&path, MIN, MAX);

        assert!(
            matches!(&misaligned, Err(UidBlockError::Invalid { reason, .. }) if reason.contains("redis")),
            "{misaligned:?}"
        );
        assert!(
            garbage
                .unwrap_err()
                .to_string()
                .starts_with(&format!("{} is not berth's record", path.display()))
        );
    }

    #[test]
    fn a_block_that_cannot_be_recorded_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = UidBlocks::load(&dir.path().join("missing/uid-blocks.json"), MIN, MAX)
            .unwrap()
            .with_host_files(host_files(&dir));

        let result = blocks.allocate("redis");

        assert!(
            matches!(result, Err(UidBlockError::Save { .. })),
            "{result:?}"
        );
        assert_eq!(blocks.get("redis"), None);
    }
}
