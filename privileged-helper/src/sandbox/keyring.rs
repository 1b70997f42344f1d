//! KeyringMode=: every start gets a fresh session keyring. Without one, the service's
//! `@s` would fall back to its uid's user-session keyring, which the next service given the
//! same dynamic uid would find again (and a keyring inherited from the helper would be
//! possessed, hence usable, by the service). Joined after the uid change, so the new keyring
//! belongs to the service.

use berth_protocol::sandbox::KeyringMode;

use super::Failure;
use super::process_syscalls::ProcessSyscalls;

/// Joins a new anonymous session keyring; `Shared` links the uid's user keyring into it, as
/// systemd's KeyringMode=shared does.
pub(super) fn join(os: &impl ProcessSyscalls, mode: KeyringMode) -> Result<(), Failure> {
    match os.join_session_keyring() {
        Ok(_) => {}
        // A kernel without keyrings has none to leak.
        Err(rustix::io::Errno::NOSYS) => return Ok(()),
        Err(e) => return Err(Failure::setup("join a new session keyring", e)),
    }
    if mode == KeyringMode::Shared {
        os.link_user_keyring()
            .map_err(|e| Failure::setup("link the user keyring into the session keyring", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    #[test]
    fn private_joins_a_fresh_session_keyring_linked_to_nothing() {
        let os = RecordingProcess::new();

        join(&os, KeyringMode::Private).unwrap();

        assert_eq!(os.calls(), [ProcessCall::JoinSessionKeyring]);
    }

    #[test]
    fn shared_links_the_user_keyring_into_the_fresh_one() {
        let os = RecordingProcess::new();

        join(&os, KeyringMode::Shared).unwrap();

        assert_eq!(
            os.calls(),
            [
                ProcessCall::JoinSessionKeyring,
                ProcessCall::LinkUserKeyring
            ]
        );
    }

    #[test]
    fn a_failed_join_fails_the_start() {
        let os = RecordingProcess::new().failing(
            |c| *c == ProcessCall::JoinSessionKeyring,
            rustix::io::Errno::DQUOT,
        );

        let failure = join(&os, KeyringMode::Private).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "join a new session keyring".into(),
                errno: libc::EDQUOT
            }
        );
    }

    #[test]
    fn a_kernel_without_keyrings_is_no_failure() {
        let os = RecordingProcess::new().failing(
            |c| *c == ProcessCall::JoinSessionKeyring,
            rustix::io::Errno::NOSYS,
        );

        join(&os, KeyringMode::Shared).unwrap();

        assert_eq!(os.calls(), [ProcessCall::JoinSessionKeyring]);
    }
}
