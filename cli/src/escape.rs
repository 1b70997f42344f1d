//! Hostile text made safe for a terminal.
//!
//! Service output and every string that comes from an image (descriptions, pretty names, unit
//! names, warnings, error messages naming them) can carry terminal control sequences: ESC starts
//! one, CR rewrites the line, BEL rings. Everything `berth` prints for a person goes through
//! [`escape`]; `--json` prints the exact data instead (JSON writes control characters as
//! `\u001b` itself).

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character and every byte that is not valid UTF-8 written as
/// `\xNN`, one escape per byte, the way systemd shows unprintable text: the C0 range (U+0000 to
/// U+001F) except tab, DEL (U+007F) and the C1 range (U+0080 to U+009F, so U+009B, the one-byte
/// CSI, becomes `\xc2\x9b`). Valid multibyte characters stay as they are.
///
/// Tab is kept, as systemd keeps it: it moves the cursor only forward and service output uses it
/// for alignment. Newline is escaped: every caller prints the result as (part of) one line, and a
/// newline would let the text forge lines of its own. Backslash is not escaped (as in systemd):
/// the result is for reading, not for parsing back; `--json` is for that.
pub fn escape<T: AsRef<[u8]> + ?Sized>(text: &T) -> Cow<'_, str> {
    let bytes = text.as_ref();
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(is_control)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_control(c) {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_hex(&mut out, b);
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            push_hex(&mut out, *b);
        }
    }
    Cow::Owned(out)
}

fn is_control(c: char) -> bool {
    c != '\t' && (c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c))
}

fn push_hex(out: &mut String, b: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\x{b:02x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            escape("hello world"),
            Cow::Borrowed("hello world")
        ));
    }

    #[test]
    fn c0_controls_are_escaped_per_byte() {
        assert_eq!(
            escape("\x1b[31mred\x07\rover\nline\0"),
            "\\x1b[31mred\\x07\\x0dover\\x0aline\\x00"
        );
    }

    #[test]
    fn tab_is_kept() {
        assert_eq!(escape("a\tb"), "a\tb");
    }

    #[test]
    fn del_is_escaped() {
        assert_eq!(escape("a\x7fb"), "a\\x7fb");
    }

    #[test]
    fn c1_controls_are_escaped_as_their_utf8_bytes() {
        assert_eq!(
            escape("\u{80}x\u{9b}2J\u{9f}"),
            "\\xc2\\x80x\\xc2\\x9b2J\\xc2\\x9f"
        );
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped() {
        assert_eq!(escape(b"ok\xff\xfe and \xc3"), "ok\\xff\\xfe and \\xc3");
    }

    #[test]
    fn valid_multibyte_characters_are_kept() {
        // U+00A0 follows the C1 range; U+00E9, a CJK character and an emoji are printable.
        let text = "\u{a0}caf\u{e9} \u{6f22} \u{1f980}";
        assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn escaped_text_holds_no_control_byte() {
        let hostile: Vec<u8> = (0..=255u8).collect();

        let shown = escape(&hostile);

        assert!(
            !shown
                .chars()
                .any(|c| c != '\t' && (c.is_control() || c == '\u{fffd}')),
            "{shown:?}"
        );
    }
}
