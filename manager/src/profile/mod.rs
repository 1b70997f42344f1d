//! Profiles: the base of an attached unit's sandbox (DESIGN.md §5).
//!
//! A profile is a drop-in of `[Service]` sandbox directives, named and versioned (`default@1`).
//! berth ships `default`, `nonetwork`, `strict` and `trusted` ([`builtin`]); the admin's
//! directory (berthd.toml `profiles_dir`, default `/etc/berth/profiles`) overrides them and
//! adds others: `NAME@V.conf` is version V of NAME, `NAME.conf` replaces NAME's newest version
//! (version 1 of a new name). `attach --profile NAME` takes the newest version (of the built-in
//! ones, the newest up to [`builtin::LEVEL`]) and the attachment records it; the unit keeps
//! that version, even when a newer one appears, until it is attached again. From version
//! [`IMAGE_USERS_LEVEL`] on, a profile runs its services as the users of their image (block
//! mode). [`score`] rates a sandbox as `systemd-analyze security` does.

pub mod builtin;
mod equivalent_unit;
pub mod score;
#[cfg(test)]
mod stock_units_tests;
mod verbs;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_protocol::names;
use berth_protocol::sandbox::{NAMESPACE_CAPABILITIES, ProtectSystem, SandboxSpec};

/// The profile an attach without `--profile` gets.
pub const DEFAULT: &str = "default";

/// The profile whose directives replace the baseline instead of only tightening it (its
/// relaxations are still only what berth-helper's floor allows).
pub const TRUSTED: &str = "trusted";

/// The first profile level whose services run as the image's own users, in a block of host
/// uids of their own (DESIGN.md §5, "Users"); below it, a transient dynamic uid.
pub const IMAGE_USERS_LEVEL: u32 = 3;

/// Where the admin's profiles are unless berthd.toml says otherwise.
pub const DEFAULT_DIR: &str = "/etc/berth/profiles";

/// Largest profile file read: a profile is a page of directives.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024;

/// Most files the profile directory may hold that are read.
const MAX_DIR_ENTRIES: usize = 1024;

/// One profile at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub version: u32,
    pub text: String,
    /// The file it comes from in the admin's directory; `None`: built in.
    pub path: Option<PathBuf>,
}

impl Profile {
    /// `NAME@VERSION`, as attachments record it.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Whether this profile runs its units as their image's users (see [`uses_image_users`]).
    pub fn uses_image_users(&self) -> bool {
        self.version >= IMAGE_USERS_LEVEL
    }

    /// What its own exposure is rated with: a unit without User= under it, so in block mode
    /// root of its own user namespace (the most block mode gives).
    pub fn rated_as(&self) -> score::UnitFacts {
        score::UnitFacts {
            image_user: self
                .uses_image_users()
                .then_some(score::ImageUser::NamespaceRoot),
            ..score::UnitFacts::default()
        }
    }

    /// What this profile's directives tighten: [`SandboxSpec::baseline`], and in block mode
    /// (version [`IMAGE_USERS_LEVEL`] on) with the attachment's /var writable
    /// (ProtectSystem=full: the image itself is read-only at every level) and the
    /// capabilities confined to the service's own user namespace
    /// ([`NAMESPACE_CAPABILITIES`], which berth-helper grants only in block mode).
    fn base(&self) -> SandboxSpec {
        let mut base = SandboxSpec::baseline(0, 0, "");
        if self.uses_image_users() {
            base.mounts.protect_system = ProtectSystem::Full;
            base.capabilities.bounding = NAMESPACE_CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect();
        }
        base
    }

    /// The sandbox this profile gives unit `unit`: its `[Service]` directives over its base
    /// ([`Self::base`]: only tightening it, unless it is [`TRUSTED`]), with a warning for each
    /// line that had no effect.
    pub fn spec(&self, unit: &str) -> Result<(SandboxSpec, Vec<String>), ProfileError> {
        let reference = self.reference();
        let file = crate::unit::parse(&self.text).map_err(|e| ProfileError::Invalid {
            profile: reference.clone(),
            reason: e.to_string(),
        })?;
        let label = format!("profile {reference}");
        let base = self.base();
        let trusted = self.name == TRUSTED;
        let (mut spec, mut warnings) =
            crate::unit::profile_sandbox(unit, &base, &label, &file, trusted);
        spec.profile = reference;
        // A profile is the sandbox only: anything else in it is a mistake to point out.
        for section in file.sections() {
            if section.name != "Service" {
                warnings.push(format!(
                    "{label}:{}: [{}] is ignored: a profile holds [Service] sandbox directives",
                    section.line, section.name
                ));
                continue;
            }
            for a in &section.assignments {
                if !crate::unit::directives::sandbox::is_sandbox_directive(&a.key) {
                    warnings.push(format!(
                        "{label}:{}: {}= is ignored: not a sandbox directive berth reads",
                        a.line, a.key
                    ));
                }
            }
        }
        Ok((spec, warnings))
    }

    /// Whether a bare `NAME` may give this version: the admin's always, a built-in one up to
    /// [`builtin::LEVEL`].
    fn bare_name_gives(&self) -> bool {
        self.path.is_some() || self.version <= builtin::LEVEL
    }

    /// The first comment line of its text, the profile's summary.
    pub fn summary(&self) -> Option<String> {
        let line = self.text.lines().next()?.strip_prefix('#')?.trim();
        (!line.is_empty()).then(|| line.to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile '{profile}'")]
    NotFound { profile: String },
    #[error("'{profile}' is not a profile name (NAME or NAME@VERSION, VERSION from 1)")]
    InvalidName { profile: String },
    #[error("cannot read the profiles in {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {profile} cannot be read: {reason}")]
    Invalid { profile: String, reason: String },
    #[error("profile {path} is not a regular file of at most {MAX_PROFILE_BYTES} bytes of UTF-8")]
    BadFile { path: PathBuf },
}

/// Whether services attached with `profile` (as an attachment records it: `default@3`) run as
/// the image's own users: from level [`IMAGE_USERS_LEVEL`] on (unless `DynamicUser=yes`).
/// Levels 1 and 2 keep their dynamic uid, so that attachments made before do not change.
pub fn uses_image_users(profile: &str) -> bool {
    matches!(
        parse_reference(profile),
        Ok((_, Some(level))) if level >= IMAGE_USERS_LEVEL
    )
}

/// A profile argument: `NAME` (the newest version) or `NAME@VERSION`.
pub fn parse_reference(arg: &str) -> Result<(&str, Option<u32>), ProfileError> {
    let invalid = || ProfileError::InvalidName {
        profile: arg.to_owned(),
    };
    let (name, version) = match arg.split_once('@') {
        Some((name, version)) => {
            // Digits without a leading zero: one spelling per version.
            let digits = version.bytes().all(|b| b.is_ascii_digit());
            if !digits || version.starts_with('0') {
                return Err(invalid());
            }
            (name, Some(version.parse().map_err(|_| invalid())?))
        }
        None => (arg, None),
    };
    names::check_image_name(name).map_err(|_| invalid())?;
    Ok((name, version))
}

/// The built-in profiles and the admin's directory over them.
#[derive(Debug, Clone)]
pub struct Profiles {
    dir: PathBuf,
}

impl Profiles {
    pub fn new(dir: &Path) -> Profiles {
        Profiles {
            dir: dir.to_owned(),
        }
    }

    /// Every profile at every version, by name then version.
    pub fn list(&self) -> Result<Vec<Profile>, ProfileError> {
        let mut known: BTreeMap<(String, u32), Profile> = BTreeMap::new();
        for b in builtin::BUILT_IN {
            let profile = Profile {
                name: b.name.to_owned(),
                version: b.version,
                text: b.text.to_owned(),
                path: None,
            };
            known.insert((profile.name.clone(), b.version), profile);
        }
        let (versioned, newest) = self.admin_files()?;
        let admins = |name: String, version, path: PathBuf| -> Result<Profile, ProfileError> {
            Ok(Profile {
                text: read_profile(&path)?,
                name,
                version,
                path: Some(path),
            })
        };
        for ((name, version), path) in versioned {
            known.insert((name.clone(), version), admins(name, version, path)?);
        }
        // NAME.conf replaces the newest version a bare NAME gives otherwise.
        for (name, path) in newest {
            let version = known
                .values()
                .filter(|p| p.name == name && p.bare_name_gives())
                .map(|p| p.version)
                .max()
                .unwrap_or(1);
            known.insert((name.clone(), version), admins(name, version, path)?);
        }
        Ok(known.into_values().collect())
    }

    /// The profile `arg` names: `NAME` is its newest version (of the built-in ones, the newest
    /// up to [`builtin::LEVEL`]).
    pub fn resolve(&self, arg: &str) -> Result<Profile, ProfileError> {
        let (name, version) = parse_reference(arg)?;
        let mut matching: Vec<Profile> = self
            .list()?
            .into_iter()
            .filter(|p| p.name == name)
            .filter(|p| version.map_or_else(|| p.bare_name_gives(), |v| v == p.version))
            .collect();
        matching.pop().ok_or_else(|| ProfileError::NotFound {
            profile: arg.to_owned(),
        })
    }

    /// The `.conf` files of the admin's directory: `NAME@V.conf` by name and version, and
    /// `NAME.conf` by name. A missing directory has none; other names are skipped with a
    /// warning in berthd's log.
    #[allow(clippy::type_complexity)]
    fn admin_files(
        &self,
    ) -> Result<(BTreeMap<(String, u32), PathBuf>, BTreeMap<String, PathBuf>), ProfileError> {
        let mut versioned = BTreeMap::new();
        let mut newest = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((versioned, newest));
            }
            Err(source) => {
                return Err(ProfileError::ReadDir {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        for entry in entries.take(MAX_DIR_ENTRIES) {
            let entry = entry.map_err(|source| ProfileError::ReadDir {
                path: self.dir.clone(),
                source,
            })?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".conf")) else {
                continue;
            };
            match parse_reference(stem) {
                Ok((name, Some(version))) => {
                    versioned.insert((name.to_owned(), version), entry.path());
                }
                Ok((name, None)) => {
                    newest.insert(name.to_owned(), entry.path());
                }
                Err(e) => tracing::warn!(
                    path = %entry.path().display(),
                    "skipped: {e}"
                ),
            }
        }
        Ok((versioned, newest))
    }
}

/// A profile file's text: a regular file (a symlink is followed: the directory is root's),
/// bounded, UTF-8.
fn read_profile(path: &Path) -> Result<String, ProfileError> {
    let read = |source| ProfileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    if !file.metadata().map_err(read)?.is_file() {
        return Err(ProfileError::BadFile {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(ProfileError::BadFile {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ProfileError::BadFile {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Profiles) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let profiles = Profiles::new(dir.path());
        (dir, profiles)
    }

    #[test]
    fn services_run_as_the_images_users_from_profile_level_3() {
        assert!(uses_image_users("default@3"));
        assert!(uses_image_users("strict@12"));
        assert!(!uses_image_users("default@2"));
        assert!(!uses_image_users("trusted@1"));
        // An attachment always records a level; a bare or broken name is no level 3.
        assert!(!uses_image_users("default"));
        assert!(!uses_image_users("default@03"));
    }

    #[test]
    fn every_built_in_profile_is_listed_at_every_version_without_an_admin_directory() {
        let profiles = Profiles::new(Path::new("/nonexistent/berth/profiles"));

        let listed: Vec<String> = profiles
            .list()
            .unwrap()
            .iter()
            .map(Profile::reference)
            .collect();

        assert_eq!(
            listed,
            [
                "default@1",
                "default@2",
                "default@3",
                "nonetwork@1",
                "nonetwork@2",
                "nonetwork@3",
                "strict@1",
                "strict@2",
                "strict@3",
                "trusted@1",
                "trusted@2",
                "trusted@3"
            ]
        );
    }

    #[test]
    fn a_name_is_its_newest_version_and_a_version_is_exact() {
        let (_dir, profiles) = with_files(&[("default@3.conf", "# newer\n[Service]\n")]);

        let newest = profiles.resolve("default").unwrap();
        assert_eq!(newest.reference(), "default@3");
        assert_eq!(newest.summary().as_deref(), Some("newer"));
        let one = profiles.resolve("default@1").unwrap();
        assert_eq!((one.reference(), one.path), ("default@1".to_owned(), None));
    }

    #[test]
    fn a_bare_name_gives_level_3_the_image_users_and_an_older_level_by_reference() {
        let profiles = Profiles::new(Path::new("/nonexistent"));

        let bare = profiles.resolve("default").unwrap();
        let two = profiles.resolve("default@2").unwrap();

        assert_eq!(bare.reference(), "default@3");
        assert!(bare.uses_image_users());
        assert_eq!((two.reference(), two.path), ("default@2".to_owned(), None));
    }

    #[test]
    fn a_built_in_version_above_the_level_is_not_what_a_bare_name_gives() {
        let ahead = Profile {
            name: "default".into(),
            version: builtin::LEVEL + 1,
            text: String::new(),
            path: None,
        };
        let admins = Profile {
            path: Some("/etc/berth/profiles/default@9.conf".into()),
            ..ahead.clone()
        };

        assert!(!ahead.bare_name_gives() && admins.bare_name_gives());
    }

    #[test]
    fn the_admins_own_versions_are_not_held_back_by_the_level() {
        let (_dir, profiles) = with_files(&[("web@4.conf", "# web 4\n[Service]\n")]);

        assert_eq!(profiles.resolve("web").unwrap().reference(), "web@4");
    }

    #[test]
    fn a_versioned_file_replaces_that_version_and_a_plain_one_the_newest() {
        let (dir, profiles) = with_files(&[
            ("strict@1.conf", "# admin's strict 1\n"),
            ("nonetwork.conf", "# admin's nonetwork\n"),
            ("web.conf", "# a profile of the admin's own\n"),
        ]);

        let strict = profiles.resolve("strict@1").unwrap();
        let nonetwork = profiles.resolve("nonetwork").unwrap();
        let web = profiles.resolve("web").unwrap();

        assert_eq!(strict.summary().as_deref(), Some("admin's strict 1"));
        assert_eq!(strict.path, Some(dir.path().join("strict@1.conf")));
        assert_eq!(nonetwork.reference(), "nonetwork@3");
        assert_eq!(nonetwork.summary().as_deref(), Some("admin's nonetwork"));
        assert_eq!(web.reference(), "web@1");
    }

    #[test]
    fn an_unknown_profile_or_version_is_not_found() {
        let profiles = Profiles::new(Path::new("/nonexistent"));

        assert!(matches!(
            profiles.resolve("lax"),
            Err(ProfileError::NotFound { .. })
        ));
        assert!(matches!(
            profiles.resolve("default@7"),
            Err(ProfileError::NotFound { .. })
        ));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "default@",
            "default@0",
            "default@01",
            "default@x",
            "@1",
            "a/b",
            "de fault",
            "a@1@2",
        ] {
            assert!(
                matches!(parse_reference(bad), Err(ProfileError::InvalidName { .. })),
                "{bad}"
            );
        }
        assert_eq!(parse_reference("strict@12").unwrap(), ("strict", Some(12)));
    }

    #[test]
    fn an_oversized_or_non_utf8_profile_file_is_refused_with_its_path() {
        let big = "#".repeat(MAX_PROFILE_BYTES as usize + 1);
        let (_dir, profiles) = with_files(&[("big.conf", &big)]);
        let (_dir2, binary) = with_files(&[("bin@1.conf", "\u{0}")]);
        std::fs::write(_dir2.path().join("bin@1.conf"), [0xff, 0xfe]).unwrap();

        assert!(matches!(profiles.list(), Err(ProfileError::BadFile { .. })));
        assert!(matches!(
            binary.resolve("bin"),
            Err(ProfileError::BadFile { .. })
        ));
    }

    #[test]
    fn files_that_are_not_profiles_are_skipped() {
        let (_dir, profiles) =
            with_files(&[("README", "x"), ("bad name.conf", "x"), ("x@0.conf", "x")]);

        assert_eq!(profiles.list().unwrap().len(), builtin::BUILT_IN.len());
    }

    #[test]
    fn a_profiles_spec_records_it_and_the_built_in_ones_differ_as_named() {
        let profiles = Profiles::new(Path::new("/nonexistent"));
        let spec = |name: &str| profiles.resolve(name).unwrap().spec("a.service").unwrap();

        let (default, warnings) = spec("default");
        let (strict, _) = spec("strict");

        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(
            (default.profile.as_str(), strict.profile.as_str()),
            ("default@3", "strict@3")
        );
        assert!(!default.namespaces.private_network && strict.namespaces.private_network);
    }

    #[test]
    fn every_profile_at_version_2_limits_tasks_and_at_version_1_does_not() {
        let profiles = Profiles::new(Path::new("/nonexistent"));
        let tasks = |name: &str| {
            let (spec, warnings) = profiles.resolve(name).unwrap().spec("a.service").unwrap();
            assert_eq!(warnings, Vec::<String>::new(), "{name}");
            spec.resources.tasks_max
        };

        for name in ["default", "nonetwork", "strict", "trusted"] {
            let limit = tasks(&format!("{name}@2"));
            assert!(limit.is_some_and(|n| n > 0), "{name}@2: {limit:?}");
            assert_eq!(tasks(&format!("{name}@1")), None, "{name}@1");
        }
    }

    #[test]
    fn what_a_profile_holds_besides_sandbox_directives_is_named_in_a_warning() {
        let text = "[Service]\nExecStart=/bin/x\nPrivateNetwork=yes\n[Unit]\nDescription=x\n";
        let (_dir, profiles) = with_files(&[("odd.conf", text)]);

        let (spec, warnings) = profiles.resolve("odd").unwrap().spec("a.service").unwrap();

        assert!(spec.namespaces.private_network);
        assert_eq!(
            warnings,
            [
                "profile odd@1:2: ExecStart= is ignored: not a sandbox directive berth reads",
                "profile odd@1:4: [Unit] is ignored: a profile holds [Service] sandbox directives",
            ]
        );
    }

    #[test]
    fn only_trusted_loosens_the_baseline() {
        let loosen = "[Service]\nNoNewPrivileges=no\n";
        let (_dir, profiles) = with_files(&[("trusted.conf", loosen), ("web.conf", loosen)]);
        let spec = |name: &str| profiles.resolve(name).unwrap().spec("a.service").unwrap();

        let (trusted, none) = spec("trusted");
        let (web, warned) = spec("web");

        assert!(!trusted.no_new_privileges && none.is_empty());
        assert!(web.no_new_privileges);
        assert_eq!(warned.len(), 1, "{warned:?}");
    }

    /// The spec profile `name` gives a unit, checked to have no warnings.
    fn spec_of(name: &str) -> SandboxSpec {
        let profiles = Profiles::new(Path::new("/nonexistent"));
        let (spec, warnings) = profiles.resolve(name).unwrap().spec("a.service").unwrap();
        assert_eq!(warnings, Vec::<String>::new(), "{name}");
        spec
    }

    /// Whether `spec`'s syscall filter lets `name` through.
    fn allows(spec: &SandboxSpec, name: &str) -> bool {
        let filter = &spec.syscalls;
        filter
            .allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|n| n == name))
            && !filter.deny.iter().any(|n| n == name)
    }

    #[test]
    fn every_profile_at_version_3_is_version_2_without_private_users_and_with_var_writable() {
        for name in ["default", "nonetwork", "strict", "trusted"] {
            let two = spec_of(&format!("{name}@2"));
            let three = spec_of(&format!("{name}@3"));

            assert!(!three.identity.private_users, "{name}@3");
            assert_eq!(three.mounts.protect_system, ProtectSystem::Full, "{name}@3");
            let same = |s: &SandboxSpec| {
                let mut s = s.clone();
                s.profile.clear();
                s.identity.private_users = false;
                s.mounts.protect_system = ProtectSystem::Full;
                s.capabilities.bounding.clear();
                s.syscalls.allow = None;
                s.syscalls.deny.clear();
                s
            };
            assert_eq!(same(&three), same(&two), "{name}@3 against {name}@2");
        }
    }

    #[test]
    fn version_3_bounds_exactly_the_namespace_confined_capabilities() {
        for name in ["default", "nonetwork", "strict", "trusted"] {
            let three = spec_of(&format!("{name}@3"));
            let two = spec_of(&format!("{name}@2"));

            assert_eq!(
                three.capabilities.bounding, NAMESPACE_CAPABILITIES,
                "{name}@3"
            );
            assert!(three.capabilities.ambient.is_empty(), "{name}@3");
            assert!(two.capabilities.bounding.is_empty(), "{name}@2");
        }
    }

    #[test]
    fn version_3_lets_a_root_master_chown_and_switch_users_and_denies_the_rest() {
        let switch = [
            "setuid",
            "setgid",
            "setgroups",
            "setresuid",
            "setresgid",
            "chown",
            "fchown",
            "fchownat",
            "lchown",
        ];
        let denied = [
            "mount",
            "bpf",
            "chroot",
            "capset",
            "setrlimit",
            "sched_setscheduler",
            "reboot",
            "io_uring_setup",
            "userfaultfd",
            "pivot_root",
            "sethostname",
        ];
        for name in ["default", "nonetwork", "strict"] {
            let three = spec_of(&format!("{name}@3"));
            let two = spec_of(&format!("{name}@2"));

            for call in switch {
                assert!(allows(&three, call), "{name}@3 denies {call}");
            }
            // @privileged holds the uid half of @setuid, setgroups and @chown.
            for call in ["setuid", "setresuid", "setgroups", "chown", "fchownat"] {
                assert!(!allows(&two, call), "{name}@2 allows {call}");
            }
            for call in denied {
                assert!(!allows(&three, call), "{name}@3 allows {call}");
            }
        }
        assert!(
            !allows(&spec_of("strict@3"), "add_key"),
            "strict@3: @keyring"
        );
    }
}
