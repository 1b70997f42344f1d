//! The global subscriber: where records go and which are kept.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::str::FromStr;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

/// Where journald listens for native-protocol messages; its presence means the host has one.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The level used when neither `--log-level` nor `RUST_LOG` says one.
pub const DEFAULT_LEVEL: &str = "info";

/// Journal fields carry this prefix (`BERTH_UNIT`, `BERTH_PEER_UID`), clear of journald's own.
const JOURNAL_FIELD_PREFIX: &str = "BERTH";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "invalid {origin} {value:?}: {reason}; expected a level (off, error, warn, info, debug, \
         trace) or directives like info,berth_manager=debug"
    )]
    InvalidLevel {
        origin: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --log-target {0:?}: expected auto, journal or stderr")]
    InvalidTarget(String),
    #[error("cannot install the logger: {0}")]
    Install(#[from] tracing::subscriber::SetGlobalDefaultError),
}

/// Where log records go, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// journald when the host has one and stderr is not a terminal; stderr otherwise.
    #[default]
    Auto,
    Journal,
    Stderr,
}

impl FromStr for Target {
    type Err = LogError;

    fn from_str(s: &str) -> Result<Target, LogError> {
        match s {
            "auto" => Ok(Target::Auto),
            "journal" => Ok(Target::Journal),
            "stderr" => Ok(Target::Stderr),
            other => Err(LogError::InvalidTarget(other.to_string())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Auto => "auto",
            Target::Journal => "journal",
            Target::Stderr => "stderr",
        })
    }
}

/// What [`init`] settled on: berthd hands both to the helper it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// The level directives in force, as given.
    pub level: String,
    /// [`Target::Journal`] or [`Target::Stderr`], never `Auto`.
    pub target: Target,
}

/// Parses level directives: `LEVEL` or `TARGET=LEVEL`, separated by commas. Unlike `Targets`'
/// own parser, a bare word that is not a level is refused rather than taken as a target name.
pub fn parse_level(origin: &'static str, value: &str) -> Result<Targets, LogError> {
    let invalid = |reason: String| LogError::InvalidLevel {
        origin,
        value: value.to_string(),
        reason,
    };
    let level = |text: &str| {
        LevelFilter::from_str(text.trim()).map_err(|_| invalid(format!("{text:?} is not a level")))
    };
    // Targets not named keep the default level, `info`, unless a bare level says otherwise.
    let mut targets = Targets::new().with_default(LevelFilter::INFO);
    if value.trim().is_empty() {
        return Err(invalid("empty".to_string()));
    }
    for directive in value.split(',').filter(|d| !d.trim().is_empty()) {
        targets = match directive.split_once('=') {
            None => targets.with_default(level(directive)?),
            Some((target, _)) if target.trim().is_empty() => {
                return Err(invalid(format!("{directive:?} names no target")));
            }
            Some((target, text)) => targets.with_target(target.trim(), level(text)?),
        };
    }
    Ok(targets)
}

/// Resolves `Auto`: journald when its socket exists and stderr is not a terminal (a person
/// running the daemon by hand wants to see its log).
pub fn resolve_target(target: Target, journal_socket: &Path, stderr_is_terminal: bool) -> Target {
    match target {
        Target::Auto if journal_socket.exists() && !stderr_is_terminal => Target::Journal,
        Target::Auto => Target::Stderr,
        chosen => chosen,
    }
}

/// Installs the global subscriber for daemon `identifier` (journald's SYSLOG_IDENTIFIER).
/// `level` is the `--log-level` flag, which wins over `rust_log` (the `RUST_LOG` variable).
pub fn init(
    identifier: &str,
    level: Option<&str>,
    rust_log: Option<&str>,
    target: Target,
) -> Result<Logging, LogError> {
    let (origin, text) = match (level, rust_log) {
        (Some(flag), _) => ("--log-level", flag),
        (None, Some(env)) => ("RUST_LOG", env),
        (None, None) => ("--log-level", DEFAULT_LEVEL),
    };
    let filter = parse_level(origin, text)?;
    let wanted = resolve_target(
        target,
        Path::new(JOURNAL_SOCKET),
        std::io::stderr().is_terminal(),
    );
    let (journal, journal_error) = match wanted {
        Target::Journal => match tracing_journald::layer() {
            Ok(layer) => (
                Some(
                    layer
                        .with_syslog_identifier(identifier.to_string())
                        .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.to_string())),
                ),
                None,
            ),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let stderr = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
    });
    let resolved = if journal.is_some() {
        Target::Journal
    } else {
        Target::Stderr
    };
    let subscriber = tracing_subscriber::registry()
        .with(journal)
        .with(stderr)
        .with(filter);
    tracing::subscriber::set_global_default(subscriber)?;
    if let Some(error) = journal_error {
        tracing::warn!(socket = JOURNAL_SOCKET, %error, "journald unreachable, logging to stderr");
    }
    Ok(Logging {
        level: text.to_string(),
        target: resolved,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn enabled(targets: &Targets, target: &str, level: tracing::Level) -> bool {
        targets.would_enable(target, &level)
    }

    #[test]
    fn a_bare_level_sets_the_default() {
        let targets = parse_level("--log-level", "debug").unwrap();

        assert!(enabled(
            &targets,
            "berth_manager::api",
            tracing::Level::DEBUG
        ));
        assert!(!enabled(
            &targets,
            "berth_manager::api",
            tracing::Level::TRACE
        ));
    }

    #[test]
    fn directives_set_levels_per_target() {
        let targets = parse_level("RUST_LOG", "warn,berth_manager=debug").unwrap();

        assert!(enabled(
            &targets,
            "berth_manager::api",
            tracing::Level::DEBUG
        ));
        assert!(!enabled(
            &targets,
            "berth_helper::server",
            tracing::Level::INFO
        ));
        assert!(enabled(
            &targets,
            "berth_helper::server",
            tracing::Level::WARN
        ));
    }

    #[test]
    fn a_target_without_a_level_is_refused() {
        let e = parse_level("--log-level", "berth_manager").unwrap_err();

        assert!(e.to_string().contains("--log-level"), "{e}");
        assert!(e.to_string().contains("is not a level"), "{e}");
    }

    #[test]
    fn an_unknown_level_is_refused_naming_its_origin() {
        for value in ["verbose", "info,berth_manager=loud", "=debug", ""] {
            let e = parse_level("RUST_LOG", value).unwrap_err();

            assert!(
                e.to_string().starts_with("invalid RUST_LOG"),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn auto_is_journal_only_with_the_socket_and_no_terminal() {
        let dir = std::env::temp_dir();
        let missing = dir.join("berth-logging-test-no-such-socket");

        assert_eq!(resolve_target(Target::Auto, &dir, false), Target::Journal);
        assert_eq!(resolve_target(Target::Auto, &dir, true), Target::Stderr);
        assert_eq!(
            resolve_target(Target::Auto, &missing, false),
            Target::Stderr
        );
        assert_eq!(resolve_target(Target::Stderr, &dir, false), Target::Stderr);
        assert_eq!(
            resolve_target(Target::Journal, &missing, true),
            Target::Journal
        );
    }

    #[test]
    fn targets_parse_and_print_back() {
        for name in ["auto", "journal", "stderr"] {
            assert_eq!(name.parse::<Target>().unwrap().to_string(), name);
        }
        assert!("syslog".parse::<Target>().is_err());
    }
}
