//! User and group databases in the `/etc/passwd`, `/etc/group` format: the host's, read here,
//! and an image's, read by [`crate::image_users`] inside the image.

use std::path::Path;

/// One line of a passwd- or group-format file: name, id (uid or gid) and, for passwd, the
/// primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    pub name: String,
    pub id: u32,
    pub gid: Option<u32>,
    /// A passwd line's home directory (its sixth field), when it has a non-empty one.
    pub home: Option<String>,
}

/// Parses a passwd- or group-format file; unreadable files and malformed lines yield nothing.
pub fn entries(path: &Path) -> Vec<DatabaseEntry> {
    std::fs::read_to_string(path).map_or_else(|_| Vec::new(), |text| parse(&text))
}

/// Parses passwd- or group-format text; malformed lines yield nothing.
pub fn parse(text: &str) -> Vec<DatabaseEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_string();
            let id = fields.nth(1)?.parse().ok()?;
            let gid = fields.next().and_then(|g| g.parse().ok());
            let home = fields.nth(1).filter(|h| !h.is_empty()).map(str::to_owned);
            Some(DatabaseEntry {
                name,
                id,
                gid,
                home,
            })
        })
        .collect()
}

/// One line of a group-format file with the users it lists as members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses group-format text (`name:password:gid:user,user`); malformed lines yield nothing.
pub fn parse_groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_string();
            let gid = fields.nth(1)?.parse().ok()?;
            let members = fields
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some(GroupEntry { name, gid, members })
        })
        .collect()
}

/// The id of `name` in the database at `path`.
pub fn lookup(path: &Path, name: &str) -> Option<DatabaseEntry> {
    entries(path).into_iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_line_gives_name_uid_and_gid() {
        let entries = parse("berth:x:998:997::/:/usr/sbin/nologin\n");

        assert_eq!(
            entries,
            vec![DatabaseEntry {
                name: "berth".into(),
                id: 998,
                gid: Some(997),
                home: Some("/".into()),
            }]
        );
    }

    #[test]
    fn group_line_has_no_primary_gid() {
        let entries = parse("berth-admin:x:990:alice,bob\n");

        assert_eq!(entries[0].id, 990);
        assert_eq!(entries[0].gid, None);
    }

    #[test]
    fn group_lines_give_their_members() {
        let groups = parse_groups("adm:x:4:syslog, alice\nredis:x:101:\nbad\n");

        assert_eq!(
            groups,
            vec![
                GroupEntry {
                    name: "adm".into(),
                    gid: 4,
                    members: vec!["syslog".into(), "alice".into()]
                },
                GroupEntry {
                    name: "redis".into(),
                    gid: 101,
                    members: Vec::new()
                }
            ]
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse("garbage\nx:y:notanumber:1\n").is_empty());
    }
}
