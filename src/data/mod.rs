//! Vector data: element types, checked matrix views, file formats, ground truth.
//!
//! Everything that reads a file returns a [`DataError`] naming the file and, where it applies,
//! the row. Readers stream: [`VectorFile`] reads row ranges with positioned reads, so a base
//! file larger than RAM is processed chunk by chunk and never copied whole into memory.

mod element;
mod error;
mod matrix;

pub mod format;
pub mod groundtruth;
mod ids;
mod range_results;
pub(crate) mod validate;

pub use element::{DType, Element};
pub use error::DataError;
pub use format::{FileFormat, VectorFile, VectorWriter};
pub use groundtruth::GroundTruth;
pub use ids::{USER_ID_EXTENSIONS, read_user_ids, write_user_ids};
pub use matrix::{Matrix, MatrixView};
pub use range_results::RangeResults;

use std::path::PathBuf;

/// The directory of the real data sets shared by these machines (`glove-50d/`, `ngt-sift5k/`,
/// `shopsphere-xmodal/`, each in the big-ann layout), for tests and benchmarks.
///
/// Looks at `$M3_SHARED_DATA` first, then at `shared/data` beside the repository
/// (`$CARGO_MANIFEST_DIR/../shared/data`, as the sets are laid out in CI). `None` when neither
/// is a directory: callers should then skip (with a message), not fail.
pub fn shared_data_dir() -> Option<PathBuf> {
    let from_env = std::env::var_os("M3_SHARED_DATA").map(PathBuf::from);
    let beside = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"));
    from_env.into_iter().chain([beside]).find(|p| p.is_dir())
}
