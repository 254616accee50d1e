//! Ground-truth and id files: big-ann `.ibin` (`u32 rows, u32 k`, then `rows·k` `u32` ids,
//! optionally followed by `rows·k` `f32` distances, as big-ann ground truth files are; the
//! layout is told apart by the file length), a separate distance file (`.fbin` with the same
//! shape, as `../shared/data` ships them), and TexMex `.ivecs`.

use std::path::Path;

use super::format::{PartialFile, layout};
use super::{DType, DataError, Matrix, MatrixView, VectorFile, validate};

/// Id file layouts, from the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdFormat {
    Ibin,
    Ivecs,
}

fn id_format(path: &Path) -> Result<IdFormat, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("ibin") => Ok(IdFormat::Ibin),
        Some("ivecs") => Ok(IdFormat::Ivecs),
        _ => Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
            what: "id files (ground truth, search results) must end in .ibin or .ivecs".to_owned(),
        }),
    }
}

/// Checks before any work that an output file can be written at `path`: its directory exists
/// (and is a directory). Commands that compute for minutes call it first, so that a typo in
/// `--out` fails at once rather than after the work.
pub fn check_output_dir(path: &Path) -> Result<(), DataError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ),
        }),
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                source.kind(),
                format!("its directory {}: {source}", dir.display()),
            ),
        }),
    }
}

/// Ids of the k best base rows per query, best first, with their distances when known.
/// Distances are in the metric's natural unit: squared L2 for `l2`, inner product (larger is
/// better) for `ip`, cosine similarity for `cosine`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Ids, one row of k per query, best first.
    pub ids: Matrix<u32>,
    /// Their distances, when known (same shape as `ids`).
    pub dists: Option<Matrix<f32>>,
}

impl GroundTruth {
    /// Number of queries (rows).
    pub fn queries(&self) -> usize {
        self.ids.rows()
    }
    /// Neighbours per query (columns).
    pub fn k(&self) -> usize {
        self.ids.dim()
    }

    /// Checks before any work that an id file can be written at `path`: a known extension
    /// (`.ibin`, `.ivecs`) and an existing directory (see [`check_output_dir`]).
    pub fn check_output_path(path: &Path) -> Result<(), DataError> {
        id_format(path)?;
        check_output_dir(path)
    }

    /// Reads `.ibin` (with or without appended distances) or `.ivecs`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        match id_format(path)? {
            IdFormat::Ibin => read_ibin(path),
            IdFormat::Ivecs => read_ivecs(path),
        }
    }

    /// Reads ids from `ids_path` and distances from a separate `.fbin` of the same shape.
    pub fn read_with_dists(ids_path: &Path, dists_path: &Path) -> Result<Self, DataError> {
        let mut gt = Self::read(ids_path)?;
        let file = VectorFile::open(dists_path)?;
        if file.dtype() != DType::F32 {
            return Err(DataError::DTypeMismatch {
                path: dists_path.to_path_buf(),
                expected: DType::F32,
                found: file.dtype(),
            });
        }
        if file.dim() != gt.k() {
            return Err(DataError::DimMismatch {
                expected_what: format!("the ids of {}", ids_path.display()),
                expected: gt.k(),
                found_what: format!("the distances of {}", dists_path.display()),
                found: file.dim(),
            });
        }
        if file.rows() != gt.queries() as u64 {
            return Err(DataError::Header {
                path: dists_path.to_path_buf(),
                what: format!(
                    "{} rows of distances, but {} has {} rows of ids",
                    file.rows(),
                    ids_path.display(),
                    gt.queries()
                ),
            });
        }
        gt.dists = Some(file.read_all_f32()?);
        Ok(gt)
    }

    /// Writes the big-ann layout: header, ids, then distances if present (`.ibin`), or
    /// `.ivecs` (ids only). Atomic like [`crate::data::VectorWriter`].
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let format = id_format(path)?;
        if let Some(d) = &self.dists
            && (d.rows(), d.dim()) != (self.queries(), self.k())
        {
            return Err(DataError::Param(format!(
                "ground truth for {}: ids are {}×{} but distances are {}×{}",
                path.display(),
                self.queries(),
                self.k(),
                d.rows(),
                d.dim()
            )));
        }
        let too_large = |what, limit| DataError::TooLarge {
            path: path.to_path_buf(),
            what,
            limit,
        };
        match format {
            IdFormat::Ibin => {
                let limit = u64::from(u32::MAX);
                let rows =
                    u32::try_from(self.queries()).map_err(|_| too_large("query count", limit))?;
                let k = u32::try_from(self.k()).map_err(|_| too_large("k", limit))?;
                let out = PartialFile::create(path)?;
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&rows.to_le_bytes());
                header[4..].copy_from_slice(&k.to_le_bytes());
                out.write_at(&header, 0)?;
                let ids: &[u8] = bytemuck::cast_slice(self.ids.as_slice());
                out.write_at(ids, 8)?;
                if let Some(d) = &self.dists {
                    out.write_at(bytemuck::cast_slice(d.as_slice()), 8 + ids.len() as u64)?;
                }
                out.commit()
            }
            IdFormat::Ivecs => {
                let limit = i32::MAX as u64;
                let k = i32::try_from(self.k()).map_err(|_| too_large("k", limit))?;
                let mut buf = Vec::with_capacity(self.ids.as_slice().len() + self.queries());
                for row in self.ids.view().iter_rows() {
                    buf.push(k as u32);
                    if row.iter().any(|&id| id > i32::MAX as u32) {
                        return Err(too_large("id", limit));
                    }
                    buf.extend_from_slice(row);
                }
                let out = PartialFile::create(path)?;
                out.write_at(bytemuck::cast_slice(&buf), 0)?;
                out.commit()
            }
        }
    }
}

fn read_ibin(path: &Path) -> Result<GroundTruth, DataError> {
    let (file, len) = layout::open(path)?;
    let (rows, k) = layout::read_u32_header(path, &file, len)?;
    if k == 0 {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!("the header gives k = 0 (and {rows} rows)"),
        });
    }
    let n = u64::from(rows) * u64::from(k);
    let part = layout::mul(path, n, 4, "the header's id bytes")?;
    let ids_end = layout::add(path, 8, part, "file size")?;
    let both_end = layout::add(path, ids_end, part, "file size")?;
    let with_dists = if len == ids_end {
        false
    } else if len == both_end {
        true
    } else if len < ids_end {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: ids_end,
            found_bytes: len,
        });
    } else if len > both_end {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            extra_bytes: len - both_end,
            what: format!("the {both_end} bytes of the header's {rows}×{k} ids and distances"),
        });
    } else {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!(
                "{rows}×{k} ids need {ids_end} bytes, or {both_end} with distances, \
                 but the file has {len}"
            ),
        });
    };
    if rows == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let n = layout::to_usize(path, n, "id count")?;
    let k = k as usize;
    let mut ids = vec![0u32; n];
    layout::read_pod_at(path, &file, &mut ids, 8)?;
    let dists = if with_dists {
        let mut d = vec![0f32; n];
        layout::read_pod_at(path, &file, &mut d, ids_end)?;
        validate::check_finite(path, 0, MatrixView::new(&d, k)?)?;
        Some(Matrix::from_vec(d, k)?)
    } else {
        None
    };
    Ok(GroundTruth {
        ids: Matrix::from_vec(ids, k)?,
        dists,
    })
}

fn read_ivecs(path: &Path) -> Result<GroundTruth, DataError> {
    let (file, len) = layout::open(path)?;
    let l = layout::vecs(path, &file, len, 4)?;
    let k = l.dim;
    let stride = k + 1;
    let total = layout::mul(path, l.rows, stride as u64, "id count")?;
    let mut buf = vec![0u32; layout::to_usize(path, total, "id count")?];
    layout::read_pod_at(path, &file, &mut buf, 0)?;
    // Compacts the rows in place, dropping the prefixes.
    for r in 0..buf.len() / stride {
        let row = &buf[r * stride..(r + 1) * stride];
        let prefix = row[0] as i32;
        if usize::try_from(prefix) != Ok(k) {
            return Err(layout::bad_prefix(path, r as u64, prefix, k));
        }
        if let Some((col, &id)) = row[1..]
            .iter()
            .enumerate()
            .find(|(_, id)| (**id as i32) < 0)
        {
            return Err(DataError::BadRow {
                path: path.to_path_buf(),
                row: r as u64,
                what: format!("id {} in column {col} is negative", id as i32),
            });
        }
        buf.copy_within(r * stride + 1..(r + 1) * stride, r * k);
    }
    buf.truncate(buf.len() / stride * k);
    Ok(GroundTruth {
        ids: Matrix::from_vec(buf, k)?,
        dists: None,
    })
}
