//! `ExecStart=`-style command lines (`systemd.service(5)`, "Command lines").
//!
//! A command line is a set of prefix characters, an absolute executable path and arguments,
//! split into words with systemd's quoting. Environment variables are substituted only when
//! the command runs ([`ExecCommand::expand`]), because the environment is known only then.

use std::collections::BTreeMap;

use thiserror::Error;

use super::syntax::{self, UnitFileError};

/// Errors from parsing a command line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecCommandError {
    /// The value has no words (or only prefix characters).
    #[error("empty command line")]
    Empty,
    /// The words could not be split (bad quoting or escapes).
    #[error("cannot split command line into words: {0}")]
    SplitWords(#[source] UnitFileError),
    /// Two of `+`, `!` and `!!`, which systemd refuses too.
    #[error("prefixes '+', '!' and '!!' exclude each other")]
    ConflictingPrivilegePrefixes,
    /// `|`: run through the user's shell, not supported.
    #[error("prefix '|' (run via the shell) is not supported yet")]
    ShellPrefixUnsupported,
    /// `@` needs an argv[0] word after the path.
    #[error("prefix '@' needs an argv[0] after the executable path")]
    MissingArgv0,
    /// berth resolves commands inside the image only, so the path must be absolute.
    #[error("executable path {path:?} is not absolute (no PATH search is done)")]
    RelativePath { path: String },
    /// `@`: an argv[0] other than the executable. Parsed, but the helper executes argv[0], so
    /// berth refuses it rather than run the wrong file.
    #[error("prefix '@' (an argv[0] other than the executable) is not supported yet")]
    SeparateArgv0Unsupported,
    /// `.`/`..` components, `//` or a trailing `/`, which systemd rejects too.
    #[error("executable path {path:?} is not normalized")]
    UnnormalizedPath { path: String },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// Absolute path of the executable, inside the image.
    pub path: String,
    /// The argument vector, argv[0] included (the path itself unless `@` gave another).
    pub argv: Vec<String>,
    /// `-` prefix: a failing exit status counts as success.
    pub ignore_failure: bool,
    /// `:` prefix: no `$VAR` substitution.
    pub no_env_expansion: bool,
    /// `+`, `!` or `!!` as written: the command asks for privileges. berth grants none (every
    /// command runs in the service's sandbox), and the unit's reader warns about it.
    pub privileged_prefix: Option<&'static str>,
}

/// Parses one command line value (not an empty assignment: that is a reset, handled by the
/// caller).
pub fn parse(value: &str) -> Result<ExecCommand, ExecCommandError> {
    let mut words = syntax::unquote_words(value)
        .map_err(ExecCommandError::SplitWords)?
        .into_iter();
    // As in systemd, prefixes are part of the first word after unquoting.
    let first = words.next().ok_or(ExecCommandError::Empty)?;

    let mut ignore_failure = false;
    let mut separate_argv0 = false;
    let mut no_env_expansion = false;
    let mut privileged_prefix = None;
    let mut rest = first.as_str();
    // Each prefix may appear once, in any order; a repeated one ends the prefix run and so
    // makes the path relative, which is then refused.
    loop {
        if let Some(r) = rest.strip_prefix('-').filter(|_| !ignore_failure) {
            ignore_failure = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('@').filter(|_| !separate_argv0) {
            separate_argv0 = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(':').filter(|_| !no_env_expansion) {
            no_env_expansion = true;
            rest = r;
        } else if let Some((prefix, r)) = ["!!", "!", "+"]
            .into_iter()
            .find_map(|p| rest.strip_prefix(p).map(|r| (p, r)))
        {
            if privileged_prefix.is_some() {
                return Err(ExecCommandError::ConflictingPrivilegePrefixes);
            }
            privileged_prefix = Some(prefix);
            rest = r;
        } else if rest.starts_with('|') {
            return Err(ExecCommandError::ShellPrefixUnsupported);
        } else {
            break;
        }
    }

    let path = rest.to_owned();
    if path.is_empty() {
        return Err(ExecCommandError::Empty);
    }
    validate_path(&path)?;
    let argv0 = if separate_argv0 {
        words.next().ok_or(ExecCommandError::MissingArgv0)?
    } else {
        path.clone()
    };
    let argv = std::iter::once(argv0).chain(words).collect();
    Ok(ExecCommand {
        path,
        argv,
        ignore_failure,
        no_env_expansion,
        privileged_prefix,
    })
}

fn validate_path(path: &str) -> Result<(), ExecCommandError> {
    let Some(relative) = path.strip_prefix('/') else {
        return Err(ExecCommandError::RelativePath {
            path: path.to_owned(),
        });
    };
    let normalized = !relative.is_empty()
        && relative
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if normalized {
        Ok(())
    } else {
        Err(ExecCommandError::UnnormalizedPath {
            path: path.to_owned(),
        })
    }
}

impl ExecCommand {
    /// The argument vector with environment variables substituted, as systemd does at exec
    /// time:
    /// - a word that is exactly `$NAME` is replaced by the variable's value split at
    ///   whitespace: zero or more words (zero when unset or empty);
    /// - `${NAME}` anywhere in a word is replaced by the value as is (empty when unset);
    /// - `$$` is a literal `$`; any other `$` is kept.
    ///
    /// With the `:` prefix the argument vector is returned unchanged.
    ///
    /// One deliberate difference: systemd drops a `$word` whose rest is not a valid variable
    /// name (e.g. `$FOO/bar`) as an unset variable; berth keeps such a word literally.
    pub fn expand(&self, env: &BTreeMap<String, String>) -> Vec<String> {
        if self.no_env_expansion {
            return self.argv.clone();
        }
        let mut out = Vec::with_capacity(self.argv.len());
        for word in &self.argv {
            if let Some(name) = word.strip_prefix('$').filter(|n| is_valid_env_name(n)) {
                if let Some(value) = env.get(name) {
                    out.extend(value.split_whitespace().map(str::to_owned));
                }
                continue;
            }
            out.push(replace_braced(word, env));
        }
        out
    }
}

/// Replaces `${NAME}` and `$$` inside one word.
fn replace_braced(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some((name, r)) = after
            .strip_prefix('{')
            .and_then(|inner| inner.split_once('}'))
            .filter(|(name, _)| is_valid_env_name(name))
        {
            if let Some(value) = env.get(name) {
                out.push_str(value);
            }
            rest = r;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// An environment variable name as systemd accepts it: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_path_and_arguments() {
        let cmd = parse("/usr/bin/hello --name 'big world'").unwrap();

        assert_eq!(
            cmd,
            ExecCommand {
                path: "/usr/bin/hello".into(),
                argv: vec!["/usr/bin/hello".into(), "--name".into(), "big world".into()],
                ignore_failure: false,
                no_env_expansion: false,
                privileged_prefix: None,
            }
        );
    }

    #[test]
    fn dash_prefix_ignores_failure() {
        let cmd = parse("-/bin/true").unwrap();

        assert!(cmd.ignore_failure);
        assert_eq!(cmd.path, "/bin/true");
    }

    #[test]
    fn at_prefix_takes_argv0_from_the_second_word() {
        let cmd = parse("@/usr/bin/busybox sh -c true").unwrap();

        assert_eq!(cmd.path, "/usr/bin/busybox");
        assert_eq!(cmd.argv, ["sh", "-c", "true"]);
    }

    #[test]
    fn at_prefix_without_argv0_is_an_error() {
        assert_eq!(
            parse("@/usr/bin/busybox"),
            Err(ExecCommandError::MissingArgv0)
        );
    }

    #[test]
    fn colon_prefix_disables_env_expansion() {
        let cmd = parse(":/bin/echo $HOME").unwrap();

        assert!(cmd.no_env_expansion);
        assert_eq!(
            cmd.expand(&env(&[("HOME", "/root")])),
            ["/bin/echo", "$HOME"]
        );
    }

    #[test]
    fn prefixes_combine_in_any_order() {
        let cmd = parse(":-@/bin/x y").unwrap();

        assert!(cmd.ignore_failure && cmd.no_env_expansion);
        assert_eq!(cmd.path, "/bin/x");
        assert_eq!(cmd.argv, ["y"]);
    }

    #[test]
    fn repeated_prefix_makes_the_path_invalid() {
        let result = parse("--/bin/true");

        assert!(matches!(result, Err(ExecCommandError::RelativePath { .. })));
    }

    #[test]
    fn privilege_prefixes_are_recorded_and_the_command_kept() {
        for (line, prefix) in [("+/bin/sh", "+"), ("!/bin/sh", "!"), ("-!!/bin/sh", "!!")] {
            let cmd = parse(line).unwrap();

            assert_eq!(cmd.privileged_prefix, Some(prefix), "{line}");
            assert_eq!(cmd.path, "/bin/sh", "{line}");
        }
    }

    #[test]
    fn two_privilege_prefixes_are_refused() {
        for line in ["+!/bin/sh", "!+/bin/sh", "!!+/bin/sh", "++/bin/sh"] {
            assert_eq!(
                parse(line),
                Err(ExecCommandError::ConflictingPrivilegePrefixes),
                "{line}"
            );
        }
    }

    #[test]
    fn shell_prefix_is_unsupported() {
        assert_eq!(
            parse("|echo hi"),
            Err(ExecCommandError::ShellPrefixUnsupported)
        );
    }

    #[test]
    fn relative_path_is_refused() {
        assert_eq!(
            parse("hello --x"),
            Err(ExecCommandError::RelativePath {
                path: "hello".into()
            })
        );
    }

    #[test]
    fn unnormalized_paths_are_refused() {
        for path in ["/usr/../bin/sh", "/usr/./sh", "//bin/sh", "/bin/", "/"] {
            let result = parse(path);

            assert!(
                matches!(result, Err(ExecCommandError::UnnormalizedPath { .. })),
                "{path}: {result:?}"
            );
        }
    }

    #[test]
    fn empty_and_prefix_only_values_are_refused() {
        assert_eq!(parse(""), Err(ExecCommandError::Empty));
        assert_eq!(parse("   "), Err(ExecCommandError::Empty));
        assert_eq!(parse("-@"), Err(ExecCommandError::Empty));
    }

    #[test]
    fn bad_quoting_is_refused() {
        let result = parse("/bin/echo \"unterminated");

        assert!(matches!(result, Err(ExecCommandError::SplitWords(_))));
    }

    #[test]
    fn quoted_prefixes_are_still_prefixes() {
        let cmd = parse("\"-/opt/my app/run\" x").unwrap();

        assert!(cmd.ignore_failure);
        assert_eq!(cmd.path, "/opt/my app/run");
    }

    #[test]
    fn lone_dollar_word_splits_the_value_at_whitespace() {
        let cmd = parse("/bin/run $OPTS end").unwrap();

        let argv = cmd.expand(&env(&[("OPTS", " -a  -b\t-c ")]));

        assert_eq!(argv, ["/bin/run", "-a", "-b", "-c", "end"]);
    }

    #[test]
    fn lone_dollar_word_of_an_unset_variable_vanishes() {
        let cmd = parse("/bin/run $MISSING end").unwrap();

        assert_eq!(cmd.expand(&env(&[])), ["/bin/run", "end"]);
    }

    #[test]
    fn braced_variable_substitutes_inside_a_word_without_splitting() {
        let cmd = parse("/bin/run --opt=${OPTS}! ${OPTS}").unwrap();

        let argv = cmd.expand(&env(&[("OPTS", "a b")]));

        assert_eq!(argv, ["/bin/run", "--opt=a b!", "a b"]);
    }

    #[test]
    fn braced_unset_variable_becomes_empty() {
        let cmd = parse("/bin/run x${NOPE}y").unwrap();

        assert_eq!(cmd.expand(&env(&[])), ["/bin/run", "xy"]);
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let cmd = parse("/bin/run $$HOME a$$b").unwrap();

        let argv = cmd.expand(&env(&[("HOME", "/root")]));

        assert_eq!(argv, ["/bin/run", "$HOME", "a$b"]);
    }

    #[test]
    fn other_dollars_are_kept() {
        let cmd = parse("/bin/run a$ ${ ${1x} $FOO/bar").unwrap();

        let argv = cmd.expand(&env(&[("FOO", "no")]));

        assert_eq!(argv, ["/bin/run", "a$", "${", "${1x}", "$FOO/bar"]);
    }

    #[test]
    fn expansion_applies_to_argv0_but_not_the_path() {
        let cmd = parse("@/bin/busybox ${APPLET}").unwrap();

        let argv = cmd.expand(&env(&[("APPLET", "sh")]));

        assert_eq!(cmd.path, "/bin/busybox");
        assert_eq!(argv, ["sh"]);
    }

    #[test]
    fn env_names_follow_shell_rules() {
        assert!(is_valid_env_name("_A1"));
        assert!(!is_valid_env_name("1A"));
        assert!(!is_valid_env_name("A-B"));
        assert!(!is_valid_env_name(""));
    }
}
