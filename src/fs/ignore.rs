//! Which paths a folder does not sync: `.sspignore` in the folder root (gitignore syntax,
//! matched by the `ignore` crate) and the built-in ignores (`.ssp/`, temp files, the
//! `.sspignore` file itself).

use std::io::Read;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::dir::Dir;
use super::{is_metadata_name, is_part_name};
use crate::error::{Error, Result};

/// The ignore file's name, in the folder root. A local setting: never synced, like
/// Syncthing's `.stignore` (two devices may want different things).
pub const IGNORE_FILE: &str = ".sspignore";

/// Largest `.sspignore` read, in bytes: a pattern file is small; a huge one is a mistake.
pub const MAX_IGNORE_FILE_BYTES: u64 = 1024 * 1024;

/// The ignore rules of one folder. Cheap to query; build once per scan.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    /// The `.sspignore` patterns; `None` without a file (only the built-ins apply).
    patterns: Option<Gitignore>,
    /// BLAKE3 of the file's text (zero without one): tells when the rules changed.
    fingerprint: [u8; 32],
}

impl IgnoreRules {
    /// No patterns: only the built-in ignores.
    pub fn none() -> IgnoreRules {
        IgnoreRules {
            patterns: None,
            fingerprint: [0; 32],
        }
    }

    /// Reads `<root>/.sspignore` through the root's descriptor (never through a symlink, at
    /// most [`MAX_IGNORE_FILE_BYTES`]); no file means [`IgnoreRules::none`]. A symlink or
    /// anything but a regular file there, an oversized file, text that is not UTF-8 or a bad
    /// pattern is an error naming the file (and the line).
    pub fn load(root: &Path) -> Result<IgnoreRules> {
        let label = || root.join(IGNORE_FILE).display().to_string();
        let dir = Dir::open_root(root).map_err(|e| Error::io(root.display().to_string(), e))?;
        let file = match dir.open_file(IGNORE_FILE, false) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(IgnoreRules::none()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::Config(format!(
                    "{} is a symlink; make it a regular file",
                    label()
                )))
            }
            Err(e) => return Err(Error::io(label(), e)),
        };
        let md = file.metadata().map_err(|e| Error::io(label(), e))?;
        if !md.is_file() {
            return Err(Error::Config(format!("{} is not a regular file", label())));
        }
        let mut bytes = Vec::new();
        file.take(MAX_IGNORE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(label(), e))?;
        if bytes.len() as u64 > MAX_IGNORE_FILE_BYTES {
            return Err(Error::Config(format!(
                "{} is larger than {} bytes",
                label(),
                MAX_IGNORE_FILE_BYTES
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Config(format!("{} is not UTF-8 text", label())))?;
        Self::from_text(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", label())),
            other => other,
        })
    }

    /// Rules from the text of an ignore file. A bad pattern is a one-line
    /// [`Error::Config`] naming its line (`line 3: ...`).
    pub fn from_text(text: &str) -> Result<IgnoreRules> {
        // Root "." tells the matcher our paths are already relative (it strips nothing).
        let mut builder = GitignoreBuilder::new(".");
        // An unclosed `[` is an error rather than a literal: a typo should be seen.
        builder.allow_unclosed_class(false);
        for (i, line) in text.lines().enumerate() {
            builder
                .add_line(None, line)
                .map_err(|e| bad_pattern(i + 1, line, &e))?;
        }
        let patterns = builder
            .build()
            .map_err(|e| Error::Config(format!("bad ignore patterns: {}", one_line(&e))))?;
        Ok(IgnoreRules {
            patterns: (!patterns.is_empty()).then_some(patterns),
            fingerprint: *blake3::hash(text.as_bytes()).as_bytes(),
        })
    }

    /// The first 8 bytes of the rules' fingerprint (0 without an ignore file): differs when
    /// the ignore file's text does.
    pub fn fingerprint(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.fingerprint[..8]);
        u64::from_be_bytes(b)
    }

    /// Whether the `/`-separated relative path `rel` (a folder if `is_dir`) is ignored: by a
    /// built-in rule, by a pattern, or because a folder above it is. As in git, a `!pattern`
    /// cannot bring back a path whose folder is ignored (the scan never enters that folder,
    /// so the rule must say the same for paths a peer announces).
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        if is_builtin_ignored(rel) {
            return true;
        }
        let Some(patterns) = &self.patterns else {
            return false;
        };
        // Folders above `rel`, outermost first: the first ignored one decides.
        for (i, _) in rel.match_indices('/') {
            if patterns.matched(&rel[..i], true).is_ignore() {
                return true;
            }
        }
        patterns.matched(rel, is_dir).is_ignore()
    }
}

/// The built-in ignores: `.ssp` at the root (any case, and all below it), temp files at any
/// depth, and the root's `.sspignore`.
fn is_builtin_ignored(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or(rel);
    is_metadata_name(first)
        || rel.eq_ignore_ascii_case(IGNORE_FILE)
        || rel.split('/').any(is_part_name)
}

fn one_line(e: &ignore::Error) -> String {
    e.to_string().replace('\n', " ")
}

fn bad_pattern(line_no: usize, line: &str, e: &ignore::Error) -> Error {
    Error::Config(format!(
        "bad ignore pattern on line {line_no} ({line:?}): {}",
        one_line(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// (patterns, path, is_dir, ignored?) — one row per rule of gitignore syntax we rely on.
    const TABLE: &[(&str, &str, bool, bool)] = &[
        // No patterns: nothing but the built-ins.
        ("", "a.txt", false, false),
        // Globs match a name at any depth.
        ("*.log", "x.log", false, true),
        ("*.log", "deep/down/x.log", false, true),
        ("*.log", "x.log.txt", false, false),
        ("?.tmp", "a.tmp", false, true),
        ("?.tmp", "ab.tmp", false, false),
        ("[ab].c", "b.c", false, true),
        ("[ab].c", "c.c", false, false),
        // `**` across folders.
        ("**/cache", "a/b/cache", true, true),
        ("**/cache", "cache", true, true),
        ("docs/**/*.pdf", "docs/x/y/z.pdf", false, true),
        ("docs/**/*.pdf", "other/z.pdf", false, false),
        ("a/**", "a/b/c", false, true),
        // Anchored patterns (a leading or middle slash) match from the root only.
        ("/top.txt", "top.txt", false, true),
        ("/top.txt", "sub/top.txt", false, false),
        ("sub/x", "sub/x", false, true),
        ("sub/x", "deep/sub/x", false, false),
        // Dir-only patterns match folders, and so everything below them, not files.
        ("build/", "build", true, true),
        ("build/", "build", false, false),
        ("build/", "build/out/a.o", false, true),
        ("build/", "src/build/a.o", false, true),
        // Negation: the last matching pattern wins...
        ("*.log\n!keep.log", "keep.log", false, false),
        ("*.log\n!keep.log", "other.log", false, true),
        ("!keep.log\n*.log", "keep.log", false, true),
        ("/*\n!/src", "src/main.rs", false, false),
        ("/*\n!/src", "README", false, true),
        ("docs/*\n!docs/keep.md", "docs/keep.md", false, false),
        // ...but cannot bring back a path whose folder is ignored (as in git).
        ("build/\n!build/keep.txt", "build/keep.txt", false, true),
        // Comments and blank lines are nothing; `\#` is a literal hash.
        ("# *.txt\n\n   \n", "a.txt", false, false),
        ("\\#hash", "#hash", false, true),
        // Trailing spaces are ignored; CRLF line ends too.
        ("*.bak   \r\n*.old\r\n", "x.bak", false, true),
        ("*.bak   \r\n*.old\r\n", "x.old", false, true),
        // Matching is case-sensitive, like git on Linux.
        ("*.LOG", "x.log", false, false),
        // Built-ins hold whatever the patterns say.
        ("!.ssp", ".ssp", true, true),
        ("", ".ssp/index.redb", false, true),
        ("", ".SSP/versions/a", false, true),
        ("", "sub/.ssp", true, false),
        ("", ".sspignore", false, true),
        ("!.sspignore", ".sspignore", false, true),
        ("", "sub/.sspignore", false, false),
        ("", ".ssp-part-abc-def", false, true),
        ("", "a/b/.SSP-PART-x", false, true),
    ];

    #[test]
    fn ignore_rules_table() {
        for &(patterns, path, is_dir, want) in TABLE {
            let rules = IgnoreRules::from_text(patterns).unwrap();
            assert_eq!(
                rules.is_ignored(path, is_dir),
                want,
                "patterns {patterns:?}, path {path:?} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn bad_patterns_are_one_line_errors_naming_the_line() {
        for (text, line) in [
            ("ok\n[unclosed", 2),
            ("a\nb\n{x", 3),
            ("z[z-a]", 1),
            ("# fine\n\nend\\", 3),
        ] {
            let e = IgnoreRules::from_text(text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("line {line} ")), "{text:?}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
            assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        }
    }

    #[test]
    fn load_reads_the_root_file_and_never_follows_a_symlink() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();

        // No file: only the built-ins.
        let rules = IgnoreRules::load(&root).unwrap();
        assert!(!rules.is_ignored("x.log", false));
        assert!(rules.is_ignored(".ssp", true));

        std::fs::write(root.join(IGNORE_FILE), "# logs\n*.log\n").unwrap();
        assert!(IgnoreRules::load(&root).unwrap().is_ignored("x.log", false));

        std::fs::write(root.join(IGNORE_FILE), "fine\n[bad\n").unwrap();
        let msg = IgnoreRules::load(&root).unwrap_err().to_string();
        assert!(
            msg.contains(".sspignore") && msg.contains("line 2"),
            "{msg}"
        );

        std::fs::remove_file(root.join(IGNORE_FILE)).unwrap();
        std::fs::write(base.path().join("outside"), "*.log\n").unwrap();
        symlink(base.path().join("outside"), root.join(IGNORE_FILE)).unwrap();
        let msg = IgnoreRules::load(&root).unwrap_err().to_string();
        assert!(msg.contains("symlink"), "{msg}");

        std::fs::remove_file(root.join(IGNORE_FILE)).unwrap();
        std::fs::create_dir(root.join(IGNORE_FILE)).unwrap();
        assert!(IgnoreRules::load(&root).is_err(), "a folder is refused");
        std::fs::remove_dir(root.join(IGNORE_FILE)).unwrap();

        let big = "x\n".repeat(MAX_IGNORE_FILE_BYTES as usize / 2 + 1);
        std::fs::write(root.join(IGNORE_FILE), big).unwrap();
        let msg = IgnoreRules::load(&root).unwrap_err().to_string();
        assert!(msg.contains("larger"), "{msg}");

        std::fs::write(root.join(IGNORE_FILE), b"\xff\xfe").unwrap();
        let msg = IgnoreRules::load(&root).unwrap_err().to_string();
        assert!(msg.contains("UTF-8"), "{msg}");
    }
}
