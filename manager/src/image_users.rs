//! Who of an image's own users a service runs as (DESIGN.md §5, "Users"): `User=`, `Group=`
//! and `SupplementaryGroups=` resolved against the image's `/etc/passwd` and `/etc/group`, as
//! systemd resolves them against the host's.
//!
//! The databases are read inside the image root ([`ImageRoot`]: in-root resolution, regular
//! files only, bounded), at each start, so a reattached image version's users are the ones
//! used. Names or numbers: a number is taken as the id it is, whether the database names it or
//! not. Without `User=` the service is root (0) of its namespace. `Group=` defaults to the
//! user's primary group; the supplementary groups are those `initgroups(3)` gives the user
//! (the groups listing it as a member, with the primary gid), only when `User=` is set, as
//! systemd does, and then `SupplementaryGroups=`. Every id is an id inside the service's user
//! namespace: 0 to 65534 (65535 is no id, as for systemd).

use berth_protocol::sandbox::UID_BLOCK_SIZE;

use crate::host_users::{self, DatabaseEntry, GroupEntry};
use crate::image::{ImageError, ImageRoot};
use crate::unit::{ServiceConfig, UnitIdentity};

/// Largest `/etc/passwd` or `/etc/group` of an image read.
const MAX_DATABASE_BYTES: u64 = 1024 * 1024;

/// Most supplementary groups a service may have (berth-helper's limit).
pub const MAX_SUPPLEMENTARY_GROUPS: usize = 32;

/// The highest id a user or group of the image may have: the block's last id, 65535, is
/// `(uid_t) -1` in 16 bits and no id.
const MAX_ID: u32 = UID_BLOCK_SIZE - 2;

#[derive(Debug, thiserror::Error)]
pub enum ImageUsersError {
    #[error("User={user}: no such user in the image's /etc/passwd")]
    NoSuchUser { user: String },
    #[error("{key}={group}: no such group in the image's /etc/group")]
    NoSuchGroup { key: &'static str, group: String },
    #[error("cannot read the image's users: {source}")]
    ReadDatabase {
        #[source]
        source: ImageError,
    },
    #[error("{what} has id {id}, outside the 0-{MAX_ID} a service's user namespace holds")]
    IdOutOfRange { what: String, id: u32 },
    #[error(
        "User={user} is named {name} in the image's /etc/passwd, which is not a user name \
         (1 to 31 characters of A-Z a-z 0-9 _ . -)"
    )]
    BadName { user: String, name: String },
    #[error("the service would have {count} supplementary groups; the most is {max}")]
    TooManyGroups { count: usize, max: usize },
}

/// The image's user a service runs as, with ids inside its user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// Its name in the image's `/etc/passwd` (`root` without `User=`; the number itself for a
    /// uid the database does not name).
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Each once, the primary gid among them when `initgroups` puts it there.
    pub supplementary_groups: Vec<u32>,
    /// `User=`'s home directory in the image's `/etc/passwd` (`$HOME`, as systemd sets it for
    /// a `User=`); none without `User=` or for a uid the database does not name.
    pub home: Option<String>,
}

/// The image's databases, read once per resolution.
struct Databases {
    passwd: Vec<DatabaseEntry>,
    groups: Vec<GroupEntry>,
}

/// Resolves `identity` (the unit's `User=` and the like) against the image at `root`.
pub fn resolve(root: &ImageRoot, identity: &UnitIdentity) -> Result<ImageUser, ImageUsersError> {
    let db = Databases {
        passwd: host_users::parse(&read_database(root, "/etc/passwd")?),
        groups: host_users::parse_groups(&read_database(root, "/etc/group")?),
    };
    resolve_in(&db, identity)
}

/// What attach tells about the units of `parsed` that run as the image's users (not
/// `DynamicUser=yes`) but cannot: the user or a group is missing from the image at `root`.
/// Their starts fail the same way until an image that has them is attached.
pub fn attach_warnings(root: &ImageRoot, parsed: &[(String, ServiceConfig)]) -> Vec<String> {
    parsed
        .iter()
        .filter(|(_, config)| !config.identity.dynamic_user)
        .filter_map(|(unit, config)| {
            let error = resolve(root, &config.identity).err()?;
            Some(format!("{unit}: {error}; it cannot start"))
        })
        .collect()
}

/// A database of the image as text; an image without one has an empty one.
fn read_database(root: &ImageRoot, path: &str) -> Result<String, ImageUsersError> {
    match root.read_bounded(path, MAX_DATABASE_BYTES) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(ImageError::NotFound { .. }) => Ok(String::new()),
        Err(source) => Err(ImageUsersError::ReadDatabase { source }),
    }
}

fn resolve_in(db: &Databases, identity: &UnitIdentity) -> Result<ImageUser, ImageUsersError> {
    let (name, uid, primary, home) = match identity.user.as_deref() {
        None => ("root".to_owned(), 0, Some(0), None),
        Some(user) => user_of(db, user)?,
    };
    check_id(|| format!("User={name}"), uid)?;
    let gid = match (identity.group.as_deref(), primary) {
        (Some(group), _) => gid_of(db, "Group", group)?,
        (None, Some(gid)) => gid,
        // A number the database does not name: its group of the same number, as useradd
        // pairs them.
        (None, None) => uid,
    };
    check_id(|| format!("the group of User={name}"), gid)?;
    let mut groups = Vec::new();
    if identity.user.is_some() {
        groups.push(gid);
        groups.extend(
            db.groups
                .iter()
                .filter(|g| g.members.contains(&name))
                .map(|g| g.gid),
        );
    }
    for group in &identity.supplementary_groups {
        groups.push(gid_of(db, "SupplementaryGroups", group)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    groups.retain(|g| seen.insert(*g));
    if let Some(&id) = groups.iter().find(|g| **g > MAX_ID) {
        return Err(ImageUsersError::IdOutOfRange {
            what: format!("a supplementary group of User={name}"),
            id,
        });
    }
    if groups.len() > MAX_SUPPLEMENTARY_GROUPS {
        return Err(ImageUsersError::TooManyGroups {
            count: groups.len(),
            max: MAX_SUPPLEMENTARY_GROUPS,
        });
    }
    Ok(ImageUser {
        name,
        uid,
        gid,
        supplementary_groups: groups,
        home,
    })
}

/// `User=`'s name, uid and primary gid (`None`: a number no line names).
/// A `User=`'s name, uid, primary gid and home directory.
type UserEntry = (String, u32, Option<u32>, Option<String>);

fn user_of(db: &Databases, user: &str) -> Result<UserEntry, ImageUsersError> {
    let entry = match user.parse::<u32>() {
        Ok(uid) => match db.passwd.iter().find(|e| e.id == uid) {
            Some(entry) => entry,
            None => return Ok((user.to_owned(), uid, None, None)),
        },
        Err(_) => db.passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            ImageUsersError::NoSuchUser {
                user: user.to_owned(),
            }
        })?,
    };
    if !is_user_name(&entry.name) {
        return Err(ImageUsersError::BadName {
            user: user.to_owned(),
            name: entry.name.chars().take(40).collect(),
        });
    }
    Ok((entry.name.clone(), entry.id, entry.gid, entry.home.clone()))
}

/// The gid a group name or number of `key=` stands for.
fn gid_of(db: &Databases, key: &'static str, group: &str) -> Result<u32, ImageUsersError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    db.groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| ImageUsersError::NoSuchGroup {
            key,
            group: group.to_owned(),
        })
}

fn check_id(what: impl FnOnce() -> String, id: u32) -> Result<(), ImageUsersError> {
    if id > MAX_ID {
        return Err(ImageUsersError::IdOutOfRange { what: what(), id });
    }
    Ok(())
}

/// A name berth-helper takes for the service's user: 1 to 31 characters of `[A-Za-z0-9_.-]`,
/// not starting with `-`.
fn is_user_name(name: &str) -> bool {
    (1..=31).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_fixture::Fixture;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        redis:x:100:101::/var/lib/redis:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nadm:x:4:redis,syslog\nredis:x:101:\n\
        audio:x:29:\n";

    fn image(passwd: &str, group: &str) -> Fixture {
        let fx = Fixture::new();
        fx.write("/etc/passwd", passwd);
        fx.write("/etc/group", group);
        fx
    }

    fn identity(user: Option<&str>, group: Option<&str>, supplementary: &[&str]) -> UnitIdentity {
        UnitIdentity {
            user: user.map(str::to_owned),
            group: group.map(str::to_owned),
            supplementary_groups: supplementary.iter().map(|s| (*s).to_owned()).collect(),
            dynamic_user: false,
        }
    }

    #[test]
    fn a_user_by_name_gets_its_uid_primary_group_and_the_groups_listing_it() {
        let fx = image(PASSWD, GROUP);

        let user = resolve(&fx.root(), &identity(Some("redis"), None, &[])).unwrap();

        assert_eq!(
            user,
            ImageUser {
                name: "redis".into(),
                uid: 100,
                gid: 101,
                supplementary_groups: vec![101, 4],
                home: Some("/var/lib/redis".into()),
            }
        );
    }

    #[test]
    fn without_user_the_service_is_root_with_no_groups_but_those_asked_for() {
        let fx = image(PASSWD, GROUP);

        let root = resolve(&fx.root(), &identity(None, None, &[])).unwrap();
        let with_audio = resolve(&fx.root(), &identity(None, None, &["audio"])).unwrap();

        assert_eq!((root.name.as_str(), root.uid, root.gid), ("root", 0, 0));
        assert!(root.supplementary_groups.is_empty());
        assert_eq!(with_audio.supplementary_groups, [29]);
    }

    #[test]
    fn group_and_supplementary_groups_are_names_or_numbers() {
        let fx = image(PASSWD, GROUP);

        let user = resolve(
            &fx.root(),
            &identity(Some("www-data"), Some("adm"), &["audio", "4000", "adm"]),
        )
        .unwrap();

        assert_eq!((user.uid, user.gid), (33, 4));
        assert_eq!(user.supplementary_groups, [4, 29, 4000]);
    }

    #[test]
    fn a_numeric_user_takes_the_name_the_image_gives_it_or_stays_a_number() {
        let fx = image(PASSWD, GROUP);

        let named = resolve(&fx.root(), &identity(Some("33"), None, &[])).unwrap();
        let unnamed = resolve(&fx.root(), &identity(Some("1234"), None, &[])).unwrap();

        assert_eq!(
            (named.name.as_str(), named.uid, named.gid),
            ("www-data", 33, 33)
        );
        assert_eq!(
            (unnamed.name.as_str(), unnamed.uid, unnamed.gid),
            ("1234", 1234, 1234)
        );
    }

    #[test]
    fn a_user_or_group_the_image_lacks_is_a_clear_error() {
        let fx = image(PASSWD, GROUP);

        let user = resolve(&fx.root(), &identity(Some("nginx"), None, &[])).unwrap_err();
        let group = resolve(&fx.root(), &identity(Some("redis"), Some("wheel"), &[])).unwrap_err();
        let extra = resolve(&fx.root(), &identity(None, None, &["video"])).unwrap_err();

        assert_eq!(
            user.to_string(),
            "User=nginx: no such user in the image's /etc/passwd"
        );
        assert_eq!(
            group.to_string(),
            "Group=wheel: no such group in the image's /etc/group"
        );
        assert_eq!(
            extra.to_string(),
            "SupplementaryGroups=video: no such group in the image's /etc/group"
        );
    }

    #[test]
    fn an_image_without_databases_has_root_and_numbers_only() {
        let fx = Fixture::new();

        let root = resolve(&fx.root(), &identity(None, None, &[])).unwrap();
        let numeric = resolve(&fx.root(), &identity(Some("100"), Some("101"), &[])).unwrap();
        let named = resolve(&fx.root(), &identity(Some("redis"), None, &[]));

        assert_eq!(root.uid, 0);
        assert_eq!((numeric.uid, numeric.gid), (100, 101));
        assert!(matches!(named, Err(ImageUsersError::NoSuchUser { .. })));
    }

    #[test]
    fn ids_outside_the_namespace_are_refused() {
        let fx = image(
            "big:x:70000:100::/:/bin/sh\nminus:x:65535:100::/:/bin/sh\nok:x:10:70000::/:/bin/sh\n",
            "",
        );

        for user in ["big", "minus", "ok", "65535"] {
            let result = resolve(&fx.root(), &identity(Some(user), None, &[]));

            assert!(
                matches!(result, Err(ImageUsersError::IdOutOfRange { .. })),
                "{user}: {result:?}"
            );
        }
        let extra = resolve(&fx.root(), &identity(None, None, &["65535"]));
        assert!(matches!(extra, Err(ImageUsersError::IdOutOfRange { .. })));
    }

    #[test]
    fn a_database_that_is_no_regular_file_or_too_large_fails_the_resolution() {
        let fx = Fixture::new();
        std::fs::create_dir_all(fx.path("/etc/passwd")).unwrap();
        let big = Fixture::new();
        big.write("/etc/group", &"g:x:1:\n".repeat(200_000));

        let dir = resolve(&fx.root(), &identity(Some("redis"), None, &[]));
        let large = resolve(&big.root(), &identity(None, None, &[]));

        assert!(
            matches!(dir, Err(ImageUsersError::ReadDatabase { .. })),
            "{dir:?}"
        );
        assert!(
            matches!(large, Err(ImageUsersError::ReadDatabase { .. })),
            "{large:?}"
        );
    }

    #[test]
    fn an_absolute_symlink_to_the_hosts_passwd_stays_inside_the_image() {
        let fx = Fixture::new();
        // /etc/passwd -> /host-passwd resolves to the image's own /host-passwd.
        fx.write("/host-passwd", "redis:x:200:200::/:/bin/sh\n");
        fx.link("/etc/passwd", "/host-passwd");
        std::fs::write(fx.host.join("passwd"), "redis:x:300:300::/:/bin/sh\n").unwrap();

        let user = resolve(&fx.root(), &identity(Some("redis"), None, &[])).unwrap();

        assert_eq!(user.uid, 200);
    }

    #[test]
    fn a_hostile_user_name_in_the_image_is_refused() {
        let fx = image("bad:name:x:5:5::/:/bin/sh\n", "");
        let fx2 = image("evil\u{1b}[2J:x:5:5::/:/bin/sh\n", "");

        let numeric = resolve(&fx2.root(), &identity(Some("5"), None, &[]));
        let unknown = resolve(&fx.root(), &identity(Some("bad"), None, &[]));

        assert!(
            matches!(numeric, Err(ImageUsersError::BadName { .. })),
            "{numeric:?}"
        );
        // "bad:name:x:5" has uid field "x": no line, so no such user.
        assert!(matches!(unknown, Err(ImageUsersError::NoSuchUser { .. })));
    }

    #[test]
    fn more_groups_than_the_helper_takes_are_refused() {
        let many: Vec<String> = (1000..1040).map(|g| g.to_string()).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        let fx = image(PASSWD, GROUP);

        let result = resolve(&fx.root(), &identity(None, None, &names));

        assert!(matches!(
            result,
            Err(ImageUsersError::TooManyGroups { count: 40, max: 32 })
        ));
    }
}
