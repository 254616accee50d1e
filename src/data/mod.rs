//! Vector data: element types, checked matrix views, file formats, ground truth, generators.
//!
//! Everything that reads a file returns a [`DataError`] naming the file and, where it applies,
//! the row. Readers stream: [`VectorFile`] reads row ranges with positioned reads, so a base
//! file larger than RAM is processed chunk by chunk and never copied whole into memory.

mod element;
mod error;
mod matrix;

pub mod format;
pub mod groundtruth;
pub mod synth;
pub mod validate;

pub use element::{DType, Element};
pub use error::DataError;
pub use format::{FileFormat, VectorFile, VectorWriter};
pub use groundtruth::GroundTruth;
pub use matrix::{Matrix, MatrixView};
