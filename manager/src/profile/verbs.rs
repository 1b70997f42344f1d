//! The Manager's profile verbs: `ListProfiles`, `ShowProfile` and `Security`.

use berth_protocol::manager::{
    ManagerError, ProfileInfo, SecurityCheck, SecurityReply, ShowProfileReply,
};

use super::score::{self, UnitFacts};
use super::{Profile, ProfileError};
use crate::daemon::Manager;
use crate::unit::model::NotifyAccess;

impl From<ProfileError> for ManagerError {
    fn from(e: ProfileError) -> ManagerError {
        match e {
            ProfileError::NotFound { profile } => ManagerError::NoSuchProfile { profile },
            ProfileError::InvalidName { ref profile }
            | ProfileError::Invalid { ref profile, .. } => ManagerError::InvalidProfile {
                profile: profile.clone(),
                reason: e.to_string(),
            },
            other => ManagerError::internal(other),
        }
    }
}

fn info(profile: &Profile) -> ProfileInfo {
    // The unit name only fills the profile's specifiers.
    let exposure = profile.spec("profile.service").ok().map(|(spec, _)| {
        let report = score::assess(&spec, &profile.rated_as(), &group_syscalls);
        number(report.exposure)
    });
    ProfileInfo {
        name: profile.name.clone(),
        version: i64::from(profile.version),
        reference: profile.reference(),
        path: profile.path.as_ref().map(|p| p.display().to_string()),
        summary: profile.summary(),
        exposure,
    }
}

fn number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The syscalls of a systemd `@group` (none for an unknown one).
fn group_syscalls(group: &str) -> Vec<String> {
    berth_protocol::syscall_groups::expand(group)
        .map(|names| names.into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Manager {
    /// `ListProfiles`: every profile at every version.
    pub fn list_profiles(&self) -> Result<Vec<ProfileInfo>, ManagerError> {
        Ok(self.profiles.list()?.iter().map(info).collect())
    }

    /// `ShowProfile`: one profile (its newest version for a bare name) and its text.
    pub fn show_profile(&self, arg: &str) -> Result<ShowProfileReply, ManagerError> {
        let profile = self.profiles.resolve(arg)?;
        Ok(ShowProfileReply {
            profile: info(&profile),
            contents: profile.text,
        })
    }

    /// `Security`: the exposure of the sandbox `unit` starts in, check by check.
    pub fn security(&self, unit: &str) -> Result<SecurityReply, ManagerError> {
        let unit = self.unit(unit)?;
        let spec = &unit.config.sandbox;
        // Never host root: a dynamic uid, or the image's users on the attachment's block.
        let image_user =
            self.runs_as_image_users(unit)
                .then_some(match unit.config.identity.user.as_deref() {
                    None | Some("root" | "0") => score::ImageUser::NamespaceRoot,
                    Some(_) => score::ImageUser::User,
                });
        let facts = UnitFacts {
            notify_access_all: unit.config.notify_access == Some(NotifyAccess::All),
            image_user,
            ..UnitFacts::default()
        };
        let report = score::assess(spec, &facts, &group_syscalls);
        let profile = self.status(unit).profile;
        let checks = report
            .checks
            .iter()
            .map(|a| SecurityCheck {
                id: a.id.to_owned(),
                description: a.description.clone(),
                weight: number(a.weight),
                badness: a.badness.map(number),
                range: number(a.range),
                exposure: report.check_exposure(a).map(number),
            })
            .collect();
        Ok(SecurityReply {
            unit: unit.name.clone(),
            profile,
            exposure: number(report.exposure),
            rating: score::rating(report.exposure).to_owned(),
            checks,
        })
    }
}
