//! The floor of the image's own users (block mode): the block berthd asks for, and the ids the
//! service runs as in it.
//!
//! A block is exactly [`UID_BLOCK_SIZE`] ids, aligned to its size, inside helper.toml's
//! `user_block_min`..`user_block_max`, and shares no id with a subordinate range of
//! `/etc/subuid` or `/etc/subgid` (another user's containers) or with a host user or group.
//! The service's uid, gid and supplementary gids are host ids of the block.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use berth_protocol::sandbox::{Identity, UID_BLOCK_SIZE, UidBlock};

use super::super::{Refusal, refuse};
use crate::config::FloorPolicy;

const FIELD: &str = "sandbox.identity.user_block";
/// Largest `/etc/subuid`, `/etc/passwd`, ... the floor reads whole.
const MAX_DATABASE_BYTES: u64 = 16 * 1024 * 1024;

/// Checks the block and that the identity's ids lie in it.
pub(super) fn check(
    policy: &FloorPolicy,
    identity: &Identity,
    block: UidBlock,
) -> Result<(), Refusal> {
    check_block(policy, block)?;
    let inside = |field: &str, id: u32| {
        if block.inside_id(id).is_some() {
            Ok(())
        } else {
            Err(refuse(
                field,
                format!(
                    "{id} is outside the user block {}-{}",
                    block.first,
                    block.last()
                ),
            ))
        }
    };
    inside("sandbox.identity.uid", identity.uid)?;
    inside("sandbox.identity.gid", identity.gid)?;
    for gid in &identity.supplementary_groups {
        inside("sandbox.identity.supplementary_groups", *gid)?;
    }
    Ok(())
}

fn check_block(policy: &FloorPolicy, block: UidBlock) -> Result<(), Refusal> {
    if block.size != UID_BLOCK_SIZE {
        return Err(refuse(
            FIELD,
            format!("a block is {UID_BLOCK_SIZE} ids, not {}", block.size),
        ));
    }
    if !block.first.is_multiple_of(UID_BLOCK_SIZE) {
        return Err(refuse(
            FIELD,
            format!("{} is not a multiple of {UID_BLOCK_SIZE}", block.first),
        ));
    }
    let last = u64::from(block.first) + u64::from(block.size) - 1;
    if block.first < policy.user_block_min || last > u64::from(policy.user_block_max) {
        return Err(refuse(
            FIELD,
            format!(
                "{}-{last} is outside the user block range {}-{}",
                block.first, policy.user_block_min, policy.user_block_max
            ),
        ));
    }
    for database in [&policy.subuid, &policy.subgid] {
        if let Some(range) = subordinate_overlap(database, block)? {
            return Err(refuse(
                FIELD,
                format!(
                    "{}-{last} overlaps {range} of {}",
                    block.first,
                    database.display()
                ),
            ));
        }
    }
    for database in [&policy.passwd, &policy.group] {
        if let Some(id) = database_id_in(database, block)? {
            return Err(refuse(
                FIELD,
                format!("holds {id}, which {} names", database.display()),
            ));
        }
    }
    Ok(())
}

/// The text of a host database; `None` when it does not exist. One that cannot be read, or
/// is too large to read whole, is refused: the unread part might name an id of the block.
fn read_database(path: &Path) -> Result<Option<String>, Refusal> {
    let unreadable =
        |reason: String| refuse(FIELD, format!("cannot check {}: {reason}", path.display()));
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut text = String::new();
    file.take(MAX_DATABASE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| unreadable(e.to_string()))?;
    if text.len() as u64 > MAX_DATABASE_BYTES {
        return Err(unreadable(format!(
            "larger than {MAX_DATABASE_BYTES} bytes"
        )));
    }
    Ok(Some(text))
}

/// The first `NAME:START:COUNT` range of a subuid/subgid file that shares an id with `block`,
/// as `START-END`.
fn subordinate_overlap(path: &Path, block: UidBlock) -> Result<Option<String>, Refusal> {
    let Some(text) = read_database(path)? else {
        return Ok(None);
    };
    let (first, last) = (u64::from(block.first), u64::from(block.last()));
    Ok(text.lines().find_map(|line| {
        let mut fields = line.trim().split(':').skip(1);
        let start: u64 = fields.next()?.trim().parse().ok()?;
        let count: u64 = fields.next()?.trim().parse().ok()?;
        let end = (start + count).checked_sub(1)?;
        (count > 0 && start <= last && end >= first).then(|| format!("{start}-{end}"))
    }))
}

/// An id of `block` that a passwd or group file lists (its third field).
fn database_id_in(path: &Path, block: UidBlock) -> Result<Option<u32>, Refusal> {
    let Some(text) = read_database(path)? else {
        return Ok(None);
    };
    Ok(text.lines().find_map(|line| {
        let id: u32 = line.split(':').nth(2)?.parse().ok()?;
        block.inside_id(id).map(|_| id)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: u32 = 524_288;

    /// A policy whose host databases and subordinate ranges live in `dir`, with the contents
    /// given (an empty one is a missing file).
    fn policy_in(dir: &tempfile::TempDir, subuid: &str, passwd: &str) -> FloorPolicy {
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            if !text.is_empty() {
                std::fs::write(&path, text).unwrap();
            }
            path
        };
        FloorPolicy {
            passwd: file("passwd", passwd),
            group: file("group", "root:x:0:\n"),
            subuid: file("subuid", subuid),
            subgid: file("subgid", ""),
            ..FloorPolicy::default()
        }
    }

    fn identity(block: UidBlock, uid: u32) -> Identity {
        Identity {
            uid: block.first + uid,
            gid: block.first + uid,
            supplementary_groups: vec![block.first + 4],
            private_users: false,
            user_name: "redis".into(),
            user_block: Some(block),
        }
    }

    fn refusal(policy: &FloorPolicy, identity: &Identity) -> Refusal {
        check(policy, identity, identity.user_block.unwrap()).unwrap_err()
    }

    #[test]
    fn an_aligned_block_of_the_range_with_its_ids_inside_passes() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_in(&dir, "alice:100000:65536\n", "root:x:0:0::/:/bin/sh\n");

        check(
            &policy,
            &identity(UidBlock::at(FIRST), 100),
            UidBlock::at(FIRST),
        )
        .unwrap();
    }

    #[test]
    fn a_block_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = identity(UidBlock::at(FIRST), 100);
        identity.user_block = Some(UidBlock {
            first: FIRST,
            size: 1 << 20,
        });

        let refusal = refusal(&policy_in(&dir, "", ""), &identity);

        assert_eq!(refusal.field, FIELD);
        assert!(refusal.reason.contains("65536 ids"), "{refusal}");
    }

    #[test]
    fn an_unaligned_block_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let refusal = refusal(
            &policy_in(&dir, "", ""),
            &identity(UidBlock::at(FIRST + 1000), 0),
        );

        assert!(refusal.reason.contains("not a multiple"), "{refusal}");
    }

    #[test]
    fn a_block_outside_the_configured_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        for first in [0, 65_536, 1_879_048_192] {
            let refusal = refusal(&policy_in(&dir, "", ""), &identity(UidBlock::at(first), 0));

            assert!(
                refusal.reason.contains("outside the user block range"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn a_block_overlapping_a_subordinate_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_in(&dir, "alice:100000:65536\nbob:589000:1000\n", "");

        let refusal = refusal(&policy, &identity(UidBlock::at(FIRST), 0));

        assert_eq!(refusal.field, FIELD);
        assert!(
            refusal.reason.contains("overlaps 589000-589999"),
            "{refusal}"
        );
    }

    #[test]
    fn a_block_holding_a_host_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_in(
            &dir,
            "",
            "root:x:0:0::/:/bin/sh\nodd:x:524400:100::/:/bin/sh\n",
        );

        let refusal = refusal(&policy, &identity(UidBlock::at(FIRST), 0));

        assert!(refusal.reason.contains("holds 524400"), "{refusal}");
    }

    #[test]
    fn ids_outside_the_block_are_refused_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_in(&dir, "", "");
        let block = UidBlock::at(FIRST);
        type Tamper = fn(&mut Identity);
        let cases: [(&str, Tamper); 3] = [
            ("sandbox.identity.uid", |i| i.uid = 61_200),
            ("sandbox.identity.gid", |i| i.gid = FIRST + 65_536),
            ("sandbox.identity.supplementary_groups", |i| {
                i.supplementary_groups.push(0)
            }),
        ];

        for (field, tamper) in cases {
            let mut identity = identity(block, 100);
            tamper(&mut identity);

            let refusal = check(&policy, &identity, block).unwrap_err();

            assert_eq!(refusal.field, field, "{refusal}");
        }
    }
}
