//! NumPy `.npy` headers: versions 1.0 (u16 header length), 2.0 and 3.0 (u32 length; 3.0 is
//! utf-8), read by a small parser of the Python-literal header dict, and written as version 1.0
//! (2.0 only if the header could not fit a u16) padded so that the data starts at a multiple of
//! 64 bytes.

use std::fs::File;
use std::path::Path;

use super::layout::{self, Layout};
use crate::data::{DType, DataError};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Headers longer than this are rejected instead of being read into memory.
const MAX_HEADER_LEN: u64 = 1 << 20;

/// A Python literal as it occurs in an npy header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyVal {
    Str(String),
    Bool(bool),
    None,
    Int(u64),
    Tuple(Vec<PyVal>),
    List(Vec<PyVal>),
    Dict(Vec<(PyVal, PyVal)>),
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn err(&self, what: &str) -> String {
        format!("{what} at byte {} of the header dict", self.pos)
    }

    fn value(&mut self) -> Result<PyVal, String> {
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(q @ (b'\'' | b'"')) => {
                let start = self.pos + 1;
                let len = self.s[start..]
                    .iter()
                    .position(|&c| c == q || c == b'\\')
                    .ok_or_else(|| self.err("unterminated string"))?;
                if self.s[start + len] == b'\\' {
                    self.pos = start + len;
                    return Err(self.err("escape sequences are not supported"));
                }
                self.pos = start + len + 1;
                Ok(PyVal::Str(self.text[start..start + len].to_owned()))
            }
            Some(b'(') => self.seq(b')').map(PyVal::Tuple),
            Some(b'[') => self.seq(b']').map(PyVal::List),
            Some(b'{') => self.dict(),
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let v = self.text[start..self.pos]
                    .parse::<u64>()
                    .map_err(|_| self.err("integer out of range"))?;
                // Python 2 long literals, as old numpy wrote them: `(10L, 3L)`.
                if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Ok(PyVal::Int(v))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    "True" => Ok(PyVal::Bool(true)),
                    "False" => Ok(PyVal::Bool(false)),
                    "None" => Ok(PyVal::None),
                    w => Err(format!(
                        "unknown word `{w}` at byte {start} of the header dict"
                    )),
                }
            }
            Some(c) => Err(self.err(&format!("unexpected character `{}`", c as char))),
        }
    }

    /// Items up to `close`, comma-separated, trailing comma allowed. `pos` is at the opener.
    fn seq(&mut self, close: u8) -> Result<Vec<PyVal>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(self.err(&format!("expected `,` or `{}`", close as char))),
            }
        }
    }

    fn dict(&mut self) -> Result<PyVal, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(PyVal::Dict(items));
            }
            let key = self.value()?;
            if self.peek() != Some(b':') {
                return Err(self.err("expected `:`"));
            }
            self.pos += 1;
            let value = self.value()?;
            items.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }
}

/// Parses the whole header text as one dict literal followed only by whitespace.
pub(crate) fn parse_dict(text: &str) -> Result<Vec<(String, PyVal)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
    };
    if p.peek() != Some(b'{') {
        return Err(p.err("expected `{`"));
    }
    let PyVal::Dict(items) = p.dict()? else {
        unreachable!("dict() returns a dict")
    };
    if p.peek().is_some() {
        return Err(p.err("unexpected text after the dict"));
    }
    let mut out: Vec<(String, PyVal)> = Vec::with_capacity(items.len());
    for (k, v) in items {
        let PyVal::Str(k) = k else {
            return Err(format!("dict key {k:?} is not a string"));
        };
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("key '{k}' appears twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn descr_dtype(descr: &str) -> Option<DType> {
    match descr {
        "<f4" => Some(DType::F32),
        "|u1" | "<u1" => Some(DType::U8),
        "|i1" | "<i1" => Some(DType::I8),
        _ => None,
    }
}

/// The descr this crate writes for `dtype`.
pub(crate) fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
    }
}

/// Element type, rows and dim from a parsed header dict.
pub(crate) fn interpret(
    path: &Path,
    dict: &[(String, PyVal)],
) -> Result<(DType, u64, u64), DataError> {
    let unsupported = |what: String| DataError::UnsupportedFormat {
        path: path.to_path_buf(),
        what,
    };
    let malformed = |what: String| DataError::Header {
        path: path.to_path_buf(),
        what: format!("npy header: {what}"),
    };
    let get = |key: &str| {
        dict.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| malformed(format!("the key '{key}' is missing")))
    };
    let dtype = match get("descr")? {
        PyVal::Str(d) => descr_dtype(d).ok_or_else(|| {
            let why = if d.starts_with('>') {
                " (big-endian)"
            } else {
                ""
            };
            unsupported(format!(
                "npy dtype '{d}'{why}; supported: '<f4' (f32), '|u1' (u8), '|i1' (i8)"
            ))
        })?,
        other => return Err(unsupported(format!("structured npy dtype {other:?}"))),
    };
    match get("fortran_order")? {
        PyVal::Bool(false) => {}
        PyVal::Bool(true) => {
            return Err(unsupported(
                "npy array in Fortran (column-major) order; save it in C order".to_owned(),
            ));
        }
        other => return Err(malformed(format!("fortran_order is {other:?}, not a bool"))),
    }
    let shape = match get("shape")? {
        PyVal::Tuple(items) => items
            .iter()
            .map(|v| match v {
                PyVal::Int(n) => Ok(*n),
                other => Err(malformed(format!(
                    "shape entry {other:?} is not an integer"
                ))),
            })
            .collect::<Result<Vec<u64>, _>>()?,
        other => return Err(malformed(format!("shape is {other:?}, not a tuple"))),
    };
    let [rows, dim] = shape[..] else {
        return Err(unsupported(format!(
            "npy array of shape {shape:?} has {} dimensions; a 2-D (rows, dim) array is required",
            shape.len()
        )));
    };
    Ok((dtype, rows, dim))
}

/// Reads and checks the header of an `.npy` file of `len` bytes.
pub(crate) fn read_header(
    path: &Path,
    file: &File,
    len: u64,
) -> Result<(DType, Layout), DataError> {
    let (dict, data_offset) = read_header_dict(path, file, len)?;
    let (dtype, rows, dim) = interpret(path, &dict)?;
    if dim == 0 {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!("npy shape ({rows}, 0) has dimension 0"),
        });
    }
    let row_bytes = layout::mul(path, dim, dtype.size_bytes() as u64, "row bytes")?;
    let data = layout::mul(path, rows, row_bytes, "the shape's rows × row bytes")?;
    let expected = layout::add(path, data_offset, data, "file size")?;
    layout::check_exact_len(path, len, expected, || {
        format!("the npy shape ({rows}, {dim}) and the {data_offset}-byte header")
    })?;
    Ok((
        dtype,
        Layout {
            rows,
            dim: layout::to_usize(path, dim, "dimension")?,
            data_offset,
            row_stride_bytes: row_bytes,
        },
    ))
}

/// The parsed header dict of an `.npy` file of `len` bytes and the offset of its data
/// (magic, version and header length checked; the dict's meaning is the caller's).
pub(crate) fn read_header_dict(
    path: &Path,
    file: &File,
    len: u64,
) -> Result<(Vec<(String, PyVal)>, u64), DataError> {
    let truncated = |expected_bytes| DataError::Truncated {
        path: path.to_path_buf(),
        expected_bytes,
        found_bytes: len,
    };
    if len < 10 {
        return Err(truncated(10));
    }
    let mut pre = [0u8; 12];
    let pre_len = if len >= 12 { 12 } else { 10 };
    layout::read_pod_at(path, file, &mut pre[..pre_len], 0)?;
    if &pre[..6] != MAGIC {
        return Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
            what: "not an .npy file (the magic string \\x93NUMPY is missing)".to_owned(),
        });
    }
    let (header_len, header_start) = match (pre[6], pre[7]) {
        (1, 0) => (u64::from(u16::from_le_bytes([pre[8], pre[9]])), 10),
        (2 | 3, 0) if len < 12 => return Err(truncated(12)),
        (2 | 3, 0) => (
            u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]])),
            12,
        ),
        (major, minor) => {
            return Err(DataError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: format!("{major}.{minor}"),
                what: "npy versions 1.0, 2.0 and 3.0 are supported",
            });
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(DataError::Header {
            path: path.to_path_buf(),
            what: format!("npy header length {header_len} is implausibly large"),
        });
    }
    let data_offset = header_start + header_len;
    if len < data_offset {
        return Err(truncated(data_offset));
    }
    let mut raw = vec![0u8; header_len as usize];
    layout::read_pod_at(path, file, &mut raw, header_start)?;
    let text = if pre[6] == 3 {
        String::from_utf8(raw).map_err(|_| DataError::Header {
            path: path.to_path_buf(),
            what: "npy 3.0 header is not valid utf-8".to_owned(),
        })?
    } else {
        // Versions 1 and 2 are latin-1.
        raw.iter().map(|&b| b as char).collect()
    };
    let dict = parse_dict(&text).map_err(|what| DataError::Header {
        path: path.to_path_buf(),
        what: format!("malformed npy header: {what}"),
    })?;
    Ok((dict, data_offset))
}

/// The complete header (magic, version, length, dict, padding, `\n`) of a C-order 2-D array,
/// padded to a multiple of 64 bytes and to at least `min_total` bytes. Writers reserve
/// `encode_header(dtype, u64::MAX, dim, 0).len()` bytes, then write the header with the final
/// row count padded to that size.
pub(crate) fn encode_header(dtype: DType, rows: u64, dim: usize, min_total: usize) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}",
        descr(dtype)
    );
    let total_for = |prefix: usize| {
        (prefix + dict.len() + 1)
            .next_multiple_of(64)
            .max(min_total)
    };
    let mut prefix = 10;
    let mut total = total_for(prefix);
    if total - prefix > usize::from(u16::MAX) {
        prefix = 12;
        total = total_for(prefix);
    }
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    if prefix == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(DType, u64, u64), String> {
        let dict = parse_dict(text)?;
        interpret(Path::new("x.npy"), &dict).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_numpy_headers_in_any_layout() {
        let ok = [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }    \n",
            "{'shape': (3, 4), 'fortran_order': False, 'descr': '<f4'}",
            "{ \"descr\" : \"<f4\" ,'fortran_order':False,'shape':( 3 ,4 , ) , }\n",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), 'extra': [1, (2,)]}",
        ];
        for text in ok {
            assert_eq!(parse(text), Ok((DType::F32, 3, 4)), "{text}");
        }
        let u8s = "{'descr': '|u1', 'fortran_order': False, 'shape': (7, 1), }";
        assert_eq!(parse(u8s), Ok((DType::U8, 7, 1)));
        let i8s = "{'descr': '<i1', 'fortran_order': False, 'shape': (0, 9), }";
        assert_eq!(parse(i8s), Ok((DType::I8, 0, 9)));
    }

    #[test]
    fn rejects_malformed_and_unsupported_headers() {
        let bad = [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)",
                "expected",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                "'shape' is missing",
            ),
            (
                "{'descr': '<f4', 'fortran_order': Nope, 'shape': (3, 4)}",
                "unknown word",
            ),
            ("{'descr': '<f4', 'descr': '<f4', 'shape': (3, 4)}", "twice"),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4)}",
                "big-endian",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)}",
                "'<f8'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4)}",
                "Fortran",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}",
                "1 dimensions",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4)}",
                "3 dimensions",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3, 4)}",
                "structured",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)} x",
                "after the dict",
            ),
            (
                "{'descr': '<f4', 'shape': (99999999999999999999999, 4)}",
                "out of range",
            ),
        ];
        for (text, needle) in bad {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn encoded_header_is_aligned_and_parses_back() {
        for (dtype, rows, dim) in [
            (DType::F32, 0, 1),
            (DType::U8, u64::MAX, 4096),
            (DType::I8, 5, 3),
        ] {
            let reserve = encode_header(dtype, u64::MAX, dim, 0).len();
            let h = encode_header(dtype, rows, dim, reserve);
            assert_eq!(h.len(), reserve);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
            assert_eq!(h.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert_eq!(parse(text), Ok((dtype, rows, dim as u64)));
        }
    }
}
