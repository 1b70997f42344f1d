//! A parser for the unit file syntax of `systemd.syntax(7)`.
//!
//! The parser keeps everything the file says (sections in order, repeated keys, empty
//! assignments, line numbers) and interprets nothing: deciding what a directive means, and
//! warning about the ones berth does not implement, is `unit::directives`' job.
//!
//! Unit files come from images, which are hostile input: callers bound the text they pass in
//! (see `image::MAX_UNIT_FILE_SIZE`); the parser itself never panics on any input.

use thiserror::Error;

/// Errors from parsing a unit file or splitting a value into words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitFileError {
    /// An assignment appeared before the first `[Section]` header.
    #[error("line {line}: assignment outside of any section")]
    AssignmentOutsideSection { line: usize },
    /// A line that is neither a header, a comment nor a `KEY=VALUE` assignment.
    #[error("line {line}: missing '=' in assignment")]
    MissingEquals { line: usize },
    /// `=VALUE` with nothing before the `=`.
    #[error("line {line}: missing key name before '='")]
    MissingKey { line: usize },
    /// A `[` line that does not end in `]`, or an empty `[]`.
    #[error("line {line}: invalid section header")]
    InvalidSectionHeader { line: usize },
    /// A quote opened in a value is never closed.
    #[error("unterminated quote in {value:?}")]
    UnterminatedQuote { value: String },
    /// A value ends in a lone backslash.
    #[error("trailing backslash in {value:?}")]
    TrailingBackslash { value: String },
    /// A backslash escape that systemd does not know.
    #[error("invalid escape sequence {escape:?} in {value:?}")]
    InvalidEscape { escape: String, value: String },
    /// An escape produced a NUL byte, which cannot appear in an argument or variable.
    #[error("escape sequence produces a NUL byte in {value:?}")]
    NulByte { value: String },
    /// Escapes produced bytes that are not valid UTF-8.
    #[error("escape sequences produce invalid UTF-8 in {value:?}")]
    InvalidUtf8 { value: String },
}

/// One `KEY=VALUE` line (after joining continuations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    /// The value with surrounding whitespace trimmed; empty for `Key=`.
    pub value: String,
    /// 1-based line on which the assignment starts.
    pub line: usize,
}

/// One `[Section]`, with its assignments in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// 1-based line of the section's first header.
    pub line: usize,
    pub assignments: Vec<Assignment>,
}

/// A parsed unit file: sections in the order they first appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    sections: Vec<Section>,
}

impl UnitFile {
    /// All sections, in order of first appearance. A header repeated later in the file adds to
    /// the existing section, as systemd does.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The section named `name`, if present.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The value of the last assignment of `key` in `section` (possibly empty).
    #[cfg(test)]
    pub fn get_last(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)?
            .assignments
            .iter()
            .rev()
            .find(|a| a.key == key)
            .map(|a| a.value.as_str())
    }

    /// Every value of `key` in `section` after the last empty assignment: `Key=` resets a
    /// list-valued setting in systemd, so only what follows it counts.
    #[cfg(test)]
    pub fn get_all(&self, section: &str, key: &str) -> Vec<&str> {
        let mut values = Vec::new();
        if let Some(section) = self.section(section) {
            for a in section.assignments.iter().filter(|a| a.key == key) {
                if a.value.is_empty() {
                    values.clear();
                } else {
                    values.push(a.value.as_str());
                }
            }
        }
        values
    }
}

/// Parses unit file text per `systemd.syntax(7)`.
///
/// Differences from systemd, on purpose: a line without `=` and an assignment before any
/// section are errors (systemd logs and skips them), because a unit from a hostile image that
/// systemd would half-understand should be refused rather than guessed at.
pub fn parse(text: &str) -> Result<UnitFile, UnitFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut unit = UnitFile::default();
    let mut current: Option<usize> = None;
    // A logical line being joined from `\`-continued physical lines, with its first line number.
    let mut continuation: Option<(String, usize)> = None;

    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        // systemd skips comment lines before looking at continuations, so a comment inside a
        // continued assignment is dropped and the assignment goes on.
        let leading = raw.trim_start();
        if leading.starts_with('#') || leading.starts_with(';') {
            continue;
        }
        let (mut logical, start) = match continuation.take() {
            Some((mut joined, start)) => {
                joined.push_str(raw);
                (joined, start)
            }
            None => (raw.to_owned(), line_number),
        };
        if ends_with_unescaped_backslash(&logical) {
            logical.pop();
            logical.push(' ');
            continuation = Some((logical, start));
            continue;
        }
        parse_logical_line(&mut unit, &mut current, &logical, start)?;
    }
    // A file that ends inside a continuation: systemd parses what it has.
    if let Some((logical, start)) = continuation {
        parse_logical_line(&mut unit, &mut current, &logical, start)?;
    }
    Ok(unit)
}

/// Whether the line ends in a backslash that is not itself escaped (`\\` at the end is a
/// literal backslash, not a continuation).
fn ends_with_unescaped_backslash(line: &str) -> bool {
    let trailing = line.bytes().rev().take_while(|&b| b == b'\\').count();
    trailing % 2 == 1
}

fn parse_logical_line(
    unit: &mut UnitFile,
    current: &mut Option<usize>,
    line: &str,
    line_number: usize,
) -> Result<(), UnitFileError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix('[') {
        let name = rest
            .strip_suffix(']')
            .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
            .ok_or(UnitFileError::InvalidSectionHeader { line: line_number })?;
        let index = match unit.sections.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                unit.sections.push(Section {
                    name: name.to_owned(),
                    line: line_number,
                    assignments: Vec::new(),
                });
                unit.sections.len() - 1
            }
        };
        *current = Some(index);
        return Ok(());
    }
    let (key, value) = line
        .split_once('=')
        .ok_or(UnitFileError::MissingEquals { line: line_number })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(UnitFileError::MissingKey { line: line_number });
    }
    let section = current
        .and_then(|index| unit.sections.get_mut(index))
        .ok_or(UnitFileError::AssignmentOutsideSection { line: line_number })?;
    section.assignments.push(Assignment {
        key: key.to_owned(),
        value: value.trim().to_owned(),
        line: line_number,
    });
    Ok(())
}

/// Characters that separate words (systemd's `WHITESPACE`).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Splits a value into words the way systemd does for `ExecStart=` and `Environment=`
/// (`extract_first_word` with `EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE`).
///
/// Words are separated by whitespace. Single and double quotes may start anywhere in a word
/// and group whitespace into it (`a"b c"d` is the one word `ab cd`; `""` is an empty word).
/// Backslash escapes work inside and outside quotes: `\a \b \f \n \r \t \v \\ \" \' \s`
/// (space), `\xNN`, octal `\NNN`, `\uNNNN`, `\UNNNNNNNN`, an escaped separator stands for
/// itself, and `\;` is a literal `;` (systemd's spelling of a lone `;` argument).
pub fn unquote_words(value: &str) -> Result<Vec<String>, UnitFileError> {
    let mut words = Vec::new();
    // Bytes rather than chars: `\xNN` may produce one byte of a multi-byte character.
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();

    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| UnitFileError::TrailingBackslash {
                        value: value.to_owned(),
                    })?;
                unescape_one(escaped, &mut chars, &mut word, value)?;
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => push_char(&mut word, c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if is_separator(c) => {
                if in_word {
                    words.push(finish_word(&mut word, value)?);
                    in_word = false;
                }
            }
            (None, c) => {
                push_char(&mut word, c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(UnitFileError::UnterminatedQuote {
            value: value.to_owned(),
        });
    }
    if in_word {
        words.push(finish_word(&mut word, value)?);
    }
    Ok(words)
}

fn push_char(word: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    word.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn finish_word(word: &mut Vec<u8>, value: &str) -> Result<String, UnitFileError> {
    String::from_utf8(std::mem::take(word)).map_err(|_| UnitFileError::InvalidUtf8 {
        value: value.to_owned(),
    })
}

/// A whole value with its C escapes decoded and no quoting (systemd's `cunescape`, as
/// SetCredential= reads its value).
pub(crate) fn unescape(value: &str) -> Result<String, UnitFileError> {
    let mut out = Vec::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push_char(&mut out, c);
            continue;
        }
        let Some(escape) = chars.next() else {
            return Err(UnitFileError::InvalidEscape {
                escape: "\\".into(),
                value: value.to_owned(),
            });
        };
        unescape_one(escape, &mut chars, &mut out, value)?;
    }
    finish_word(&mut out, value)
}

/// Decodes the escape whose first character (after the backslash) is `c`, like systemd's
/// `cunescape_one`.
fn unescape_one(
    c: char,
    rest: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut Vec<u8>,
    value: &str,
) -> Result<(), UnitFileError> {
    let invalid = |escape: String| UnitFileError::InvalidEscape {
        escape,
        value: value.to_owned(),
    };
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        's' => Some(' '),
        '\\' | '"' | '\'' | ';' => Some(c),
        c if is_separator(c) => Some(c),
        _ => None,
    };
    if let Some(decoded) = simple {
        push_char(word, decoded);
        return Ok(());
    }
    let (radix, digits) = match c {
        'x' => (16, 2),
        'u' => (16, 4),
        'U' => (16, 8),
        '0'..='7' => (8, 2), // The first octal digit is `c` itself.
        _ => return Err(invalid(format!("\\{c}"))),
    };
    // `seen` is the escape as written (for error messages); `digits` what gets converted.
    let mut seen = format!("\\{c}");
    let mut digits_text = String::new();
    if radix == 8 {
        digits_text.push(c);
    }
    for _ in 0..digits {
        match rest.next_if(|d| d.is_digit(radix)) {
            Some(d) => {
                seen.push(d);
                digits_text.push(d);
            }
            None => return Err(invalid(seen)),
        }
    }
    let code = u32::from_str_radix(&digits_text, radix).map_err(|_| invalid(seen.clone()))?;
    if code == 0 {
        return Err(UnitFileError::NulByte {
            value: value.to_owned(),
        });
    }
    match c {
        // `\xNN` and octal give raw bytes (possibly one byte of a UTF-8 sequence); `\u` and
        // `\U` give code points.
        'x' | '0'..='7' => {
            let byte = u8::try_from(code).map_err(|_| invalid(seen))?;
            word.push(byte);
        }
        _ => {
            let decoded = char::from_u32(code).ok_or_else(|| invalid(seen))?;
            push_char(word, decoded);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignments(unit: &UnitFile, section: &str) -> Vec<(String, String, usize)> {
        unit.section(section)
            .map(|s| {
                s.assignments
                    .iter()
                    .map(|a| (a.key.clone(), a.value.clone(), a.line))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn parses_sections_in_order_with_line_numbers() {
        let text = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/hello\n";

        let unit = parse(text).unwrap();

        let names: Vec<_> = unit.sections().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Unit", "Service"]);
        assert_eq!(
            assignments(&unit, "Service"),
            [("ExecStart".into(), "/bin/hello".into(), 5)]
        );
    }

    #[test]
    fn trims_whitespace_around_equals_and_at_the_ends() {
        let text = "[Service]\n   Environment   =   A=1 B=2   \n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.get_last("Service", "Environment"), Some("A=1 B=2"));
    }

    #[test]
    fn keeps_equals_signs_inside_the_value() {
        let unit = parse("[Service]\nEnvironment=A=1\n").unwrap();

        assert_eq!(unit.get_last("Service", "Environment"), Some("A=1"));
    }

    #[test]
    fn skips_hash_and_semicolon_comments_and_blank_lines() {
        let text = "# top\n; also\n[Unit]\n  # indented\n\n\t\nDescription=x\n";

        let unit = parse(text).unwrap();

        assert_eq!(
            assignments(&unit, "Unit"),
            [("Description".into(), "x".into(), 7)]
        );
    }

    #[test]
    fn keeps_repeated_keys_in_order() {
        let text = "[Service]\nExecStart=/a\nExecStart=/b\n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.get_all("Service", "ExecStart"), ["/a", "/b"]);
        assert_eq!(unit.get_last("Service", "ExecStart"), Some("/b"));
    }

    #[test]
    fn empty_assignment_is_kept() {
        let unit = parse("[Service]\nEnvironment=\n").unwrap();

        assert_eq!(
            assignments(&unit, "Service"),
            [("Environment".into(), String::new(), 2)]
        );
        assert_eq!(unit.get_last("Service", "Environment"), Some(""));
    }

    #[test]
    fn get_all_returns_only_values_after_the_last_empty_assignment() {
        let text = "[Service]\nX=1\nX=2\nX=\nX=3\nX=4\n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.get_all("Service", "X"), ["3", "4"]);
    }

    #[test]
    fn get_all_is_empty_when_the_list_ends_with_a_reset() {
        let unit = parse("[Service]\nX=1\nX=\n").unwrap();

        assert!(unit.get_all("Service", "X").is_empty());
    }

    #[test]
    fn lookups_of_missing_section_or_key_return_nothing() {
        let unit = parse("[Service]\nX=1\n").unwrap();

        assert_eq!(unit.get_last("Unit", "X"), None);
        assert_eq!(unit.get_last("Service", "Y"), None);
        assert!(unit.get_all("Unit", "X").is_empty());
    }

    #[test]
    fn repeated_section_header_adds_to_the_first_section() {
        let text = "[Service]\nX=1\n[Unit]\nY=2\n[Service]\nX=3\n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.sections().len(), 2);
        assert_eq!(unit.get_all("Service", "X"), ["1", "3"]);
    }

    #[test]
    fn continuation_joins_lines_replacing_the_backslash_with_a_space() {
        let text = "[Service]\nExecStart=/bin/echo \\\n  hello \\\nworld\nX=1\n";

        let unit = parse(text).unwrap();

        assert_eq!(
            assignments(&unit, "Service"),
            [
                ("ExecStart".into(), "/bin/echo    hello  world".into(), 2),
                ("X".into(), "1".into(), 5),
            ]
        );
    }

    #[test]
    fn comment_lines_inside_a_continuation_are_skipped() {
        let text = "[Service]\nExecStart=/bin/echo a\\\n# not part of it\n; nor this\nb\n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.get_last("Service", "ExecStart"), Some("/bin/echo a b"));
    }

    #[test]
    fn escaped_backslash_at_end_of_line_is_not_a_continuation() {
        let text = "[Service]\nX=a\\\\\nY=b\n";

        let unit = parse(text).unwrap();

        assert_eq!(unit.get_last("Service", "X"), Some("a\\\\"));
        assert_eq!(unit.get_last("Service", "Y"), Some("b"));
    }

    #[test]
    fn continuation_at_end_of_file_is_parsed() {
        let unit = parse("[Service]\nX=a \\").unwrap();

        assert_eq!(unit.get_last("Service", "X"), Some("a"));
    }

    #[test]
    fn accepts_crlf_line_endings_and_a_byte_order_mark() {
        let unit = parse("\u{feff}[Service]\r\nX=1\r\n").unwrap();

        assert_eq!(unit.get_last("Service", "X"), Some("1"));
    }

    #[test]
    fn assignment_before_any_section_is_an_error_with_its_line() {
        let result = parse("# c\n\nX=1\n[Service]\n");

        assert_eq!(
            result,
            Err(UnitFileError::AssignmentOutsideSection { line: 3 })
        );
    }

    #[test]
    fn line_without_equals_is_an_error_with_its_line() {
        let result = parse("[Service]\nX=1\nnonsense\n");

        assert_eq!(result, Err(UnitFileError::MissingEquals { line: 3 }));
    }

    #[test]
    fn continued_line_without_equals_reports_its_first_line() {
        let result = parse("[Service]\nfoo \\\nbar\n");

        assert_eq!(result, Err(UnitFileError::MissingEquals { line: 2 }));
    }

    #[test]
    fn missing_key_is_an_error() {
        let result = parse("[Service]\n = 1\n");

        assert_eq!(result, Err(UnitFileError::MissingKey { line: 2 }));
    }

    #[test]
    fn unterminated_section_header_is_an_error() {
        assert_eq!(
            parse("[Service\n"),
            Err(UnitFileError::InvalidSectionHeader { line: 1 })
        );
        assert_eq!(
            parse("[]\n"),
            Err(UnitFileError::InvalidSectionHeader { line: 1 })
        );
    }

    #[test]
    fn empty_text_gives_no_sections() {
        let unit = parse("").unwrap();

        assert!(unit.sections().is_empty());
    }

    #[test]
    fn unquote_splits_on_whitespace() {
        let words = unquote_words("  a\tb  c \n").unwrap();

        assert_eq!(words, ["a", "b", "c"]);
    }

    #[test]
    fn unquote_groups_quoted_whitespace_into_one_word() {
        let words = unquote_words(r#"a "b c" 'd e'"#).unwrap();

        assert_eq!(words, ["a", "b c", "d e"]);
    }

    #[test]
    fn unquote_joins_quotes_inside_a_word() {
        let words = unquote_words(r#"x"b c"'d'y"#).unwrap();

        assert_eq!(words, ["xb cdy"]);
    }

    #[test]
    fn unquote_keeps_empty_quoted_words() {
        let words = unquote_words(r#"a "" ''"#).unwrap();

        assert_eq!(words, ["a", "", ""]);
    }

    #[test]
    fn unquote_keeps_the_other_quote_literally() {
        let words = unquote_words(r#""it's" 'say "hi"'"#).unwrap();

        assert_eq!(words, ["it's", r#"say "hi""#]);
    }

    #[test]
    fn unquote_decodes_c_escapes() {
        let words = unquote_words(r#"a\nb \t \\ \" \' \x41\x42 \s"#).unwrap();

        assert_eq!(words, ["a\nb", "\t", "\\", "\"", "'", "AB", " "]);
    }

    #[test]
    fn unquote_decodes_escapes_inside_quotes() {
        let words = unquote_words(r#""a\"b" 'c\'d'"#).unwrap();

        assert_eq!(words, ["a\"b", "c'd"]);
    }

    #[test]
    fn unquote_decodes_octal_and_unicode_escapes() {
        let words = unquote_words(r"\101 \u00e9 \U0001F600").unwrap();

        assert_eq!(words, ["A", "é", "😀"]);
    }

    #[test]
    fn unquote_assembles_utf8_from_hex_bytes() {
        let words = unquote_words(r"\xc3\xa9").unwrap();

        assert_eq!(words, ["é"]);
    }

    #[test]
    fn unquote_escaped_space_stays_in_the_word() {
        let words = unquote_words(r"a\ b c").unwrap();

        assert_eq!(words, ["a b", "c"]);
    }

    #[test]
    fn unquote_of_empty_or_blank_value_gives_no_words() {
        assert!(unquote_words("").unwrap().is_empty());
        assert!(unquote_words("   ").unwrap().is_empty());
    }

    #[test]
    fn unquote_rejects_an_unterminated_quote() {
        let result = unquote_words(r#"a "b c"#);

        assert!(matches!(
            result,
            Err(UnitFileError::UnterminatedQuote { .. })
        ));
    }

    #[test]
    fn unquote_rejects_a_trailing_backslash() {
        let result = unquote_words("a \\");

        assert!(matches!(
            result,
            Err(UnitFileError::TrailingBackslash { .. })
        ));
    }

    #[test]
    fn unquote_rejects_an_unknown_escape() {
        let result = unquote_words(r"\q");

        assert!(
            matches!(result, Err(UnitFileError::InvalidEscape { escape, .. }) if escape == "\\q")
        );
    }

    #[test]
    fn unquote_rejects_a_short_hex_escape() {
        let result = unquote_words(r"\x4");

        assert!(matches!(result, Err(UnitFileError::InvalidEscape { .. })));
    }

    #[test]
    fn unquote_rejects_a_nul_escape() {
        let result = unquote_words(r"\x00");

        assert!(matches!(result, Err(UnitFileError::NulByte { .. })));
    }

    #[test]
    fn unquote_rejects_escapes_that_make_invalid_utf8() {
        let result = unquote_words(r"\xff");

        assert!(matches!(result, Err(UnitFileError::InvalidUtf8 { .. })));
    }
}
