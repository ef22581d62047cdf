//! All disk access: validated relative paths, scanning with the hash cache, safe directory
//! creation and the temp-file naming that keeps partial files away from final paths.

mod beneath;
mod relpath;
mod scan;
mod write;

pub use beneath::Beneath;
pub use relpath::RelPath;
pub(crate) use scan::check_folder;
pub use scan::{hash_file, scan_folder, ScanResult};
pub use write::{
    apply_metadata, ensure_parent_dirs, part_path, FinishError, PartWriter, Written, PART_PREFIX,
};

/// Per-folder metadata directory: the index store lives here. Never synced.
pub const METADATA_DIR: &str = ".ssp";
