//! All disk access: validated relative paths, scanning with the hash cache, and writes that
//! stay inside the folder (descriptor-relative folders, exclusive temp files, atomic renames).

mod beneath;
mod dir;
mod relpath;
mod scan;
mod write;

pub use beneath::Beneath;
pub use dir::{umask, Dir, EntryStat, Resolve};
pub use relpath::RelPath;
pub(crate) use scan::check_folder;
pub(crate) use scan::link_inside;
pub use scan::{
    hash_file, hash_file_beneath, scan_folder, scan_versioned, PartFile, ScanContext, ScanResult,
    Skipped,
};
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
