//! LoadCredential=, LoadCredentialEncrypted= and SetCredential= (systemd.exec(5),
//! "Credentials") into `SandboxSpec.credentials`.
//!
//! `LoadCredential=ID[:PATH]`: PATH absolute (a host file: a profile's or a host drop-in's to
//! give, never an image's) or a bare name (looked up by berth-helper in the host's credential
//! stores; without PATH, the ID). `SetCredential=ID:VALUE`: the value itself, C escapes
//! decoded; with a LoadCredential= of the same ID it is the fallback when the file is missing.
//! An empty assignment drops the files (the first two) or the values (the third) given so
//! far, the base's included: fewer credentials is never looser. A value never appears in a
//! warning: its assignment is shown as `SetCredential=ID:…`.

use berth_protocol::sandbox::{Credential, MAX_CREDENTIAL_BYTES, MAX_CREDENTIALS};

use super::super::super::syntax::unescape;
use super::parse::{Expected, absolute_path};
use super::{Layer, Refused, Source};

/// The directives of this file, as the table names them.
pub(super) const SET_CREDENTIAL: &str = "SetCredential";
const LOAD_DIRECTIVES: [&str; 2] = ["LoadCredential", "LoadCredentialEncrypted"];

/// Longest credential name (a file name).
const MAX_ID_BYTES: usize = 255;

/// One assignment, in order: the merge replays them over the base's credentials.
#[derive(Debug)]
pub(super) enum Step {
    Load {
        id: String,
        path: String,
        encrypted: bool,
    },
    Set {
        id: String,
        value: String,
    },
    /// `LoadCredential=` or `LoadCredentialEncrypted=` empty.
    DropFiles,
    /// `SetCredential=` empty.
    DropValues,
}

/// What a warning shows of a credential assignment: a SetCredential= value never.
pub(super) fn shown_value(key: &str, value: &str) -> String {
    if key == SET_CREDENTIAL {
        match value.split_once(':') {
            Some((id, _)) => format!("{id}:…"),
            None => "…".into(),
        }
    } else {
        value.to_owned()
    }
}

/// Whether `value` of `key` names a host path, which an image's unit may not.
pub(super) fn names_host_path(key: &str, value: &str) -> bool {
    LOAD_DIRECTIVES.contains(&key)
        && value
            .split_once(':')
            .is_some_and(|(_, path)| path.starts_with('/'))
}

/// systemd's `credential_name_valid`: a file name, not `.` or `..`; printable here too.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID_BYTES
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

fn load(value: &str, encrypted: bool) -> Result<Step, Expected> {
    const EXPECTED: Expected = "ID[:PATH], ID a file name and PATH absolute or a file name";
    let (id, path) = value.split_once(':').unwrap_or((value, ""));
    if !valid_name(id) {
        return Err(EXPECTED);
    }
    let path = match path {
        "" => id.to_owned(),
        absolute if absolute.starts_with('/') => absolute_path(absolute).map_err(|_| EXPECTED)?,
        name if valid_name(name) => name.to_owned(),
        _ => return Err(EXPECTED),
    };
    Ok(Step::Load {
        id: id.to_owned(),
        path,
        encrypted,
    })
}

fn set(value: &str) -> Result<Step, Expected> {
    const EXPECTED: Expected = "ID:VALUE, ID a file name and VALUE at most 1 MiB";
    let Some((id, data)) = value.split_once(':') else {
        return Err(EXPECTED);
    };
    if !valid_name(id) {
        return Err(EXPECTED);
    }
    // The decoder's own error would show the value.
    let data = unescape(data).map_err(|_| "ID:VALUE with valid C escapes in VALUE")?;
    if data.len() > MAX_CREDENTIAL_BYTES {
        return Err(EXPECTED);
    }
    Ok(Step::Set {
        id: id.to_owned(),
        value: data,
    })
}

impl Layer {
    pub(super) fn load_credential(&mut self, _: &Source, value: &str) -> Result<(), Refused> {
        self.credential_step(value, |v| load(v, false), Step::DropFiles)
    }

    pub(super) fn load_credential_encrypted(
        &mut self,
        _: &Source,
        value: &str,
    ) -> Result<(), Refused> {
        self.credential_step(value, |v| load(v, true), Step::DropFiles)
    }

    pub(super) fn set_credential(&mut self, _: &Source, value: &str) -> Result<(), Refused> {
        self.credential_step(value, set, Step::DropValues)
    }

    fn credential_step(
        &mut self,
        value: &str,
        read: impl Fn(&str) -> Result<Step, Expected>,
        reset: Step,
    ) -> Result<(), Refused> {
        let step = if value.is_empty() {
            reset
        } else {
            read(value).map_err(Refused::Invalid)?
        };
        self.credentials.push(step);
        Ok(())
    }
}

/// Replays a layer's steps over `credentials` (the base's); warns when the bound is reached.
pub(super) fn merge(
    credentials: &mut Vec<Credential>,
    steps: Vec<Step>,
    warnings: &mut Vec<String>,
) {
    let mut dropped = false;
    for step in steps {
        match step {
            Step::DropFiles => {
                for c in credentials.iter_mut() {
                    c.path = None;
                    c.encrypted = false;
                }
            }
            Step::DropValues => {
                for c in credentials.iter_mut() {
                    c.data = None;
                }
            }
            Step::Load {
                id,
                path,
                encrypted,
            } => {
                if let Some(c) = entry(credentials, &id, &mut dropped) {
                    c.path = Some(path);
                    c.encrypted = encrypted;
                }
            }
            Step::Set { id, value } => {
                if let Some(c) = entry(credentials, &id, &mut dropped) {
                    c.data = Some(value);
                }
            }
        }
        credentials.retain(|c| c.path.is_some() || c.data.is_some());
    }
    if dropped {
        warnings.push(format!(
            "credentials beyond the first {MAX_CREDENTIALS} are ignored"
        ));
    }
}

/// The credential named `id`, made if new and the bound allows.
fn entry<'a>(
    credentials: &'a mut Vec<Credential>,
    id: &str,
    dropped: &mut bool,
) -> Option<&'a mut Credential> {
    if let Some(index) = credentials.iter().position(|c| c.id == id) {
        return credentials.get_mut(index);
    }
    if credentials.len() >= MAX_CREDENTIALS {
        *dropped = true;
        return None;
    }
    credentials.push(Credential {
        id: id.to_owned(),
        path: None,
        data: None,
        encrypted: false,
    });
    credentials.last_mut()
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::SandboxSpec;

    use super::super::{profile_sandbox, sandbox_from};
    use super::*;
    use crate::unit::syntax::parse;

    fn credential(id: &str, path: Option<&str>, data: Option<&str>, encrypted: bool) -> Credential {
        Credential {
            id: id.into(),
            path: path.map(str::to_owned),
            data: data.map(str::to_owned),
            encrypted,
        }
    }

    /// The image's unit with `unit_lines`, then a host drop-in with `drop_in_lines`.
    fn layers(unit_lines: &str, drop_in_lines: &str) -> (Vec<Credential>, Vec<String>) {
        let unit = parse(&format!("[Service]\n{unit_lines}")).unwrap();
        let drop_in = parse(&format!("[Service]\n{drop_in_lines}")).unwrap();
        let (spec, warnings) = sandbox_from(
            "hello.service",
            &SandboxSpec::baseline(0, 0, ""),
            &[
                ("hello.service", &unit),
                ("hello.service.d/override.conf", &drop_in),
            ],
        );
        (spec.credentials, warnings)
    }

    fn unit(lines: &str) -> (Vec<Credential>, Vec<String>) {
        layers(lines, "")
    }

    #[test]
    fn load_credential_without_a_path_looks_up_its_own_name() {
        let (credentials, warnings) = unit("LoadCredential=db");

        assert_eq!(credentials, [credential("db", Some("db"), None, false)]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn load_credential_encrypted_with_a_store_name() {
        let (credentials, _) = unit("LoadCredentialEncrypted=db:db.cred");

        assert_eq!(credentials, [credential("db", Some("db.cred"), None, true)]);
    }

    #[test]
    fn set_credential_takes_the_rest_of_the_line_with_escapes_decoded() {
        let (credentials, _) = unit(r"SetCredential=token:a:b\x41\n");

        assert_eq!(
            credentials,
            [credential("token", None, Some("a:bA\n"), false)]
        );
    }

    #[test]
    fn set_and_load_of_one_name_make_one_credential_with_a_fallback() {
        let (credentials, _) = unit("SetCredential=db:fallback\nLoadCredential=db");

        assert_eq!(
            credentials,
            [credential("db", Some("db"), Some("fallback"), false)]
        );
    }

    #[test]
    fn an_image_s_unit_may_not_name_a_host_path() {
        let (credentials, warnings) = unit("LoadCredential=shadow:/etc/shadow");

        assert!(credentials.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not host paths"), "{warnings:?}");
    }

    #[test]
    fn a_host_drop_in_may_name_a_host_path() {
        let (credentials, warnings) = layers("", "LoadCredential=db:/etc/credstore/app/db");

        assert_eq!(
            credentials,
            [credential("db", Some("/etc/credstore/app/db"), None, false)]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_profile_may_name_a_host_path() {
        let file =
            parse("[Service]\nLoadCredentialEncrypted=db:/etc/credstore.encrypted/db\n").unwrap();

        let (spec, _) = profile_sandbox(
            "hello.service",
            &SandboxSpec::baseline(0, 0, ""),
            "profile test@1",
            &file,
            false,
        );

        assert_eq!(spec.credentials.len(), 1);
    }

    #[test]
    fn a_relative_path_climbing_out_is_invalid() {
        let (credentials, warnings) = unit("LoadCredential=db:../../etc/shadow");

        assert!(credentials.is_empty());
        assert!(warnings[0].contains("is not ID[:PATH]"), "{warnings:?}");
    }

    #[test]
    fn names_that_are_not_file_names_are_invalid() {
        for line in [
            "LoadCredential=a/b",
            "LoadCredential=..",
            "SetCredential=:v",
        ] {
            let (credentials, warnings) = unit(line);

            assert!(credentials.is_empty(), "{line}");
            assert_eq!(warnings.len(), 1, "{line}");
        }
    }

    #[test]
    fn a_set_value_never_appears_in_a_warning() {
        let (_, warnings) = unit("SetCredential=db:hunter2\\q");

        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].contains("hunter2"), "{warnings:?}");
        assert!(warnings[0].contains("SetCredential=db:…"), "{warnings:?}");
    }

    #[test]
    fn an_empty_assignment_drops_what_came_before_the_base_s_too() {
        let (credentials, _) = layers(
            "LoadCredential=a\nSetCredential=b:v",
            "LoadCredential=\nLoadCredential=c",
        );

        assert_eq!(
            credentials,
            [
                credential("b", None, Some("v"), false),
                credential("c", Some("c"), None, false),
            ]
        );
    }

    #[test]
    fn a_drop_in_replaces_the_unit_s_source_of_a_name() {
        let (credentials, _) = layers("LoadCredential=db", "LoadCredentialEncrypted=db");

        assert_eq!(credentials, [credential("db", Some("db"), None, true)]);
    }

    #[test]
    fn credentials_beyond_the_bound_are_ignored_with_a_warning() {
        let lines: String = (0..=MAX_CREDENTIALS)
            .map(|i| format!("SetCredential=c{i}:v\n"))
            .collect();

        let (credentials, warnings) = unit(&lines);

        assert_eq!(credentials.len(), MAX_CREDENTIALS);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
