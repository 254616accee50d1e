//! Vector files: big-ann-benchmarks `.fbin/.u8bin/.i8bin`, TexMex `.fvecs/.bvecs`, and `.npy`
//! (versions 1–3, little-endian f32/u8/i8, C order). Id matrices (`.ibin`, `.ivecs`) are read
//! and written by [`crate::data::groundtruth`].
//!
//! [`VectorFile`] validates the header against the file length once at open and then serves row
//! ranges with positioned reads, so a file larger than RAM is processed chunk by chunk.
//! [`VectorWriter`] streams rows into a temporary file beside the target and renames it into
//! place only in [`VectorWriter::finish`], so an error never leaves a half-written file under
//! the target name (and never destroys an existing one).

pub(crate) mod atomic;
pub(crate) mod layout;
pub(crate) mod npy;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub(crate) use atomic::PartialFile;
pub use writer::VectorWriter;

use super::{DType, DataError, Element, Matrix, MatrixView, validate};

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
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let unsupported = |what: String| DataError::UnsupportedFormat {
            path: path.to_path_buf(),
            what,
        };
        match ext.as_deref() {
            Some("fbin") => Ok((FileFormat::BigAnn, Some(DType::F32))),
            Some("u8bin") => Ok((FileFormat::BigAnn, Some(DType::U8))),
            Some("i8bin") => Ok((FileFormat::BigAnn, Some(DType::I8))),
            Some("fvecs") => Ok((FileFormat::Vecs, Some(DType::F32))),
            Some("bvecs") => Ok((FileFormat::Vecs, Some(DType::U8))),
            Some("npy") => Ok((FileFormat::Npy, None)),
            Some(e @ ("ibin" | "ivecs")) => Err(unsupported(format!(
                "`.{e}` holds ids, not vectors; read it with GroundTruth::read"
            ))),
            Some(e) => Err(unsupported(format!(
                "unknown extension `.{e}` (expected .fbin, .u8bin, .i8bin, .fvecs, .bvecs or .npy)"
            ))),
            None => Err(unsupported(
                "no file extension (expected .fbin, .u8bin, .i8bin, .fvecs, .bvecs or .npy)"
                    .to_owned(),
            )),
        }
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
        let (format, fixed) = FileFormat::from_path(path)?;
        let (file, len) = layout::open(path)?;
        let (dtype, l) = match (format, fixed) {
            (FileFormat::BigAnn, Some(dt)) => {
                (dt, layout::bigann(path, &file, len, dt.size_bytes())?)
            }
            (FileFormat::Vecs, Some(dt)) => (dt, layout::vecs(path, &file, len, dt.size_bytes())?),
            (FileFormat::Npy, _) => npy::read_header(path, &file, len)?,
            (_, None) => unreachable!("big-ann and TexMex extensions fix the element type"),
        };
        if l.rows == 0 {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            format,
            dtype,
            rows: l.rows,
            dim: l.dim,
            data_offset: l.data_offset,
            row_stride_bytes: l.row_stride_bytes,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The file's format.
    pub fn format(&self) -> FileFormat {
        self.format
    }
    /// The element type of its rows.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of rows (vectors).
    pub fn rows(&self) -> u64 {
        self.rows
    }
    /// Dimension (elements per row).
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
        if T::DTYPE != self.dtype {
            return Err(DataError::DTypeMismatch {
                path: self.path.clone(),
                expected: self.dtype,
                found: T::DTYPE,
            });
        }
        self.check_range(start, count)?;
        out.clear();
        if count == 0 {
            return Ok(());
        }
        let len = count.checked_mul(self.dim).ok_or(DataError::Overflow {
            what: "row range size",
        })?;
        out.resize(len, T::default());
        let first = layout::mul(&self.path, start, self.row_stride_bytes, "row offset")?;
        let offset = layout::add(&self.path, self.data_offset, first, "row offset")?;
        match self.format {
            FileFormat::BigAnn | FileFormat::Npy => {
                layout::read_pod_at(&self.path, &self.file, out, offset)?;
            }
            FileFormat::Vecs => self.read_vecs(start, offset - 4, bytemuck::cast_slice_mut(out))?,
        }
        if T::DTYPE == DType::F32 {
            let values: &[f32] = bytemuck::cast_slice(out.as_slice());
            validate::check_finite(&self.path, start, MatrixView::new(values, self.dim)?)?;
        }
        Ok(())
    }

    fn check_range(&self, start: u64, count: usize) -> Result<(), DataError> {
        match start.checked_add(count as u64) {
            Some(end) if end <= self.rows => Ok(()),
            end => Err(DataError::RowRange {
                path: self.path.clone(),
                start,
                end: end.unwrap_or(u64::MAX),
                rows: self.rows,
            }),
        }
    }

    /// Reads TexMex rows from `start` (whose prefix is at byte `offset`) with one read, checks
    /// every row's prefix and copies the elements, without prefixes, into `out` (as bytes).
    fn read_vecs(&self, start: u64, offset: u64, out: &mut [u8]) -> Result<(), DataError> {
        let stride = layout::to_usize(&self.path, self.row_stride_bytes, "row size")?;
        let row_bytes = stride - 4;
        let count = out.len() / row_bytes;
        let mut buf = vec![0u8; count * stride];
        layout::read_pod_at(&self.path, &self.file, &mut buf, offset)?;
        for (r, (src, dst)) in buf
            .chunks_exact(stride)
            .zip(out.chunks_exact_mut(row_bytes))
            .enumerate()
        {
            let prefix = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            if usize::try_from(prefix) != Ok(self.dim) {
                return Err(layout::bad_prefix(
                    &self.path,
                    start + r as u64,
                    prefix,
                    self.dim,
                ));
            }
            dst.copy_from_slice(&src[4..]);
        }
        Ok(())
    }

    /// Reads rows `start..start+count` converted to f32 into `out` (cleared first). For f32
    /// files every component is checked to be finite (the error names the row and column).
    pub fn read_rows_f32(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), DataError> {
        fn convert<T: Element>(
            file: &VectorFile,
            start: u64,
            count: usize,
            out: &mut Vec<f32>,
        ) -> Result<(), DataError> {
            let mut raw = Vec::<T>::new();
            file.read_rows(start, count, &mut raw)?;
            out.clear();
            out.extend(raw.into_iter().map(Element::to_f32));
            Ok(())
        }
        match self.dtype {
            DType::F32 => self.read_rows::<f32>(start, count, out),
            DType::U8 => convert::<u8>(self, start, count, out),
            DType::I8 => convert::<i8>(self, start, count, out),
        }
    }

    /// The whole file as an f32 matrix (checked finite). Meant for query files; a base file
    /// should be streamed with [`VectorFile::chunks_f32`].
    pub fn read_all_f32(&self) -> Result<Matrix<f32>, DataError> {
        let count = layout::to_usize(&self.path, self.rows, "row count")?;
        let mut out = Vec::new();
        self.read_rows_f32(0, count, &mut out)?;
        Matrix::from_vec(out, self.dim)
    }

    /// Streams the file as f32 chunks of at most `rows_per_chunk` rows: `(first_row, chunk)`.
    pub fn chunks_f32(
        &self,
        rows_per_chunk: usize,
    ) -> impl Iterator<Item = Result<(u64, Matrix<f32>), DataError>> + '_ {
        let mut next = 0u64;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || next >= self.rows {
                return None;
            }
            if rows_per_chunk == 0 {
                failed = true;
                return Some(Err(DataError::Param(
                    "chunks_f32 needs at least 1 row per chunk".to_owned(),
                )));
            }
            let first = next;
            let count = (self.rows - first).min(rows_per_chunk as u64) as usize;
            next += count as u64;
            let mut buf = Vec::new();
            let chunk = self
                .read_rows_f32(first, count, &mut buf)
                .and_then(|()| Matrix::from_vec(buf, self.dim));
            failed = chunk.is_err();
            Some(chunk.map(|m| (first, m)))
        })
    }
}

/// Writes a whole matrix to `path` (format from the extension).
pub fn write_matrix<T: Element>(path: &Path, m: MatrixView<'_, T>) -> Result<(), DataError> {
    let mut w = VectorWriter::create(path, T::DTYPE, m.dim())?;
    w.write_rows(m)?;
    w.finish()?;
    Ok(())
}
