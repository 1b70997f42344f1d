//! Untrusted text in log fields.

use std::fmt;

/// Most bytes of one untrusted value a log line shows.
pub const MAX_FIELD_BYTES: usize = 256;

/// Text from a client, an image or a service, made fit for a log field: control characters and
/// backslashes escaped (no forged lines, no terminal escapes on stderr) and at most
/// [`MAX_FIELD_BYTES`] shown, so a hostile caller cannot make each log line as long as its call.
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        for c in self.0.chars() {
            shown += c.len_utf8();
            if shown > MAX_FIELD_BYTES {
                return write!(f, "...({} bytes)", self.0.len());
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() && u32::from(c) < 0x100 => {
                    write!(f, "\\x{:02x}", u32::from(c))?
                }
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// [`Untrusted`] as an owned string, for a value that does not outlive the log call's input.
pub fn untrusted(text: &str) -> String {
    Untrusted(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_has_its_control_characters_escaped() {
        let shown = untrusted("a\nINFO forged\x1b[31m\\x");

        assert_eq!(shown, "a\\x0aINFO forged\\x1b[31m\\\\x");
    }

    #[test]
    fn untrusted_text_is_cut_at_the_field_limit() {
        let long = "é".repeat(MAX_FIELD_BYTES);

        let shown = untrusted(&long);

        assert!(shown.len() < MAX_FIELD_BYTES + 20, "{}", shown.len());
        assert!(
            shown.ends_with(&format!("...({} bytes)", long.len())),
            "{shown}"
        );
    }
}
