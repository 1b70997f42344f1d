//! Parsing of `os-release(5)` data, the mandatory metadata of every image.
//!
//! Parsing is lenient as the specification asks: lines that are not a valid `KEY=VALUE`
//! assignment are ignored, never an error. The text comes from an image (hostile input); the
//! caller bounds its size (`image::MAX_OS_RELEASE_SIZE`) and this parser never panics.

use std::collections::BTreeMap;

/// The fields of an os-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// The value of `key`, if set (the last assignment wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `ID=`, the lower-case operating system identifier.
    #[cfg(test)]
    pub fn id(&self) -> Option<&str> {
        self.get("ID")
    }

    /// `PRETTY_NAME=`, for display.
    pub fn pretty_name(&self) -> Option<&str> {
        self.get("PRETTY_NAME")
    }

    /// `PORTABLE_PRETTY_NAME=`, the portable service's own display name.
    pub fn portable_pretty_name(&self) -> Option<&str> {
        self.get("PORTABLE_PRETTY_NAME")
    }

    /// `PORTABLE_PREFIXES=`: the unit name prefixes the image allows to be attached,
    /// space-separated. Empty when unset (meaning: no restriction).
    pub fn portable_prefixes(&self) -> Vec<String> {
        self.get("PORTABLE_PREFIXES")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// All fields, sorted by key.
    #[cfg(test)]
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }
}

/// Parses os-release text. Comments, blank lines, lines without `=`, keys outside
/// `[A-Z0-9_]+` and values with an unterminated quote are ignored.
pub fn parse(text: &str) -> OsRelease {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !is_valid_key(key) {
            continue;
        }
        if let Some(value) = parse_value(value.trim()) {
            fields.insert(key.to_owned(), value);
        }
    }
    OsRelease { fields }
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Decodes a shell-style value: unquoted text, `'single'` (literal) and `"double"` quoted
/// parts (where `\` escapes `$ " ' \` and a backtick), concatenated. `None` for an unterminated
/// quote or a trailing backslash, which the lenient parser treats as a junk line.
fn parse_value(raw: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => value.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => {
                        let escaped = chars.next()?;
                        if !matches!(escaped, '$' | '"' | '\'' | '\\' | '`') {
                            // Inside double quotes, other backslashes are literal (sh rules).
                            value.push('\\');
                        }
                        value.push(escaped);
                    }
                    c => value.push(c),
                }
            },
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unquoted_values() {
        let os = parse("ID=debian\nVERSION_ID=12\n");

        assert_eq!(os.id(), Some("debian"));
        assert_eq!(os.get("VERSION_ID"), Some("12"));
    }

    #[test]
    fn strips_double_quotes() {
        let os = parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");

        assert_eq!(os.pretty_name(), Some("Debian GNU/Linux 12 (bookworm)"));
    }

    #[test]
    fn strips_single_quotes_and_keeps_their_content_literal() {
        let os = parse("NAME='a \\\"b\\\" $c'\n");

        assert_eq!(os.get("NAME"), Some("a \\\"b\\\" $c"));
    }

    #[test]
    fn decodes_backslash_escapes_in_double_quotes() {
        let os = parse(r#"NAME="say \"hi\" \$HOME \\ \`x\` \n""#);

        assert_eq!(os.get("NAME"), Some(r#"say "hi" $HOME \ `x` \n"#));
    }

    #[test]
    fn decodes_backslash_escapes_outside_quotes() {
        let os = parse(r"NAME=a\ b");

        assert_eq!(os.get("NAME"), Some("a b"));
    }

    #[test]
    fn concatenates_adjacent_quoted_parts() {
        let os = parse(r#"NAME="a"'b'c"#);

        assert_eq!(os.get("NAME"), Some("abc"));
    }

    #[test]
    fn ignores_comments_blank_and_junk_lines() {
        let text = "# comment\n\n  \nthis is junk\nID=fedora\n=novalue\n";

        let os = parse(text);

        assert_eq!(os.fields().len(), 1);
        assert_eq!(os.id(), Some("fedora"));
    }

    #[test]
    fn ignores_keys_outside_upper_case_digits_and_underscore() {
        let os = parse("id=lower\nMY-KEY=dash\nKEY 2=space\nOK_2=yes\n");

        assert_eq!(os.fields().keys().collect::<Vec<_>>(), ["OK_2"]);
    }

    #[test]
    fn ignores_lines_with_an_unterminated_quote() {
        let os = parse("NAME=\"open\nID=x\n");

        assert_eq!(os.get("NAME"), None);
        assert_eq!(os.id(), Some("x"));
    }

    #[test]
    fn last_assignment_wins() {
        let os = parse("ID=a\nID=b\n");

        assert_eq!(os.id(), Some("b"));
    }

    #[test]
    fn keeps_empty_values() {
        let os = parse("VARIANT=\n");

        assert_eq!(os.get("VARIANT"), Some(""));
    }

    #[test]
    fn splits_portable_prefixes_on_whitespace() {
        let os = parse("PORTABLE_PREFIXES=\"foo  bar\tbaz\"\n");

        assert_eq!(os.portable_prefixes(), ["foo", "bar", "baz"]);
    }

    #[test]
    fn portable_prefixes_are_empty_when_unset() {
        let os = parse("ID=x\n");

        assert!(os.portable_prefixes().is_empty());
    }

    #[test]
    fn exposes_the_portable_pretty_name() {
        let os = parse("PORTABLE_PRETTY_NAME=\"My Service\"\n");

        assert_eq!(os.portable_pretty_name(), Some("My Service"));
    }

    #[test]
    fn empty_text_gives_no_fields() {
        let os = parse("");

        assert!(os.fields().is_empty());
        assert_eq!(os.id(), None);
    }
}
