//! Credentials (LoadCredential=, LoadCredentialEncrypted=, SetCredential=): names that are
//! file names, values and files bounded, and host files only below the roots helper.toml
//! lists in `credential_roots` (systemd's credential stores by default). A bare name is
//! looked up in those roots when the service starts (`sandbox/credentials_dir.rs`).
//!
//! Refusals name the credential and its path, never its value.

use std::collections::BTreeSet;
use std::path::Path;

use berth_protocol::sandbox::{
    Credential, MAX_CREDENTIAL_BYTES, MAX_CREDENTIALS, credentials_directory,
};

use super::super::{Refusal, refuse};
use super::bounded;
use super::mounts::check_path;
use crate::config::FloorPolicy;

const FIELD: &str = "sandbox.credentials";

/// Longest credential name (a file name).
const MAX_ID_BYTES: usize = 255;

pub(super) fn check(policy: &FloorPolicy, credentials: &[Credential]) -> Result<(), Refusal> {
    bounded(FIELD, credentials, MAX_CREDENTIALS)?;
    let mut seen = BTreeSet::new();
    let mut total = 0usize;
    for credential in credentials {
        let id = &credential.id;
        if !valid_name(id) {
            return Err(refuse(
                FIELD,
                format!(
                    "{:?} is not a credential name (a file name of at most {MAX_ID_BYTES} \
                     printable bytes, not . or ..)",
                    berth_logging::untrusted(id)
                ),
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(refuse(FIELD, format!("credential {id} is given twice")));
        }
        match &credential.path {
            Some(path) if path.starts_with('/') => {
                check_path(FIELD, path)?;
                if !policy
                    .credential_roots
                    .iter()
                    .any(|root| Path::new(path).starts_with(root) && Path::new(path) != root)
                {
                    return Err(refuse(
                        FIELD,
                        format!(
                            "credential {id}: {path} is not under a credential root this \
                             berth-helper reads (helper.toml credential_roots)"
                        ),
                    ));
                }
            }
            Some(name) if !valid_name(name) => {
                return Err(refuse(
                    FIELD,
                    format!(
                        "credential {id}: {:?} is neither an absolute path nor a credential name",
                        berth_logging::untrusted(name)
                    ),
                ));
            }
            Some(_) => {}
            None if credential.encrypted => {
                return Err(refuse(
                    FIELD,
                    format!("credential {id}: an encrypted credential needs a file"),
                ));
            }
            None if credential.data.is_none() => {
                return Err(refuse(
                    FIELD,
                    format!("credential {id}: has neither a file nor a value"),
                ));
            }
            None => {}
        }
        total += credential.data.as_ref().map_or(0, String::len);
        if total > MAX_CREDENTIAL_BYTES {
            return Err(refuse(
                FIELD,
                format!(
                    "credential {id}: the values hold more than {MAX_CREDENTIAL_BYTES} bytes in \
                     all"
                ),
            ));
        }
    }
    Ok(())
}

/// systemd's `credential_name_valid`: a file name (no `/`, not `.` or `..`), and here also
/// printable, so that logs and errors can show it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID_BYTES
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// `$CREDENTIALS_DIRECTORY` in `environment` when the service has credentials, replacing
/// whatever berthd put there (the helper decides where they are).
pub(in crate::floor) fn set_directory(
    unit: &str,
    credentials: &[Credential],
    environment: &mut Vec<String>,
) {
    const KEY: &str = "CREDENTIALS_DIRECTORY=";
    environment.retain(|e| !e.starts_with(KEY));
    if !credentials.is_empty() {
        environment.push(format!("{KEY}{}", credentials_directory(unit)));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn policy() -> FloorPolicy {
        FloorPolicy {
            credential_roots: vec![PathBuf::from("/etc/credstore")],
            ..FloorPolicy::default()
        }
    }

    fn load(id: &str, path: &str) -> Credential {
        Credential {
            id: id.into(),
            path: Some(path.into()),
            data: None,
            encrypted: false,
        }
    }

    fn set(id: &str, value: &str) -> Credential {
        Credential {
            id: id.into(),
            path: None,
            data: Some(value.into()),
            encrypted: false,
        }
    }

    fn refusal(credentials: &[Credential]) -> String {
        check(&policy(), credentials).unwrap_err().reason
    }

    #[test]
    fn a_name_a_path_below_a_root_and_a_value_pass() {
        let credentials = [
            load("a", "a"),
            load("b", "/etc/credstore/sub/b"),
            set("c", "value"),
        ];

        assert_eq!(check(&policy(), &credentials), Ok(()));
    }

    #[test]
    fn a_host_path_outside_the_roots_is_refused() {
        let reason = refusal(&[load("shadow", "/etc/shadow")]);

        assert!(reason.contains("credential_roots"), "{reason}");
    }

    #[test]
    fn a_root_itself_is_no_credential() {
        let reason = refusal(&[load("store", "/etc/credstore")]);

        assert!(reason.contains("not under a credential root"), "{reason}");
    }

    #[test]
    fn a_path_climbing_out_of_its_root_is_refused() {
        let reason = refusal(&[load("shadow", "/etc/credstore/../shadow")]);

        assert!(reason.contains("normalized"), "{reason}");
    }

    #[test]
    fn a_relative_path_with_a_slash_is_refused() {
        let reason = refusal(&[load("a", "../shadow")]);

        assert!(reason.contains("neither an absolute path"), "{reason}");
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        for id in ["", ".", "..", "a/b", "a\nb"] {
            let credential = set(id, "v");

            assert!(check(&policy(), &[credential]).is_err(), "{id:?}");
        }
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let reason = refusal(&[set("a", "1"), set("a", "2")]);

        assert!(reason.contains("twice"), "{reason}");
    }

    #[test]
    fn values_above_the_bound_in_all_are_refused_without_showing_them() {
        let big = "s".repeat(MAX_CREDENTIAL_BYTES / 2 + 1);

        let reason = refusal(&[set("a", &big), set("b", &big)]);

        assert!(reason.contains("credential b"), "{reason}");
        assert!(!reason.contains("sss"), "{reason}");
    }

    #[test]
    fn more_credentials_than_the_bound_are_refused() {
        let many: Vec<Credential> = (0..=MAX_CREDENTIALS)
            .map(|i| set(&format!("c{i}"), "v"))
            .collect();

        assert!(check(&policy(), &many).is_err());
    }

    #[test]
    fn an_encrypted_credential_without_a_file_is_refused() {
        let mut credential = set("a", "v");
        credential.encrypted = true;

        let reason = refusal(&[credential]);

        assert!(reason.contains("needs a file"), "{reason}");
    }

    #[test]
    fn the_directory_is_set_only_with_credentials_and_replaces_berthd_s() {
        let mut with = vec!["CREDENTIALS_DIRECTORY=/elsewhere".to_owned()];
        let mut without = vec!["CREDENTIALS_DIRECTORY=/elsewhere".to_owned()];

        set_directory("a.service", &[set("a", "v")], &mut with);
        set_directory("a.service", &[], &mut without);

        assert_eq!(with, ["CREDENTIALS_DIRECTORY=/run/credentials/a.service"]);
        assert!(without.is_empty());
    }
}
