//! All disk access: validated relative paths, scanning with the hash cache, writes that stay
//! inside the folder (descriptor-relative folders, exclusive temp files, atomic renames), the
//! versions archive, ignore rules, cross-platform name rules and the OS watch of a folder.

mod beneath;
mod dir;
mod ignore;
mod names;
mod relpath;
mod scan;
mod versions;
mod walk;
mod watch;
mod write;

pub use beneath::Beneath;
pub use dir::{umask, Dir, EntryStat, Resolve};
pub use ignore::{IgnoreRules, IGNORE_FILE, MAX_IGNORE_FILE_BYTES};
pub use names::{
    clashes, fold_key, folds_to_itself, symlink_target_inside, to_wire, windows_problem, Clash,
    MAX_SYMLINK_TARGET_BYTES,
};
pub use relpath::RelPath;
pub(crate) use scan::check_folder;
pub use scan::{
    hash_file, hash_file_beneath, scan_folder, scan_versioned, PartFile, ScanContext, ScanResult,
    Skipped,
};
pub use versions::{
    format_utc_stamp, parse_utc_stamp, Version, Versions, DEFAULT_VERSIONS_KEEP_DAYS, VERSIONS_DIR,
    VERSIONS_DIR_MODE,
};
pub use watch::{counts_as_change, Watch, BARRIER_PREFIX};
pub use write::{
    is_part_name, local_mode, part_name, part_rel, FinishError, PartWriter, WriteRoot, Written,
    NEW_DIR_MODE, PART_MODE, PART_PREFIX,
};

/// Per-folder metadata directory: the index store lives here. Never synced.
pub const METADATA_DIR: &str = ".ssp";

/// Mode of the metadata directory: only its owner lists or reads the index.
pub const METADATA_DIR_MODE: u32 = 0o700;

/// Whether `name` is the metadata directory's name (ASCII case-insensitive, so a peer cannot
/// reach `.ssp/` as `.SSP/` on a case-insensitive file system).
pub fn is_metadata_name(name: &str) -> bool {
    name.eq_ignore_ascii_case(METADATA_DIR)
}

/// Returns the allocator's free memory to the system where it can (glibc's `malloc_trim`);
/// elsewhere does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
