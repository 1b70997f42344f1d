//! The profiles berth ships (`manager/profiles/NAME@VERSION.conf`), compiled in.
//!
//! A version, once released, never changes: attachments record the version they were attached
//! with and keep its sandbox until they are attached again. A stricter profile is a new file
//! with the next version, and the old one stays.

/// One built-in profile at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltIn {
    pub name: &'static str,
    pub version: u32,
    pub text: &'static str,
}

macro_rules! built_in {
    ($name:literal, $version:literal) => {
        BuiltIn {
            name: $name,
            version: $version,
            text: include_str!(concat!("../../profiles/", $name, "@", $version, ".conf")),
        }
    };
}

/// The level a bare profile name gives (`attach --profile default`, and an attach without
/// `--profile`): the newest built-in version at most this. A built-in version above it is
/// shipped ahead, selectable by its full reference (`default@3`) until berth makes it the
/// default; the admin's own versions are not held back.
pub const LEVEL: u32 = 3;

/// Every built-in profile, every version.
pub static BUILT_IN: &[BuiltIn] = &[
    built_in!("default", 1),
    built_in!("nonetwork", 1),
    built_in!("strict", 1),
    built_in!("trusted", 1),
    // Version 2: TasksMax=15% (systemd's DefaultTasksMax=), so no service forks without end.
    built_in!("default", 2),
    built_in!("nonetwork", 2),
    built_in!("strict", 2),
    built_in!("trusted", 2),
    // Version 3: the image's own users on a private uid block, a persistent /var
    // (ProtectSystem=full), the capabilities and syscalls a root master needs in its own user
    // namespace; no PrivateUsers=.
    built_in!("default", 3),
    built_in!("nonetwork", 3),
    built_in!("strict", 3),
    built_in!("trusted", 3),
];
