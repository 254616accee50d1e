//! [`VectorWriter`]: streams rows into `<target>.partial`, then writes the final header,
//! fsyncs and renames into place.

use std::path::{Path, PathBuf};

use super::{FileFormat, PartialFile, layout, npy};
use crate::data::{DType, DataError, Element, MatrixView};

/// Streams rows into a new vector file. Rows go to `<target>.partial`; [`VectorWriter::finish`]
/// writes the final header, fsyncs and renames into place. Dropping without `finish` removes
/// the partial file and leaves any existing target untouched.
#[derive(Debug)]
pub struct VectorWriter {
    target: PathBuf,
    out: PartialFile,
    format: FileFormat,
    dtype: DType,
    dim: usize,
    rows: u64,
    /// Next byte to write.
    offset: u64,
    /// Bytes reserved for the header (rewritten by `finish`).
    header_len: usize,
    /// Set when a write failed part-way: the partial file's content is then unknown.
    poisoned: bool,
}

impl VectorWriter {
    /// Creates a writer for `path` (format from the extension; `dtype` must agree with it,
    /// except `.npy`, which stores any of the three).
    pub fn create(path: &Path, dtype: DType, dim: usize) -> Result<Self, DataError> {
        let (format, fixed) = FileFormat::from_path(path)?;
        if let Some(expected) = fixed
            && expected != dtype
        {
            return Err(DataError::DTypeMismatch {
                path: path.to_path_buf(),
                expected,
                found: dtype,
            });
        }
        if dim == 0 {
            return Err(DataError::ZeroDim);
        }
        let dim_limit = match format {
            FileFormat::BigAnn => u64::from(u32::MAX),
            FileFormat::Vecs => i32::MAX as u64,
            FileFormat::Npy => u64::MAX,
        };
        if dim as u64 > dim_limit {
            return Err(DataError::TooLarge {
                path: path.to_path_buf(),
                what: "dimension",
                limit: dim_limit,
            });
        }
        let header = match format {
            FileFormat::BigAnn => vec![0u8; 8],
            FileFormat::Vecs => Vec::new(),
            // The largest possible row count reserves room for the final one.
            FileFormat::Npy => npy::encode_header(dtype, u64::MAX, dim, 0),
        };
        let out = PartialFile::create(path)?;
        out.write_at(&header, 0)?;
        Ok(Self {
            target: path.to_path_buf(),
            out,
            format,
            dtype,
            dim,
            rows: 0,
            offset: header.len() as u64,
            header_len: header.len(),
            poisoned: false,
        })
    }

    /// The file that [`VectorWriter::finish`] creates.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Dimension of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Element type written.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Appends rows; `rows.dim()` must equal the writer's dimension and `T` its element type.
    pub fn write_rows<T: Element>(&mut self, rows: MatrixView<'_, T>) -> Result<(), DataError> {
        if T::DTYPE != self.dtype {
            return Err(DataError::DTypeMismatch {
                path: self.target.clone(),
                expected: self.dtype,
                found: T::DTYPE,
            });
        }
        if rows.dim() != self.dim {
            return Err(DataError::DimMismatch {
                expected_what: format!("the writer of {}", self.target.display()),
                expected: self.dim,
                found_what: "the rows written".to_owned(),
                found: rows.dim(),
            });
        }
        self.check_usable()?;
        let new_rows = layout::add(&self.target, self.rows, rows.rows() as u64, "row count")?;
        if self.format == FileFormat::BigAnn && new_rows > u64::from(u32::MAX) {
            return Err(DataError::TooLarge {
                path: self.target.clone(),
                what: "row count",
                limit: u64::from(u32::MAX),
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        let with_prefixes;
        let bytes: &[u8] = match self.format {
            FileFormat::BigAnn | FileFormat::Npy => bytemuck::cast_slice(rows.as_slice()),
            FileFormat::Vecs => {
                let prefix = (self.dim as i32).to_le_bytes();
                let row_bytes = self.dim * size_of::<T>();
                let mut buf = Vec::with_capacity(rows.rows() * (4 + row_bytes));
                for row in rows.iter_rows() {
                    buf.extend_from_slice(&prefix);
                    buf.extend_from_slice(bytemuck::cast_slice(row));
                }
                with_prefixes = buf;
                &with_prefixes
            }
        };
        let end = layout::add(&self.target, self.offset, bytes.len() as u64, "file size")?;
        if let Err(e) = self.out.write_at(bytes, self.offset) {
            self.poisoned = true;
            return Err(e);
        }
        self.offset = end;
        self.rows = new_rows;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), DataError> {
        if self.poisoned {
            return Err(DataError::Param(format!(
                "an earlier write to {} failed; the file cannot be finished",
                self.out.partial().display()
            )));
        }
        Ok(())
    }

    /// Finalises the header, fsyncs, renames into place; returns the number of rows written.
    pub fn finish(self) -> Result<u64, DataError> {
        self.check_usable()?;
        match self.format {
            FileFormat::BigAnn => {
                let rows = u32::try_from(self.rows).expect("checked in write_rows");
                let dim = u32::try_from(self.dim).expect("checked in create");
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&rows.to_le_bytes());
                header[4..].copy_from_slice(&dim.to_le_bytes());
                self.out.write_at(&header, 0)?;
            }
            FileFormat::Npy => {
                let header = npy::encode_header(self.dtype, self.rows, self.dim, self.header_len);
                debug_assert_eq!(header.len(), self.header_len);
                self.out.write_at(&header, 0)?;
            }
            FileFormat::Vecs => {}
        }
        debug_assert_eq!(self.out.target(), self.target);
        self.out.commit()?;
        Ok(self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigann_row_count_beyond_u32_is_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fbin");
        let mut w = VectorWriter::create(&path, DType::F32, 2).unwrap();
        w.rows = u64::from(u32::MAX); // as if 2^32 - 1 rows had been written
        let one = [1.0f32, 2.0];
        let err = w.write_rows(MatrixView::new(&one, 2).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooLarge {
                    what: "row count",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(w.rows(), u64::from(u32::MAX));
        drop(w);
        assert!(!path.exists());
        assert!(!dir.path().join("x.fbin.partial").exists());
    }

    #[test]
    fn dims_beyond_the_header_field_are_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let big = u32::MAX as usize + 1;
        let err = VectorWriter::create(&dir.path().join("x.u8bin"), DType::U8, big).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooLarge {
                    what: "dimension",
                    ..
                }
            ),
            "{err}"
        );
        let err = VectorWriter::create(&dir.path().join("x.fvecs"), DType::F32, 1 << 31);
        assert!(matches!(err, Err(DataError::TooLarge { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
