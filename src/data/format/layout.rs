//! Positioned-read helpers and the header checks shared by vector and id readers: the
//! big-ann `u32 rows, u32 dim` header and the TexMex per-row `i32 dim` prefix, both checked
//! against the file length with overflow-checked `u64` arithmetic.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::data::DataError;

/// Where the rows of an opened file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub rows: u64,
    pub dim: usize,
    /// Byte offset of row 0's first element.
    pub data_offset: u64,
    /// Bytes from one row's first element to the next row's.
    pub row_stride_bytes: u64,
}

/// `a * b`, or [`DataError::SizeOverflow`] naming the file, `what` and the operands.
pub(crate) fn mul(path: &Path, a: u64, b: u64, what: &'static str) -> Result<u64, DataError> {
    a.checked_mul(b).ok_or_else(|| DataError::SizeOverflow {
        path: path.to_path_buf(),
        what: format!("{what} = {a} × {b} does not fit in 64 bits"),
    })
}

/// `a + b`, or [`DataError::SizeOverflow`] naming the file, `what` and the operands.
pub(crate) fn add(path: &Path, a: u64, b: u64, what: &'static str) -> Result<u64, DataError> {
    a.checked_add(b).ok_or_else(|| DataError::SizeOverflow {
        path: path.to_path_buf(),
        what: format!("{what} = {a} + {b} does not fit in 64 bits"),
    })
}

/// A `u64` count as `usize`, or [`DataError::SizeOverflow`] naming the file and `what`.
pub(crate) fn to_usize(path: &Path, v: u64, what: &'static str) -> Result<usize, DataError> {
    usize::try_from(v).map_err(|_| DataError::SizeOverflow {
        path: path.to_path_buf(),
        what: format!("{what} {v} exceeds this machine's address size"),
    })
}

pub(crate) fn file_len(path: &Path, file: &File) -> Result<u64, DataError> {
    Ok(file.metadata().map_err(|e| DataError::io(path, e))?.len())
}

pub(crate) fn open(path: &Path) -> Result<(File, u64), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file_len(path, &file)?;
    Ok((file, len))
}

/// Fills `out` from `offset` with one positioned read. `out` is a slice of `T`, so it is
/// aligned for `T`; it is only viewed as bytes here.
pub(crate) fn read_pod_at<T: bytemuck::Pod>(
    path: &Path,
    file: &File,
    out: &mut [T],
    offset: u64,
) -> Result<(), DataError> {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
    file.read_exact_at(bytes, offset)
        .map_err(|e| DataError::io(path, e))
}

fn truncated(path: &Path, expected_bytes: u64, found_bytes: u64) -> DataError {
    DataError::Truncated {
        path: path.to_path_buf(),
        expected_bytes,
        found_bytes,
    }
}

/// Checks that a file of `len` bytes is exactly `expected` long: shorter is
/// [`DataError::Truncated`], longer is [`DataError::TrailingBytes`] (`what` describes the
/// header's claim).
pub(crate) fn check_exact_len(
    path: &Path,
    len: u64,
    expected: u64,
    what: impl FnOnce() -> String,
) -> Result<(), DataError> {
    if len < expected {
        return Err(truncated(path, expected, len));
    }
    if len > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            extra_bytes: len - expected,
            what: format!("the {expected} bytes of {}", what()),
        });
    }
    Ok(())
}

/// Reads the big-ann header `u32 rows, u32 cols` (little-endian).
pub(crate) fn read_u32_header(path: &Path, file: &File, len: u64) -> Result<(u32, u32), DataError> {
    if len < 8 {
        return Err(truncated(path, 8, len));
    }
    let mut h = [0u32; 2];
    read_pod_at(path, file, &mut h, 0)?;
    Ok((u32::from_le(h[0]), u32::from_le(h[1])))
}

/// Layout of a big-ann vector file (`.fbin/.u8bin/.i8bin`) with `elem_size`-byte elements.
pub(crate) fn bigann(
    path: &Path,
    file: &File,
    len: u64,
    elem_size: usize,
) -> Result<Layout, DataError> {
    let (rows, dim) = read_u32_header(path, file, len)?;
    if dim == 0 {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!("the header gives dimension 0 (and {rows} rows)"),
        });
    }
    let row_bytes = mul(path, u64::from(dim), elem_size as u64, "row bytes")?;
    let data = mul(
        path,
        u64::from(rows),
        row_bytes,
        "the header's rows × row bytes",
    )?;
    let expected = add(path, 8, data, "file size")?;
    check_exact_len(path, len, expected, || {
        format!("the header's {rows} rows of dimension {dim} (plus the 8-byte header)")
    })?;
    Ok(Layout {
        rows: u64::from(rows),
        dim: to_usize(path, u64::from(dim), "dimension")?,
        data_offset: 8,
        row_stride_bytes: row_bytes,
    })
}

/// Layout of a TexMex file (`.fvecs/.bvecs/.ivecs`) with `elem_size`-byte elements: the
/// dimension comes from row 0's prefix and the length must be a whole number of rows. The
/// prefixes of the other rows are checked when they are read.
pub(crate) fn vecs(
    path: &Path,
    file: &File,
    len: u64,
    elem_size: usize,
) -> Result<Layout, DataError> {
    if len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if len < 4 {
        return Err(truncated(path, 4, len));
    }
    let mut d = [0i32; 1];
    read_pod_at(path, file, &mut d, 0)?;
    let dim = i32::from_le(d[0]);
    if dim <= 0 {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!("row 0's dimension prefix is {dim}; it must be at least 1"),
        });
    }
    let dim = dim as u64;
    let row_bytes = add(
        path,
        4,
        mul(path, dim, elem_size as u64, "row bytes")?,
        "row bytes",
    )?;
    let rows = len / row_bytes;
    let rest = len % row_bytes;
    if rest != 0 {
        // There is no row count: the bytes after the last whole row are a cut-off row when
        // they start like one (row 0's dimension prefix), else bytes appended after the rows.
        let at = rows * row_bytes;
        let mut head = [0u8; 4];
        let n = rest.min(4) as usize;
        read_pod_at(path, file, &mut head[..n], at)?;
        if head[..n] == (dim as i32).to_le_bytes()[..n] {
            let expected = mul(path, rows + 1, row_bytes, "file size")?;
            return Err(truncated(path, expected, len));
        }
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            extra_bytes: rest,
            what: format!("the last of {rows} whole rows of dimension {dim}"),
        });
    }
    Ok(Layout {
        rows,
        dim: to_usize(path, dim, "dimension")?,
        data_offset: 4,
        row_stride_bytes: row_bytes,
    })
}

/// The message of a TexMex row whose prefix differs from row 0's.
pub(crate) fn bad_prefix(path: &Path, row: u64, found: i32, dim: usize) -> DataError {
    DataError::BadRow {
        path: path.to_path_buf(),
        row,
        what: format!("dimension prefix is {found}, but row 0 gives {dim}"),
    }
}
