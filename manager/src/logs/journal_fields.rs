//! Whether berthd asks for a service's output to go to the host's journal too (berthd.toml
//! `forward_to_journal`), and the fields it names it with there.

use std::path::Path;

use berth_protocol::helper::JournalFields;

/// The host journal's native socket, whose presence `forward_to_journal = auto` looks for.
pub const HOST_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Longest journal field value berth-helper takes (its floor refuses longer ones).
const MAX_FIELD: usize = 255;

/// berthd.toml `forward_to_journal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardToJournal {
    /// When the host has a journal (its socket exists at start-up).
    #[default]
    Auto,
    Yes,
    No,
}

impl ForwardToJournal {
    /// Whether to forward, deciding `auto` by `socket`'s existence now.
    pub fn resolve(self, socket: &Path) -> bool {
        match self {
            ForwardToJournal::Auto => socket.exists(),
            ForwardToJournal::Yes => true,
            ForwardToJournal::No => false,
        }
    }
}

/// The fields of a service's journal entries: SYSLOG_IDENTIFIER= is its main executable's
/// name, as journald names a process's stdout stream, and PORTABLE= its image (as
/// systemd-portabled's units carry it). Control characters and overlong values are cut, so the
/// helper's floor never refuses a start over a log field.
pub fn journal_fields(image: &str, executable: Option<&str>) -> JournalFields {
    let name = executable
        .and_then(|path| path.rsplit('/').next())
        .filter(|name| !name.is_empty())
        .unwrap_or(image);
    JournalFields {
        identifier: field_value(name),
        portable: field_value(image),
    }
}

fn field_value(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_FIELD {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifier_is_the_executables_name_and_portable_the_image() {
        let fields = journal_fields("hello_1.0", Some("/usr/bin/hello"));

        assert_eq!(fields.identifier, "hello");
        assert_eq!(fields.portable, "hello_1.0");
    }

    #[test]
    fn without_an_executable_the_image_names_it() {
        assert_eq!(journal_fields("img", None).identifier, "img");
    }

    #[test]
    fn control_characters_and_overlong_names_are_cut() {
        let long = format!("/bin/a\u{1b}b{}", "é".repeat(200));

        let fields = journal_fields("img", Some(&long));

        assert!(fields.identifier.starts_with("ab"));
        assert!(fields.identifier.len() <= MAX_FIELD);
        assert!(!fields.identifier.chars().any(char::is_control));
    }

    #[test]
    fn auto_forwards_only_when_the_socket_is_there() {
        let dir = tempfile::tempdir().unwrap();

        assert!(!ForwardToJournal::Auto.resolve(&dir.path().join("socket")));
        assert!(ForwardToJournal::Auto.resolve(dir.path()));
        assert!(ForwardToJournal::Yes.resolve(&dir.path().join("socket")));
        assert!(!ForwardToJournal::No.resolve(dir.path()));
    }
}
