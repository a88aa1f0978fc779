//! Text from workers, nodes and other users, made safe for a terminal.
//!
//! A task title, a plan item, a question, an answer, a label or a log line may carry escape
//! sequences: OSC 52 sets the reader's clipboard, others move the cursor, rewrite the screen or
//! change the window title. Everything dispatch prints that it did not write itself goes through
//! here first: colour sequences are dropped, and every other control character comes out as a
//! visible `\x1b`-style escape. (`--json` needs nothing more: JSON escapes control characters
//! itself.)

use std::borrow::Cow;

fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(c: char, out: &mut String) {
    let n = c as u32;
    if n <= 0xff {
        out.push_str(&format!("\\x{n:02x}"));
    } else {
        out.push_str(&format!("\\u{{{n:x}}}"));
    }
}

/// The length of the colour sequence (SGR: `ESC [ digits;… m`) at the start of `s`, if any.
fn sgr_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("\x1b[")?;
    let params = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (rest.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
}

fn clean(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_control(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        // Colour is dropped (text keeps its words); every other sequence shows, escaped.
        if let Some(n) = sgr_len(rest) {
            rest = &rest[n..];
            continue;
        }
        if is_control(c) && !keep(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// `s` with every control character (and bidirectional override) escaped, but for newlines
/// and tabs: for text shown on several lines (a question, an answer, a reason).
pub fn printable(s: &str) -> Cow<'_, str> {
    clean(s, |c| c == '\n' || c == '\t')
}

/// `s` with every control character escaped, newlines too: for text shown on one line (a
/// title, a plan item, a label, a table cell).
pub fn printable_line(s: &str) -> Cow<'_, str> {
    clean(s, |_| false)
}

/// Worker output for a terminal: printable text, newlines, tabs, carriage returns and colour
/// (SGR: `ESC [ … m`) pass; every other escape sequence and control byte is escaped, so output
/// can colour a line but not set a clipboard, a title or the cursor. Invalid UTF-8 passes as is
/// (the terminal shows it as it would any binary output).
pub fn terminal_output(bytes: &[u8]) -> Cow<'_, [u8]> {
    let needs = |b: u8| (b < 0x20 && !matches!(b, b'\n' | b'\t' | b'\r')) || b == 0x7f;
    // C1 controls (U+0080–U+009F, `C2 80`–`C2 9F` in UTF-8): some terminals obey them too.
    let c1 =
        |i: usize| bytes[i] == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n));
    if !bytes.iter().enumerate().any(|(i, &b)| needs(b) || c1(i)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            // A CSI sequence: parameters and intermediates, then a final byte.
            let mut j = i + 2;
            while j < bytes.len() && (0x20..=0x3f).contains(&bytes[j]) {
                j += 1;
            }
            let sgr = j < bytes.len()
                && bytes[j] == b'm'
                && bytes[i + 2..j]
                    .iter()
                    .all(|c| c.is_ascii_digit() || *c == b';');
            if sgr {
                out.extend_from_slice(&bytes[i..=j]);
                i = j + 1;
                continue;
            }
        }
        if c1(i) {
            out.extend_from_slice(format!("\\x{:02x}", bytes[i + 1]).as_bytes());
            i += 2;
            continue;
        }
        if needs(b) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn colour_is_dropped_and_other_sequences_show() {
        assert_eq!(printable_line("\x1b[31;1mred\x1b[0m title"), "red title");
        assert_eq!(printable_line("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable_line("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(
            printable_line("\x1b[31"),
            "\\x1b[31",
            "an unfinished one shows"
        );
    }

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        let osc52 = "title\x1b]52;c;cm0gLXJmIH4=\x07 done";
        assert_eq!(
            printable_line(osc52),
            "title\\x1b]52;c;cm0gLXJmIH4=\\x07 done"
        );
        assert_eq!(printable("a\nb\tc\x1b[2J"), "a\nb\tc\\x1b[2J");
        assert_eq!(printable_line("a\nb"), "a\\x0ab");
        assert_eq!(printable_line("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(printable_line("rtl\u{202e}txt"), "rtl\\u{202e}txt");
        assert!(matches!(printable("plain text ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn output_keeps_colour_and_nothing_else() {
        let out = terminal_output(b"\x1b[1;31merror\x1b[0m: \x1b]0;owned\x07\x1b[H\r\n");
        assert_eq!(
            out.as_ref(),
            b"\x1b[1;31merror\x1b[0m: \\x1b]0;owned\\x07\\x1b[H\r\n".as_slice()
        );
        assert!(matches!(terminal_output(b"plain\n"), Cow::Borrowed(_)));
    }

    proptest! {
        #[test]
        fn nothing_a_terminal_obeys_survives(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}a-z\\[\\]]{0,40}") {
            let line = printable_line(&s);
            prop_assert!(!line.chars().any(is_control));
            let out = terminal_output(s.as_bytes());
            // The only ESC left starts a colour sequence.
            for (i, b) in out.iter().enumerate() {
                if *b == 0x1b {
                    prop_assert_eq!(out.get(i + 1), Some(&b'['));
                }
                prop_assert!(*b >= 0x20 || matches!(*b, b'\n' | b'\t' | b'\r' | 0x1b));
                prop_assert!(*b != 0x7f);
                prop_assert!(!(*b == 0xc2 && out.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n))));
            }
        }
    }
}
