//! `%` specifiers of `systemd.unit(5)` that berth can resolve from the unit name alone.

/// Resolves `%` specifiers (`systemd.unit(5)`) that depend only on the unit name or on fixed
/// system-manager directories. Returns the text and the specifiers left unresolved (they stay
/// in the text as written). With `escape_for_words`, substituted text is backslash-escaped so
/// that a later [`super::syntax::unquote_words`] keeps it as it is.
pub fn resolve_specifiers(value: &str, unit: &str, escape_for_words: bool) -> (String, Vec<char>) {
    let stem = unit.rsplit_once('.').map_or(unit, |(stem, _)| stem);
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, instance),
        None => (stem, ""),
    };
    let last_component = prefix.rsplit_once('-').map_or(prefix, |(_, last)| last);
    let mut out = String::with_capacity(value.len());
    let mut unresolved = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let replacement = match spec {
            '%' => "%".to_owned(),
            'n' => unit.to_owned(),
            'N' => stem.to_owned(),
            'p' => prefix.to_owned(),
            'P' => unescape_unit_name(prefix),
            'i' => instance.to_owned(),
            'I' => unescape_unit_name(instance),
            'j' => last_component.to_owned(),
            'J' => unescape_unit_name(last_component),
            'f' => {
                let name = unescape_unit_name(if instance.is_empty() {
                    prefix
                } else {
                    instance
                });
                if name.starts_with('/') {
                    name
                } else {
                    format!("/{name}")
                }
            }
            // Directories of the system service manager; the sandbox maps them per service.
            't' => "/run".to_owned(),
            'S' => "/var/lib".to_owned(),
            'C' => "/var/cache".to_owned(),
            'L' => "/var/log".to_owned(),
            'E' => "/etc".to_owned(),
            'T' => "/tmp".to_owned(),
            'V' => "/var/tmp".to_owned(),
            other => {
                if !unresolved.contains(&other) {
                    unresolved.push(other);
                }
                out.push('%');
                out.push(other);
                continue;
            }
        };
        if escape_for_words {
            escape_word_into(&replacement, &mut out);
        } else {
            out.push_str(&replacement);
        }
    }
    (out, unresolved)
}

/// systemd's unit name unescaping: `-` stands for `/` and `\xNN` for a byte.
fn unescape_unit_name(escaped: &str) -> String {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'-' => bytes.push(b'/'),
            b'\\' => {
                let decoded = tail
                    .strip_prefix(b"x")
                    .and_then(|hex| hex.get(..2))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(byte) => {
                        bytes.push(byte);
                        rest = tail.get(3..).unwrap_or_default();
                    }
                    None => bytes.push(b'\\'),
                }
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Escapes text so that `unquote_words` yields it back as (part of) one word.
fn escape_word_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            ' ' => out.push_str("\\s"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}
