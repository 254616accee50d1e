//! User ids: one `u64` per vector, given to `m3 build --ids` and `m3 insert --ids`, and the
//! files they come in. Accepted formats, chosen by extension:
//!
//! - `.u64bin`: the big-ann layout with 64-bit elements: `u32 n`, `u32 d` (= 1), then `n`
//!   little-endian `u64` (this crate's own; [`write_user_ids`] writes it);
//! - `.ibin`: big-ann `u32 n`, `u32 d` (= 1), then `n` little-endian `i32`, none negative;
//! - `.npy`: a C-order array of shape `(n,)` or `(n, 1)`, dtype `<u8`, `<i8` (none
//!   negative), `<u4` or `<i4` (none negative).

use std::path::Path;

use super::DataError;
use super::format::PartialFile;
use super::format::layout;

/// Extensions [`read_user_ids`] accepts.
pub const USER_ID_EXTENSIONS: [&str; 3] = ["u64bin", "ibin", "npy"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    U64,
    I64,
    U32,
    I32,
}

impl Elem {
    fn bytes(self) -> u64 {
        match self {
            Elem::U64 | Elem::I64 => 8,
            Elem::U32 | Elem::I32 => 4,
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Reads a user-id file (see the module doc): one id per row, in row order. Duplicates are
/// not checked here (the index checks that its ids are unique).
pub fn read_user_ids(path: &Path) -> Result<Vec<u64>, DataError> {
    let (file, len) = layout::open(path)?;
    let (elem, rows, data_offset) = match extension(path).as_deref() {
        Some(ext @ ("u64bin" | "ibin")) => {
            let (rows, dim) = layout::read_u32_header(path, &file, len)?;
            if dim != 1 {
                return Err(DataError::Header {
                    path: path.to_path_buf(),
                    what: format!(
                        "an id file has one id per row (d = 1), the header says d = {dim}"
                    ),
                });
            }
            let elem = if ext == "u64bin" {
                Elem::U64
            } else {
                Elem::I32
            };
            (elem, u64::from(rows), 8)
        }
        Some("npy") => npy_layout(path, &file, len)?,
        _ => {
            return Err(DataError::UnsupportedFormat {
                path: path.to_path_buf(),
                what: format!(
                    "user-id files must end in {}",
                    USER_ID_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                ),
            });
        }
    };
    let data = layout::mul(path, rows, elem.bytes(), "ids × id bytes")?;
    let expected = layout::add(path, data_offset, data, "file size")?;
    layout::check_exact_len(path, len, expected, || format!("{rows} ids"))?;
    let mut raw = vec![0u8; layout::to_usize(path, data, "id bytes")?];
    layout::read_pod_at(path, &file, &mut raw, data_offset)?;
    let negative = |row: usize| DataError::BadRow {
        path: path.to_path_buf(),
        row: row as u64,
        what: "a negative id (ids are unsigned)".to_owned(),
    };
    let w = elem.bytes() as usize;
    raw.chunks_exact(w)
        .enumerate()
        .map(|(row, c)| match elem {
            Elem::U64 => Ok(u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            Elem::I64 => u64::try_from(i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .map_err(|_| negative(row)),
            Elem::U32 => Ok(u64::from(u32::from_le_bytes(
                c.try_into().expect("4 bytes"),
            ))),
            Elem::I32 => u64::try_from(i32::from_le_bytes(c.try_into().expect("4 bytes")))
                .map_err(|_| negative(row)),
        })
        .collect()
}

/// Element type, rows and data offset of a 1-column `.npy` id file.
fn npy_layout(path: &Path, file: &std::fs::File, len: u64) -> Result<(Elem, u64, u64), DataError> {
    use super::format::npy::PyVal;
    let (dict, data_offset) = super::format::npy::read_header_dict(path, file, len)?;
    let unsupported = |what: String| DataError::UnsupportedFormat {
        path: path.to_path_buf(),
        what,
    };
    let get = |key: &str| {
        dict.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| DataError::Header {
                path: path.to_path_buf(),
                what: format!("npy header: the key '{key}' is missing"),
            })
    };
    let elem = match get("descr")? {
        PyVal::Str(d) => match d.as_str() {
            "<u8" => Elem::U64,
            "<i8" => Elem::I64,
            "<u4" => Elem::U32,
            "<i4" => Elem::I32,
            d => {
                return Err(unsupported(format!(
                    "npy dtype '{d}' for ids; supported: '<u8', '<i8', '<u4', '<i4'"
                )));
            }
        },
        other => return Err(unsupported(format!("npy dtype {other:?} for ids"))),
    };
    if get("fortran_order")? != &PyVal::Bool(false) {
        return Err(unsupported("npy ids in Fortran order".to_owned()));
    }
    let shape: Vec<u64> = match get("shape")? {
        PyVal::Tuple(items) => items
            .iter()
            .map(|v| match v {
                PyVal::Int(n) => Some(*n),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| unsupported("npy shape entries must be integers".to_owned()))?,
        other => return Err(unsupported(format!("npy shape {other:?}"))),
    };
    let rows = match shape[..] {
        [n] | [n, 1] => n,
        _ => {
            return Err(unsupported(format!(
                "npy ids of shape {shape:?}; one id per row, (n,) or (n, 1), is required"
            )));
        }
    };
    Ok((elem, rows, data_offset))
}

/// Writes `ids` as a `.u64bin` file (see the module doc), atomically like
/// [`crate::data::VectorWriter`].
pub fn write_user_ids(path: &Path, ids: &[u64]) -> Result<(), DataError> {
    if extension(path).as_deref() != Some("u64bin") {
        return Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
            what: "user ids are written as .u64bin".to_owned(),
        });
    }
    let rows = u32::try_from(ids.len()).map_err(|_| DataError::TooLarge {
        path: path.to_path_buf(),
        what: "id count",
        limit: u64::from(u32::MAX),
    })?;
    let mut bytes = Vec::with_capacity(8 + 8 * ids.len());
    bytes.extend_from_slice(&rows.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for id in ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    let f = PartialFile::create(path)?;
    f.write_at(&bytes, 0)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let mut header = dict.into_bytes();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_every_accepted_format() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [7u64, u64::MAX - 1, 0, 1 << 40];
        let p = dir.path().join("a.u64bin");
        write_user_ids(&p, &ids).unwrap();
        assert_eq!(read_user_ids(&p).unwrap(), ids);

        let p = dir.path().join("a.npy");
        let payload: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy("<u8", "(4,)", &payload)).unwrap();
        assert_eq!(read_user_ids(&p).unwrap(), ids);
        std::fs::write(&p, npy("<u8", "(4, 1)", &payload)).unwrap();
        assert_eq!(read_user_ids(&p).unwrap(), ids);

        let small: Vec<u8> = [3i32, 9, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy("<i4", "(3,)", &small)).unwrap();
        assert_eq!(read_user_ids(&p).unwrap(), [3, 9, 12]);

        let p = dir.path().join("a.ibin");
        let mut bytes = vec![3, 0, 0, 0, 1, 0, 0, 0];
        bytes.extend_from_slice(&small);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_user_ids(&p).unwrap(), [3, 9, 12]);
    }

    #[test]
    fn refuses_bad_id_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.ibin");
        // Negative id.
        let mut bytes = vec![1, 0, 0, 0, 1, 0, 0, 0];
        bytes.extend_from_slice(&(-1i32).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            read_user_ids(&p),
            Err(DataError::BadRow { row: 0, .. })
        ));
        // Two columns.
        std::fs::write(&p, [1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]).unwrap();
        assert!(matches!(read_user_ids(&p), Err(DataError::Header { .. })));
        // Truncated.
        std::fs::write(&p, [2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert!(matches!(
            read_user_ids(&p),
            Err(DataError::Truncated { .. })
        ));
        // Float npy.
        let p = dir.path().join("a.npy");
        std::fs::write(&p, npy("<f4", "(1,)", &[0, 0, 0, 0])).unwrap();
        assert!(matches!(
            read_user_ids(&p),
            Err(DataError::UnsupportedFormat { .. })
        ));
        // Unknown extension.
        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"1\n").unwrap();
        assert!(matches!(
            read_user_ids(&p),
            Err(DataError::UnsupportedFormat { .. })
        ));
    }
}
