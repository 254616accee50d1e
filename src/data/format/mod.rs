//! Vector files: big-ann-benchmarks `.fbin/.u8bin/.i8bin`, TexMex `.fvecs/.bvecs`, and `.npy`
//! (versions 1–3, little-endian f32/u8/i8, C order). Id matrices (`.ibin`, `.ivecs`) are read
//! and written by [`crate::data::groundtruth`].
//!
//! [`VectorFile`] validates the header against the file length once at open and then serves row
//! ranges with positioned reads, so a file larger than RAM is processed chunk by chunk.
//! [`VectorWriter`] streams rows into a temporary file beside the target and renames it into
//! place only in [`VectorWriter::finish`], so an error never leaves a half-written file under
//! the target name (and never destroys an existing one).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{DType, DataError, Element, Matrix, MatrixView};

#[cfg(not(target_endian = "little"))]
compile_error!(
    "m3 reads and writes little-endian files by reinterpretation; big-endian targets are not supported"
);

/// The container format of a vector file, chosen from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// big-ann-benchmarks: `u32 rows, u32 dim`, then row-major elements.
    BigAnn,
    /// TexMex: each row is `i32 dim` followed by `dim` elements.
    Vecs,
    /// NumPy `.npy`, versions 1.0, 2.0, 3.0, 2-D, C order, little-endian.
    Npy,
}

impl FileFormat {
    /// Format and element type from the file name: `.fbin` (f32), `.u8bin`, `.i8bin`,
    /// `.fvecs` (f32), `.bvecs` (u8), `.npy` (element type from its header, so `None`).
    pub fn from_path(path: &Path) -> Result<(FileFormat, Option<DType>), DataError> {
        let _ = path;
        todo!("data helper")
    }
}

/// An open vector file whose header has been checked against its length.
#[derive(Debug)]
pub struct VectorFile {
    path: PathBuf,
    file: File,
    format: FileFormat,
    dtype: DType,
    rows: u64,
    dim: usize,
    /// Byte offset of row 0's first element.
    data_offset: u64,
    /// Bytes from one row's first element to the next row's.
    row_stride_bytes: u64,
}

impl VectorFile {
    /// Opens and validates a vector file. Errors: unknown extension, truncated file, header
    /// that disagrees with the file length, unsupported npy version/dtype/order, empty set.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let _ = path;
        todo!("data helper")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn format(&self) -> FileFormat {
        self.format
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn rows(&self) -> u64 {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Reads rows `start..start+count` in the file's own element type into `out` (cleared
    /// first). Fails when `T` is not the file's element type or the range is out of bounds.
    pub fn read_rows<T: Element>(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<T>,
    ) -> Result<(), DataError> {
        let _ = (
            start,
            count,
            out,
            &self.file,
            self.data_offset,
            self.row_stride_bytes,
        );
        todo!("data helper")
    }

    /// Reads rows `start..start+count` converted to f32 into `out` (cleared first). For f32
    /// files every component is checked to be finite (the error names the row and column).
    pub fn read_rows_f32(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), DataError> {
        let _ = (start, count, out);
        todo!("data helper")
    }

    /// The whole file as an f32 matrix (checked finite). Meant for query files; a base file
    /// should be streamed with [`VectorFile::chunks_f32`].
    pub fn read_all_f32(&self) -> Result<Matrix<f32>, DataError> {
        todo!("data helper")
    }

    /// Streams the file as f32 chunks of at most `rows_per_chunk` rows: `(first_row, chunk)`.
    pub fn chunks_f32(
        &self,
        rows_per_chunk: usize,
    ) -> impl Iterator<Item = Result<(u64, Matrix<f32>), DataError>> + '_ {
        let _ = rows_per_chunk;
        std::iter::empty()
    }
}

/// Streams rows into a new vector file. Rows go to `<target>.partial`; [`VectorWriter::finish`]
/// writes the final header, fsyncs and renames into place. Dropping without `finish` removes
/// the partial file and leaves any existing target untouched.
#[derive(Debug)]
pub struct VectorWriter {
    target: PathBuf,
    partial: PathBuf,
    format: FileFormat,
    dtype: DType,
    dim: usize,
    rows: u64,
}

impl VectorWriter {
    /// Creates a writer for `path` (format from the extension; `dtype` must agree with it,
    /// except `.npy`, which stores any of the three).
    pub fn create(path: &Path, dtype: DType, dim: usize) -> Result<Self, DataError> {
        let _ = (path, dtype, dim);
        todo!("data helper")
    }

    /// Appends rows; `rows.dim()` must equal the writer's dimension and `T` its element type.
    pub fn write_rows<T: Element>(&mut self, rows: MatrixView<'_, T>) -> Result<(), DataError> {
        let _ = (
            rows,
            &self.target,
            &self.partial,
            self.format,
            self.dtype,
            self.dim,
            self.rows,
        );
        todo!("data helper")
    }

    /// Finalises the header, fsyncs, renames into place; returns the number of rows written.
    pub fn finish(self) -> Result<u64, DataError> {
        todo!("data helper")
    }
}

/// Writes a whole matrix to `path` (format from the extension).
pub fn write_matrix<T: Element>(path: &Path, m: MatrixView<'_, T>) -> Result<(), DataError> {
    let mut w = VectorWriter::create(path, T::DTYPE, m.dim())?;
    w.write_rows(m)?;
    w.finish()?;
    Ok(())
}
