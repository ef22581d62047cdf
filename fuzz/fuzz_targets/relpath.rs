//! `RelPath::parse` on arbitrary strings: whatever it accepts stays inside the folder when
//! joined to it, and names neither the metadata folder nor a temp file.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use ssp::fs::{RelPath, METADATA_DIR, PART_PREFIX};

fuzz_target!(|s: &str| {
    let Ok(rel) = RelPath::parse(s) else { return };
    assert_eq!(rel.as_str(), s);
    assert!(!s.contains('\0') && !s.contains('\\') && !s.starts_with('/'));
    let root = Path::new("/sync/root");
    let joined = rel.under(root);
    assert!(joined.starts_with(root), "{s:?} left the folder");
    let inside: Vec<_> = joined.strip_prefix(root).expect("under root").components().collect();
    assert_eq!(inside.len(), s.split('/').count(), "{s:?}");
    assert!(inside.iter().all(|c| matches!(c, Component::Normal(_))), "{s:?}");
    let first = s.split('/').next().unwrap_or("");
    assert!(!first.eq_ignore_ascii_case(METADATA_DIR), "{s:?} is the metadata folder");
    assert!(
        !s.split('/').any(|c| c.len() >= PART_PREFIX.len()
            && c.as_bytes()[..PART_PREFIX.len()].eq_ignore_ascii_case(PART_PREFIX.as_bytes())),
        "{s:?} is a temp-file name"
    );
});
