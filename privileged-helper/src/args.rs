//! The helper's command line, parsed by hand: five flags do not need an argument parser, and
//! every crate the root half links is code that runs as root.
//!
//! `berth-helper --socket PATH --manager-uid UID [--config FILE] [--lifeline] [--log-level LEVEL]
//! [--log-target TARGET]` (DESIGN.md §3). A value may follow its flag as the next argument or after `=`.

use std::ffi::OsString;
use std::path::PathBuf;

/// The floor policy read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/berth/helper.toml";

pub const USAGE: &str = "usage: berth-helper --socket PATH --manager-uid UID [--config FILE] \
[--lifeline] [--log-level LEVEL] [--log-target TARGET]

  --socket PATH       socket to serve io.berth.Helper on
  --manager-uid UID   the only uid allowed to call the helper (berthd's)
  --config FILE       floor policy (default /etc/berth/helper.toml)
  --lifeline          exit as soon as standard input (a pipe the manager holds) closes
  --log-level LEVEL   how much to log: error, warn, info, debug or trace
  --log-target TARGET where to log: journal, stderr or auto (the default)
  --help, --version";

/// What the helper was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve(Args),
    Help,
    Version,
}

/// The helper's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Socket to serve io.berth.Helper on.
    pub socket: PathBuf,
    /// The only uid allowed to call the helper (berthd's).
    pub manager_uid: u32,
    /// Floor policy (dynamic uid range, allowed image roots).
    pub config: PathBuf,
    /// Standard input is a pipe whose write end the manager holds: exit as soon as it closes,
    /// that is, as soon as the manager is gone.
    pub lifeline: bool,
    /// The level to log at (`error` ... `trace`, or a `RUST_LOG`-style filter), for the logging
    /// set-up; None leaves it to `RUST_LOG` and the default. Taken as given here: the logging
    /// set-up validates it.
    pub log_level: Option<String>,
    /// Where to log (berthd passes its own choice).
    pub log_target: berth_logging::Target,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown argument {0:?}\n{USAGE}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error("{flag} takes no value")]
    UnexpectedValue { flag: &'static str },
    #[error("{flag}: {value:?} is not {expected}")]
    InvalidValue {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("--socket PATH is required\n{USAGE}")]
    NoSocket,
    #[error("--manager-uid UID is required\n{USAGE}")]
    NoManagerUid,
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, ArgsError> {
    let mut socket = None;
    let mut manager_uid = None;
    let mut config = None;
    let mut lifeline = false;
    let mut log_level = None;
    let mut log_target = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (text.to_string(), None),
        };
        // The value of a flag: after `=` or the next argument, as given (paths need not be UTF-8).
        let mut value = |flag: &'static str| -> Result<OsString, ArgsError> {
            match inline {
                Some(v) => Ok(OsString::from(v)),
                None => args.next().ok_or(ArgsError::MissingValue(flag)),
            }
        };
        match name.as_str() {
            "--socket" => set(&mut socket, "--socket", value("--socket")?.into())?,
            "--manager-uid" => {
                let raw = value("--manager-uid")?;
                let uid = raw
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| ArgsError::InvalidValue {
                        flag: "--manager-uid",
                        value: raw.to_string_lossy().into_owned(),
                        expected: "a uid (a number from 0 to 4294967295)",
                    })?;
                set(&mut manager_uid, "--manager-uid", uid)?;
            }
            "--config" => set(&mut config, "--config", value("--config")?.into())?,
            "--log-level" => {
                let raw = value("--log-level")?;
                let level = raw.into_string().map_err(|raw| ArgsError::InvalidValue {
                    flag: "--log-level",
                    value: raw.to_string_lossy().into_owned(),
                    expected: "UTF-8 text",
                })?;
                set(&mut log_level, "--log-level", level)?;
            }
            "--log-target" => {
                let raw = value("--log-target")?;
                let target = raw.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    ArgsError::InvalidValue {
                        flag: "--log-target",
                        value: raw.to_string_lossy().into_owned(),
                        expected: "auto, journal or stderr",
                    }
                })?;
                set(&mut log_target, "--log-target", target)?;
            }
            "--lifeline" if inline.is_some() => {
                return Err(ArgsError::UnexpectedValue { flag: "--lifeline" });
            }
            "--lifeline" if lifeline => return Err(ArgsError::Repeated("--lifeline")),
            "--lifeline" => lifeline = true,
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            _ => return Err(ArgsError::Unknown(text.into_owned())),
        }
    }
    Ok(Command::Serve(Args {
        socket: socket.ok_or(ArgsError::NoSocket)?,
        manager_uid: manager_uid.ok_or(ArgsError::NoManagerUid)?,
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        lifeline,
        log_level,
        log_target: log_target.unwrap_or_default(),
    }))
}

fn set<T>(slot: &mut Option<T>, flag: &'static str, value: T) -> Result<(), ArgsError> {
    if slot.is_some() {
        return Err(ArgsError::Repeated(flag));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_flags_berthd_passes_are_parsed() {
        let parsed = parse_strs(&[
            "--socket",
            "/run/berth/private/io.berth.Helper",
            "--manager-uid",
            "998",
            "--lifeline",
        ]);

        assert_eq!(
            parsed,
            Ok(Command::Serve(Args {
                socket: PathBuf::from("/run/berth/private/io.berth.Helper"),
                manager_uid: 998,
                config: PathBuf::from(DEFAULT_CONFIG),
                lifeline: true,
                log_level: None,
                log_target: berth_logging::Target::Auto,
            }))
        );
    }

    #[test]
    fn values_may_follow_an_equals_sign() {
        let parsed = parse_strs(&[
            "--socket=/s",
            "--manager-uid=5",
            "--config=/c.toml",
            "--log-level=debug",
            "--log-target=stderr",
        ]);

        let Ok(Command::Serve(args)) = parsed else {
            panic!("not parsed: {parsed:?}");
        };
        assert_eq!(args.socket, PathBuf::from("/s"));
        assert_eq!(args.manager_uid, 5);
        assert_eq!(args.config, PathBuf::from("/c.toml"));
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert_eq!(args.log_target, berth_logging::Target::Stderr);
        assert!(!args.lifeline);
    }

    #[test]
    fn a_missing_required_flag_is_named() {
        let no_socket = parse_strs(&["--manager-uid", "5"]);
        let no_uid = parse_strs(&["--socket", "/s"]);

        assert_eq!(no_socket, Err(ArgsError::NoSocket));
        assert_eq!(no_uid, Err(ArgsError::NoManagerUid));
    }

    #[test]
    fn a_flag_without_its_value_is_refused() {
        let parsed = parse_strs(&["--socket", "/s", "--manager-uid"]);

        assert_eq!(parsed, Err(ArgsError::MissingValue("--manager-uid")));
    }

    #[test]
    fn a_uid_that_is_not_a_number_is_refused() {
        let negative = parse_strs(&["--socket", "/s", "--manager-uid", "-1"]);
        let name = parse_strs(&["--socket", "/s", "--manager-uid", "berth"]);

        assert!(matches!(negative, Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(name, Err(ArgsError::InvalidValue { .. })));
    }

    #[test]
    fn an_unknown_log_target_is_refused() {
        let parsed = parse_strs(&[
            "--socket",
            "/s",
            "--manager-uid",
            "5",
            "--log-target=syslog",
        ]);

        assert!(matches!(
            parsed,
            Err(ArgsError::InvalidValue {
                flag: "--log-target",
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_or_repeated_flag_is_refused() {
        let unknown = parse_strs(&["--socket", "/s", "--manager-uid", "5", "--verbose"]);
        let repeated = parse_strs(&["--socket", "/s", "--socket", "/t", "--manager-uid", "5"]);
        let lifeline_value = parse_strs(&["--lifeline=yes"]);

        assert_eq!(unknown, Err(ArgsError::Unknown("--verbose".into())));
        assert_eq!(repeated, Err(ArgsError::Repeated("--socket")));
        assert_eq!(
            lifeline_value,
            Err(ArgsError::UnexpectedValue { flag: "--lifeline" })
        );
    }

    #[test]
    fn help_and_version_are_commands() {
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["--version"]), Ok(Command::Version));
    }
}
