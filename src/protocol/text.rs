//! Peer-supplied text made safe to show: control and bidi characters escaped, length capped.
//!
//! Everything a peer says in words (ERROR messages, paths, decode errors quoting its JSON)
//! passes through [`peer_text`] before it becomes part of one of our errors, a log line or an
//! event, so a hostile peer cannot retitle a terminal, paint fake status lines, forge log
//! lines with a newline, reorder text with bidi overrides or flood a log with megabytes.

use std::fmt::Write;

use crate::error::Error;

/// Longest peer text we keep, in characters (escapes included, ellipsis included): enough for
/// any honest error message or a long path's start, small enough for one line of a log.
pub const MAX_PEER_TEXT_CHARS: usize = 512;

/// What ends a capped text.
const ELLIPSIS: char = '…';

/// Whether `c` must not reach a terminal, a log or a page as it is: C0 controls (including
/// newline, carriage return and ESC), DEL, C1 controls, the Unicode bidi controls (embeddings,
/// overrides, isolates and marks, which reorder what follows them) and the line and paragraph
/// separators (which some viewers treat as line breaks), and the zero-width no-break space
/// (a byte-order mark, invisible in the middle of a text).
fn must_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` as one safe line, capped at [`MAX_PEER_TEXT_CHARS`]: see [`printable`].
pub fn peer_text(s: &str) -> String {
    printable(s, MAX_PEER_TEXT_CHARS)
}

/// `s` as one safe line: every character of [`must_escape`] written as `\u{..}` (so the text
/// stays readable and reveals what the peer tried), cut to `max_chars` characters (escapes and
/// ellipsis included; an escape is never cut in half). The one rule for text shown to people,
/// used by the engine and, through the bindings, by the Python CLI, logs and page.
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut chars = 0usize;
    // Where the text would end if it has to be cut: the last escape boundary that leaves room
    // for the ellipsis.
    let mut cut_at = 0usize;
    for c in s.chars() {
        let before = out.len();
        if must_escape(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
        chars += out[before..].chars().count();
        if chars < max_chars {
            cut_at = out.len();
        } else if chars > max_chars {
            out.truncate(cut_at);
            if max_chars > 0 {
                out.push(ELLIPSIS);
            }
            return out;
        }
    }
    out
}

/// `e` with every text it carries made safe to show. Sources quote peer text through
/// [`peer_text`] already; this is the last pass where an error leaves the engine for people
/// (a path quoted verbatim by [`crate::fs::RelPath::parse`], a local path built from a peer's
/// name, a message that wraps a peer's words), so nothing is missed.
pub fn sanitize_error(e: Error) -> Error {
    match e {
        Error::Auth(m) => Error::Auth(peer_text(&m)),
        Error::Protocol(m) => Error::Protocol(peer_text(&m)),
        Error::ConnectionLost(m) => Error::ConnectionLost(peer_text(&m)),
        Error::Remote { code, message } => Error::Remote {
            code: peer_text(&code),
            message: peer_text(&message),
        },
        Error::BadPath { path, reason } => Error::BadPath {
            path: peer_text(&path),
            reason,
        },
        Error::Io { context, source } => Error::Io {
            context: peer_text(&context),
            source,
        },
        Error::DiskFull { path } => Error::DiskFull {
            path: peer_text(&path.to_string_lossy()).into(),
        },
        Error::Incomplete {
            failed,
            total,
            first,
        } => Error::Incomplete {
            failed,
            total,
            first: peer_text(&first),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No character of the result reaches a terminal as a control, and it fits the cap.
    fn assert_safe(out: &str, case: &str) {
        assert!(!out.chars().any(must_escape), "{case}: {out:?}");
        assert!(
            out.chars().count() <= MAX_PEER_TEXT_CHARS,
            "{case}: too long"
        );
    }

    #[test]
    fn hostile_text_is_escaped_and_capped() {
        let long = "x".repeat(10_000);
        let escapes = "\u{1b}".repeat(1_000);
        // (case, input, expected output or None when only safety and the cap are checked)
        let table: &[(&str, &str, Option<&str>)] = &[
            (
                "plain text is kept",
                "file not found",
                Some("file not found"),
            ),
            (
                "unicode is kept",
                "ünïcødé/日本語.txt",
                Some("ünïcødé/日本語.txt"),
            ),
            ("empty", "", Some("")),
            (
                "terminal title",
                "\u{1b}]0;pwned\u{7}",
                Some("\\u{1b}]0;pwned\\u{7}"),
            ),
            (
                "fake green line",
                "\u{1b}[32msynced\u{1b}[0m",
                Some("\\u{1b}[32msynced\\u{1b}[0m"),
            ),
            (
                "forged log line",
                "x\nINFO authenticated",
                Some("x\\u{a}INFO authenticated"),
            ),
            ("byte-order mark", "a\u{feff}b", Some("a\\u{feff}b")),
            ("carriage return", "a\rb", Some("a\\u{d}b")),
            ("DEL and C1", "a\u{7f}\u{9b}b", Some("a\\u{7f}\\u{9b}b")),
            (
                "bidi override",
                "evil\u{202e}txt.exe",
                Some("evil\\u{202e}txt.exe"),
            ),
            (
                "bidi isolate",
                "\u{2066}a\u{2069}",
                Some("\\u{2066}a\\u{2069}"),
            ),
            ("line separator", "a\u{2028}b", Some("a\\u{2028}b")),
            ("10 KB of text", &long, None),
            ("1,000 escapes", &escapes, None),
        ];
        for (case, input, expected) in table {
            let out = peer_text(input);
            assert_safe(&out, case);
            if let Some(expected) = expected {
                assert_eq!(&out, expected, "{case}");
            }
        }
    }

    #[test]
    fn long_text_ends_in_an_ellipsis_at_the_cap_and_escapes_are_never_cut() {
        let out = peer_text(&"x".repeat(10_000));
        assert_eq!(out.chars().count(), MAX_PEER_TEXT_CHARS);
        assert!(out.ends_with(ELLIPSIS));
        let exact = "y".repeat(MAX_PEER_TEXT_CHARS);
        assert_eq!(peer_text(&exact), exact, "a text that fits is not cut");
        let over = "y".repeat(MAX_PEER_TEXT_CHARS + 1);
        assert_eq!(peer_text(&over).chars().count(), MAX_PEER_TEXT_CHARS);
        let out = peer_text(&"\u{1b}".repeat(200));
        let body = out.trim_end_matches(ELLIPSIS);
        assert_eq!(body.len() % "\\u{1b}".len(), 0, "an escape was cut: {out}");
    }

    #[test]
    fn errors_carrying_peer_text_are_sanitised_and_keep_their_kind() {
        let evil = format!("\u{1b}]0;t\u{7}\nforged{}", "a".repeat(5_000));
        let io = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        // (case, error, the text sanitize_error must make safe)
        /// Picks the text out of a sanitised error.
        type Text = fn(&Error) -> String;
        let table: Vec<(&str, Error, Text)> = vec![
            (
                "bad path",
                Error::BadPath {
                    path: evil.clone(),
                    reason: "r",
                },
                |e| match e {
                    Error::BadPath { path, .. } => path.clone(),
                    _ => String::new(),
                },
            ),
            (
                "remote",
                Error::Remote {
                    code: "x".into(),
                    message: evil.clone(),
                },
                |e| match e {
                    Error::Remote { message, .. } => message.clone(),
                    _ => String::new(),
                },
            ),
            ("protocol", Error::Protocol(evil.clone()), |e| match e {
                Error::Protocol(m) => m.clone(),
                _ => String::new(),
            }),
            ("auth", Error::Auth(evil.clone()), |e| match e {
                Error::Auth(m) => m.clone(),
                _ => String::new(),
            }),
            ("lost", Error::ConnectionLost(evil.clone()), |e| match e {
                Error::ConnectionLost(m) => m.clone(),
                _ => String::new(),
            }),
            ("io", Error::io(evil.clone(), io()), |e| match e {
                Error::Io { context, .. } => context.clone(),
                _ => String::new(),
            }),
            (
                "disk full",
                Error::DiskFull {
                    path: evil.clone().into(),
                },
                |e| match e {
                    Error::DiskFull { path } => path.to_string_lossy().into_owned(),
                    _ => String::new(),
                },
            ),
            (
                "incomplete",
                Error::Incomplete {
                    failed: 1,
                    total: 2,
                    first: evil.clone(),
                },
                |e| match e {
                    Error::Incomplete { first, .. } => first.clone(),
                    _ => String::new(),
                },
            ),
        ];
        for (case, e, text) in table {
            let kind = e.kind();
            let clean = sanitize_error(e);
            assert_eq!(clean.kind(), kind, "{case}");
            let t = text(&clean);
            assert!(t.contains("forged"), "{case}: the text is gone: {t}");
            assert!(
                !clean.to_string().chars().any(must_escape),
                "{case}: {clean}"
            );
            assert!(
                t.chars().count() <= MAX_PEER_TEXT_CHARS,
                "{case}: not capped"
            );
        }
    }

    /// `printable` with other caps than the peer-text one: (cap, input, output).
    #[test]
    fn printable_keeps_to_any_cap() {
        let table: &[(usize, &str, &str)] = &[
            (0, "abc", ""),
            (1, "abc", "…"),
            (3, "abc", "abc"),
            (3, "abcd", "ab…"),
            (8, "\u{1b}\u{1b}", "\\u{1b}…"),
            (12, "\u{1b}\u{1b}", "\\u{1b}\\u{1b}"),
        ];
        for (cap, input, want) in table {
            assert_eq!(printable(input, *cap), *want, "cap {cap}, {input:?}");
            assert!(printable(input, *cap).chars().count() <= *cap);
        }
    }
}
