//! The value syntax of sandbox directives (`systemd.exec(5)`): path lists with `-`/`+`
//! prefixes, `src:dst:opts` binds, `path:opts` tmpfs, `~` name lists, `soft:hard` limits.
//! Each parser returns the typed value or what the value should have been.

use std::collections::BTreeSet;

use berth_protocol::sandbox::{
    BindPath, DeviceAccess, MAX_PATH_BYTES, Rlimit, SandboxPath, TemporaryFileSystem,
};

use super::super::super::syntax::unquote_words;
use super::super::super::values::{
    NS_PER_SEC, NS_PER_USEC, parse_mode, parse_size, parse_timespan_in,
};

/// A parse failure: what the value should have been.
pub(super) type Expected = &'static str;

/// The words of a value, with systemd's quoting.
pub(super) fn words(value: &str) -> Result<Vec<String>, Expected> {
    unquote_words(value).map_err(|_| "a list of words with valid quoting")
}

/// An absolute path made canonical as text: `//` and `.` components go, `..` is refused (it
/// could climb out of what the path names), and so is anything longer than the spec carries.
pub(super) fn absolute_path(path: &str) -> Result<String, Expected> {
    const EXPECTED: Expected = "an absolute path without '..' components";
    if !path.starts_with('/') || path.len() > MAX_PATH_BYTES {
        return Err(EXPECTED);
    }
    let mut out = String::with_capacity(path.len());
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." || component.chars().any(char::is_control) {
            return Err(EXPECTED);
        }
        out.push('/');
        out.push_str(component);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Strips the `-` (a missing path is skipped) and `+` (relative to the root directory, which
/// is the image's for every berth service) prefixes, in any order.
fn path_prefixes(word: &str) -> (&str, bool) {
    let mut ignore_missing = false;
    let mut rest = word;
    loop {
        if let Some(r) = rest.strip_prefix('-') {
            ignore_missing = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        } else {
            return (rest, ignore_missing);
        }
    }
}

/// ReadOnlyPaths= and its kind: `[-][+]/path ...`.
pub(super) fn sandbox_paths(value: &str) -> Result<Vec<SandboxPath>, Expected> {
    words(value)?
        .iter()
        .map(|word| {
            let (path, ignore_missing) = path_prefixes(word);
            Ok(SandboxPath {
                path: absolute_path(path)?,
                ignore_missing,
            })
        })
        .collect()
}

/// Splits a word on `:` (a path with a colon cannot be bound: systemd's `\:` escape is not
/// supported).
fn split_colons(word: &str) -> Vec<&str> {
    word.split(':').collect()
}

/// BindPaths=/BindReadOnlyPaths=: `[-]SOURCE[:DEST[:rbind|norbind]] ...`.
pub(super) fn bind_paths(value: &str, read_only: bool) -> Result<Vec<BindPath>, Expected> {
    const EXPECTED: Expected = "a list of [-]SOURCE[:DESTINATION[:rbind|norbind]]";
    words(value)?
        .iter()
        .map(|word| {
            let (word, ignore_missing) = match word.strip_prefix('-') {
                Some(rest) => (rest, true),
                None => (word.as_str(), false),
            };
            let parts = split_colons(word);
            let (source, target, recursive) = match parts.as_slice() {
                [source] => (source, source, true),
                [source, target] => (source, target, true),
                [source, target, option] => match *option {
                    "rbind" => (source, target, true),
                    "norbind" => (source, target, false),
                    _ => return Err(EXPECTED),
                },
                _ => return Err(EXPECTED),
            };
            Ok(BindPath {
                source: absolute_path(source)?,
                target: absolute_path(target)?,
                read_only,
                recursive,
                ignore_missing,
            })
        })
        .collect()
}

/// TemporaryFileSystem=: `PATH[:OPTIONS] ...`, options `ro`, `rw`, `mode=`, `size=` and the
/// flags the helper always sets (`nosuid`, `nodev`) or that change nothing here. A `size` of 0
/// leaves the size to the helper.
pub(super) fn temporary_filesystems(value: &str) -> Result<Vec<TemporaryFileSystem>, Expected> {
    const EXPECTED: Expected = "a list of PATH[:ro,mode=MODE,size=SIZE]";
    words(value)?
        .iter()
        .map(|word| {
            let parts = split_colons(word);
            let (path, options) = match parts.as_slice() {
                [path] => (path, ""),
                [path, options] => (path, *options),
                _ => return Err(EXPECTED),
            };
            let mut fs = TemporaryFileSystem {
                path: absolute_path(path)?,
                read_only: false,
                mode: 0o755,
                size: 0,
            };
            for option in options.split(',').filter(|o| !o.is_empty()) {
                match option.split_once('=') {
                    None if option == "ro" => fs.read_only = true,
                    None if option == "rw" => fs.read_only = false,
                    None if matches!(option, "nosuid" | "nodev" | "noexec" | "noatime") => {}
                    Some(("mode", mode)) => fs.mode = parse_mode(mode, 0o7777).ok_or(EXPECTED)?,
                    Some(("size", size)) => fs.size = parse_size(size).ok_or(EXPECTED)?,
                    _ => return Err(EXPECTED),
                }
            }
            Ok(fs)
        })
        .collect()
}

/// DeviceAllow=: `/dev/NODE [r][w][m]` (the access defaults to `rwm`).
pub(super) fn device_access(value: &str) -> Result<DeviceAccess, Expected> {
    const EXPECTED: Expected = "a /dev path followed by r, w and/or m";
    let words = words(value)?;
    let (path, access) = match words.as_slice() {
        [path] => (path, "rwm"),
        [path, access] => (path, access.as_str()),
        _ => return Err(EXPECTED),
    };
    let path = absolute_path(path)?;
    if !path.starts_with("/dev/")
        || access.is_empty()
        || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
    {
        return Err(EXPECTED);
    }
    Ok(DeviceAccess {
        path,
        read: access.contains('r'),
        write: access.contains('w'),
        mknod: access.contains('m'),
    })
}

/// A `~`-invertible list of names (CapabilityBoundingSet=, RestrictNamespaces=, ...): whether
/// it is inverted, and the names, each checked by `known` (unknown ones are returned apart).
pub(super) struct NameList {
    pub inverted: bool,
    pub names: BTreeSet<String>,
    pub unknown: Vec<String>,
}

pub(super) fn name_list(value: &str, known: impl Fn(&str) -> bool) -> Result<NameList, Expected> {
    let (inverted, rest) = match value.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let mut list = NameList {
        inverted,
        names: BTreeSet::new(),
        unknown: Vec::new(),
    };
    for word in words(rest)? {
        if known(&word) {
            list.names.insert(word);
        } else {
            list.unknown.push(word);
        }
    }
    Ok(list)
}

/// How a Limit*= resource reads its values (`systemd.exec(5)`, "Process properties").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitUnit {
    /// Bytes with base-1024 suffixes.
    Bytes,
    /// A plain count.
    Count,
    /// Seconds (LimitCPU=), a time span.
    Seconds,
    /// Microseconds (LimitRTTIME=), a time span whose bare numbers are microseconds.
    Microseconds,
    /// LimitNICE=: a raw 0..40 limit, or a nice level written with its sign (`-5`, `+10`).
    Nice,
}

/// The resources of Limit*=, as systemd names them after `Limit`.
pub(super) const RLIMITS: &[(&str, LimitUnit)] = &[
    ("CPU", LimitUnit::Seconds),
    ("FSIZE", LimitUnit::Bytes),
    ("DATA", LimitUnit::Bytes),
    ("STACK", LimitUnit::Bytes),
    ("CORE", LimitUnit::Bytes),
    ("RSS", LimitUnit::Bytes),
    ("NOFILE", LimitUnit::Count),
    ("AS", LimitUnit::Bytes),
    ("NPROC", LimitUnit::Count),
    ("MEMLOCK", LimitUnit::Bytes),
    ("LOCKS", LimitUnit::Count),
    ("SIGPENDING", LimitUnit::Count),
    ("MSGQUEUE", LimitUnit::Bytes),
    ("NICE", LimitUnit::Nice),
    ("RTPRIO", LimitUnit::Count),
    ("RTTIME", LimitUnit::Microseconds),
];

/// One limit value; `None` is infinity.
fn limit_value(text: &str, unit: LimitUnit) -> Result<Option<u64>, Expected> {
    const EXPECTED: Expected = "a limit: VALUE or SOFT:HARD, each a number with the \
                                resource's unit or infinity";
    if text == "infinity" {
        return Ok(None);
    }
    let value = match unit {
        LimitUnit::Bytes => parse_size(text),
        LimitUnit::Count => text.parse().ok(),
        LimitUnit::Seconds | LimitUnit::Microseconds => {
            let bare = if unit == LimitUnit::Seconds {
                NS_PER_SEC
            } else {
                NS_PER_USEC
            };
            parse_timespan_in(text, bare).map(|span| {
                if unit == LimitUnit::Seconds {
                    // Rounded up, as systemd does: a limit of 0.5 s is 1 s, not none.
                    span.as_secs() + u64::from(span.subsec_nanos() > 0)
                } else {
                    u64::try_from(span.as_micros()).unwrap_or(u64::MAX)
                }
            })
        }
        LimitUnit::Nice => match text.as_bytes().first() {
            // A nice level -20..19 is the rlimit 20 - level (40..1).
            Some(b'+' | b'-') => text
                .parse::<i64>()
                .ok()
                .filter(|level| (-20..=19).contains(level))
                .and_then(|level| u64::try_from(20 - level).ok()),
            _ => text.parse().ok().filter(|raw| *raw <= 40),
        },
    };
    value.map(Some).ok_or(EXPECTED)
}

/// A Limit*= value: `VALUE` (soft and hard) or `SOFT:HARD`, soft not above hard.
pub(super) fn rlimit(resource: &str, unit: LimitUnit, value: &str) -> Result<Rlimit, Expected> {
    let (soft, hard) = match value.split_once(':') {
        Some((soft, hard)) => (limit_value(soft, unit)?, limit_value(hard, unit)?),
        None => {
            let both = limit_value(value, unit)?;
            (both, both)
        }
    };
    if limit_above(soft, hard) {
        return Err("a soft limit no higher than the hard one");
    }
    Ok(Rlimit {
        resource: resource.to_owned(),
        soft,
        hard,
    })
}

/// Whether limit `a` is higher than `b` (`None` is infinity).
pub(super) fn limit_above(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        (_, None) => false,
    }
}

/// The lower of two limits.
pub(super) fn limit_min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    if limit_above(a, b) { b } else { a }
}

/// A StateDirectory= name: relative, with no empty, `.` or `..` component.
pub(super) fn directory_name(word: &str) -> Result<String, Expected> {
    const EXPECTED: Expected = "a list of relative directory names without '.' or '..'";
    let valid = !word.is_empty()
        && word.len() <= MAX_PATH_BYTES
        && !word.contains(':')
        && word
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.chars().any(char::is_control));
    if valid {
        Ok(word.to_owned())
    } else {
        Err(EXPECTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_canonical_and_dotdot_is_refused() {
        assert_eq!(
            absolute_path("//var/./lib//x/").as_deref(),
            Ok("/var/lib/x")
        );
        assert_eq!(absolute_path("/").as_deref(), Ok("/"));
        for bad in ["var/lib", "/var/../etc", "", "/a/\u{7}b"] {
            assert!(absolute_path(bad).is_err(), "{bad}");
        }
        assert!(absolute_path(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn path_lists_take_dash_and_plus_prefixes_and_quotes() {
        let paths = sandbox_paths("-/a +/b -+/c \"/with space\"").unwrap();

        let got: Vec<(&str, bool)> = paths
            .iter()
            .map(|p| (p.path.as_str(), p.ignore_missing))
            .collect();
        assert_eq!(
            got,
            [
                ("/a", true),
                ("/b", false),
                ("/c", true),
                ("/with space", false)
            ]
        );
    }

    #[test]
    fn binds_take_source_destination_and_recursion() {
        let binds = bind_paths("/a -/b:/c /d:/e:norbind", true).unwrap();

        let got: Vec<(&str, &str, bool, bool)> = binds
            .iter()
            .map(|b| {
                (
                    b.source.as_str(),
                    b.target.as_str(),
                    b.recursive,
                    b.ignore_missing,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/a", "/a", true, false),
                ("/b", "/c", true, true),
                ("/d", "/e", false, false)
            ]
        );
        assert!(binds.iter().all(|b| b.read_only));
        assert!(bind_paths("/a:/b:bogus", false).is_err());
        assert!(bind_paths("/a:relative", false).is_err());
    }

    #[test]
    fn tmpfs_options_set_mode_size_and_read_only() {
        let fs = temporary_filesystems("/x /y:ro,mode=0700,size=10M,nosuid").unwrap();

        assert_eq!((fs[0].mode, fs[0].size, fs[0].read_only), (0o755, 0, false));
        assert_eq!(
            (fs[1].mode, fs[1].size, fs[1].read_only),
            (0o700, 10 << 20, true)
        );
        assert!(temporary_filesystems("/x:mode=999").is_err());
        assert!(temporary_filesystems("/x:exec").is_err());
    }

    #[test]
    fn devices_need_a_dev_path_and_rwm() {
        let dev = device_access("/dev/fuse rw").unwrap();

        assert_eq!((dev.read, dev.write, dev.mknod), (true, true, false));
        assert!(device_access("/dev/fuse").unwrap().mknod);
        assert!(device_access("/etc/passwd r").is_err());
        assert!(device_access("/dev/fuse x").is_err());
        assert!(device_access("char-pts rw").is_err());
    }

    #[test]
    fn limits_read_each_resource_in_its_unit() {
        let limit = |resource, unit, value| rlimit(resource, unit, value).map(|r| (r.soft, r.hard));

        assert_eq!(
            limit("NOFILE", LimitUnit::Count, "1024:4096"),
            Ok((Some(1024), Some(4096)))
        );
        assert_eq!(
            limit("NOFILE", LimitUnit::Count, "512"),
            Ok((Some(512), Some(512)))
        );
        assert_eq!(
            limit("AS", LimitUnit::Bytes, "1G:infinity"),
            Ok((Some(1 << 30), None))
        );
        assert_eq!(
            limit("CPU", LimitUnit::Seconds, "1min"),
            Ok((Some(60), Some(60)))
        );
        assert_eq!(
            limit("CPU", LimitUnit::Seconds, "0.5"),
            Ok((Some(1), Some(1)))
        );
        assert_eq!(
            limit("RTTIME", LimitUnit::Microseconds, "500"),
            Ok((Some(500), Some(500)))
        );
        assert_eq!(
            limit("NICE", LimitUnit::Nice, "-5"),
            Ok((Some(25), Some(25)))
        );
        assert_eq!(
            limit("NICE", LimitUnit::Nice, "10"),
            Ok((Some(10), Some(10)))
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        for (unit, value) in [
            (LimitUnit::Count, "4096:1024"),
            (LimitUnit::Count, "infinity:5"),
            (LimitUnit::Count, "1K"),
            (LimitUnit::Nice, "41"),
            (LimitUnit::Nice, "-21"),
            (LimitUnit::Bytes, "lots"),
            (LimitUnit::Count, ""),
        ] {
            assert!(rlimit("X", unit, value).is_err(), "{value}");
        }
    }

    #[test]
    fn directory_names_stay_relative() {
        assert_eq!(directory_name("app/sub").as_deref(), Ok("app/sub"));
        for bad in ["", "/abs", "a/../b", "a//b", ".", "a:b"] {
            assert!(directory_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_lists_invert_with_a_tilde_and_set_aside_unknown_names() {
        let list = name_list("~a b zz", |n| n.len() == 1).unwrap();

        assert!(list.inverted);
        assert_eq!(list.names.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(list.unknown, ["zz"]);
    }
}
