//! `RelPath`: a path relative to a sync folder that is safe to join to it. Parse, don't validate:
//! every path from the wire or the disk becomes a `RelPath` or an error.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{is_metadata_name, is_part_name};
use crate::error::{Error, Result};

/// Longest accepted relative path in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component in bytes (common filesystem limit).
const MAX_COMPONENT_BYTES: usize = 255;

/// A `/`-separated relative path with no empty, `.` or `..` components, no NUL or backslash,
/// no drive prefix (on Windows), not inside the metadata folder and not a temp-file name (both
/// compared ASCII-case-insensitively, as case-insensitive file systems would).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Parses `s`, rejecting anything that could name a place outside the folder.
    pub fn parse(s: &str) -> Result<RelPath> {
        Self::check(s).map(|()| RelPath(s.to_owned()))
    }

    /// [`RelPath::parse`] of a string the caller no longer needs (no copy made).
    pub fn parse_owned(s: String) -> Result<RelPath> {
        Self::check(&s).map(|()| RelPath(s))
    }

    fn check(s: &str) -> Result<()> {
        let bad = |reason: &'static str| {
            Err(Error::BadPath {
                path: s.to_owned(),
                reason,
            })
        };
        if s.is_empty() {
            return bad("empty path");
        }
        if s.len() > MAX_PATH_BYTES {
            return bad("path too long");
        }
        if s.contains('\0') {
            return bad("contains NUL");
        }
        if s.contains('\\') {
            return bad("contains a backslash");
        }
        if s.starts_with('/') {
            return bad("absolute path");
        }
        // `C:` names a drive only on Windows; `a:b` is an ordinary name elsewhere.
        #[cfg(windows)]
        {
            let b = s.as_bytes();
            if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
                return bad("drive-letter path");
            }
        }
        for (i, comp) in s.split('/').enumerate() {
            match comp {
                "" => return bad("empty component"),
                "." | ".." => return bad("dot component"),
                _ if comp.len() > MAX_COMPONENT_BYTES => return bad("component too long"),
                _ if i == 0 && is_metadata_name(comp) => return bad("inside the metadata folder"),
                _ if is_part_name(comp) => return bad("temporary file name"),
                _ => {}
            }
        }
        Ok(())
    }

    /// The path as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This path under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(self.0.split('/'));
        p
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The components before the file name.
    pub fn parent_components(&self) -> impl Iterator<Item = &str> {
        let parent = self.0.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        parent.split('/').filter(|c| !c.is_empty())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_rejected() {
        // (input, why it must fail)
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("../escape", "parent"),
            ("a/../../etc/passwd", "parent inside"),
            ("../../etc/passwd", "the classic"),
            ("..", "bare parent"),
            (".", "bare current"),
            ("a/./b", "current inside"),
            ("/etc/passwd", "absolute"),
            ("//server/share", "UNC-ish"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL"),
            ("a//b", "empty component"),
            ("a/", "trailing slash"),
            (".ssp/index.redb", "metadata folder"),
            (".ssp", "metadata folder itself"),
            ("dir/.ssp-part-0123", "temp file"),
            (".SSP/index.redb", "metadata folder, upper case"),
            (".Ssp/x", "metadata folder, mixed case"),
            (".SSP", "metadata folder itself, upper case"),
            ("x/.SSP-PART-1", "temp file, upper case"),
            (".Ssp-Part-1", "temp file, mixed case, at the top"),
        ];
        for (path, why) in table {
            assert!(
                RelPath::parse(path).is_err(),
                "{why}: {path:?} was accepted"
            );
        }
        #[cfg(windows)]
        for path in ["C:/Windows/system32", "c:evil"] {
            assert!(RelPath::parse(path).is_err(), "drive letter: {path:?}");
        }
        assert!(RelPath::parse(&"a/".repeat(3000)).is_err(), "too long");
        assert!(
            RelPath::parse(&"x".repeat(300)).is_err(),
            "component too long"
        );
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        for path in [
            "a",
            "a/b/c.txt",
            "sub/.ssp",
            ".hidden",
            "ünïcødé/日本語.txt",
            "a..b",
            "...",
            "x/.sspx",
            "sub/.SSP",
            "x/.ssp-par",
        ] {
            assert_eq!(RelPath::parse(path).unwrap().as_str(), path);
        }
    }

    /// Drive letters mean something only on Windows: `a:b` is an ordinary name elsewhere.
    #[cfg(not(windows))]
    #[test]
    fn colons_are_ordinary_characters_outside_windows() {
        for path in ["a:b", "C:/Windows/system32", "c:evil", "x/y:z"] {
            assert_eq!(RelPath::parse(path).unwrap().as_str(), path);
        }
    }

    #[test]
    fn joins_and_splits() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.under(Path::new("/r")), PathBuf::from("/r/a/b/c"));
        assert_eq!(p.parent_components().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(RelPath::parse("c").unwrap().parent_components().count(), 0);
    }
}
