//! Vector file formats: round trips of every format and element type, npy headers written by
//! hand, bad input (truncation, inconsistent headers, bad rows, non-finite values), atomic
//! writes, and the shipped data sets.

use std::fs;
use std::path::{Path, PathBuf};

use m3::data::format::write_matrix;
use m3::data::{DType, DataError, Element, FileFormat, Matrix, VectorFile, VectorWriter};
use proptest::prelude::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn f32_matrix(rows: usize, dim: usize) -> Matrix<f32> {
    let data = (0..rows * dim).map(|i| i as f32 * 0.5 - 7.25).collect();
    Matrix::from_vec(data, dim).unwrap()
}

fn write<T: Element>(path: &Path, m: &Matrix<T>) {
    write_matrix(path, m.view()).unwrap();
}

/// Reads the file back in its own type and as f32, whole, by ranges and by chunks, and checks
/// everything against `m`.
fn check_reads_back<T: Element>(path: &Path, m: &Matrix<T>) {
    let f = VectorFile::open(path).unwrap();
    assert_eq!(
        (f.rows(), f.dim(), f.dtype()),
        (m.rows() as u64, m.dim(), T::DTYPE)
    );
    let mut out = vec![T::default(); 3];
    f.read_rows::<T>(0, m.rows(), &mut out).unwrap();
    assert_eq!(out, m.as_slice());
    let as_f32: Vec<f32> = m.as_slice().iter().map(|v| v.to_f32()).collect();
    assert_eq!(f.read_all_f32().unwrap().as_slice(), &as_f32[..]);
    let mid = m.rows() / 2;
    let mut part = Vec::new();
    f.read_rows_f32(mid as u64, m.rows() - mid, &mut part)
        .unwrap();
    assert_eq!(part, &as_f32[mid * m.dim()..]);
    let mut seen = 0;
    for chunk in f.chunks_f32(3) {
        let (first, c) = chunk.unwrap();
        assert_eq!(first, seen as u64);
        assert!(c.rows() <= 3 && c.rows() > 0);
        assert_eq!(
            c.as_slice(),
            &as_f32[seen * m.dim()..(seen + c.rows()) * m.dim()]
        );
        seen += c.rows();
    }
    assert_eq!(seen, m.rows());
}

#[test]
fn every_format_and_dtype_round_trips() {
    let dir = tmp();
    let f = f32_matrix(10, 7);
    let u = Matrix::from_vec((0..70).map(|i| (i * 37 % 256) as u8).collect(), 7).unwrap();
    let i = Matrix::from_vec((0..70).map(|i| (i * 37 % 256) as u8 as i8).collect(), 7).unwrap();
    for name in ["a.fbin", "a.fvecs", "f.npy"] {
        write(&dir.path().join(name), &f);
        check_reads_back(&dir.path().join(name), &f);
    }
    for name in ["a.u8bin", "a.bvecs", "u.npy"] {
        write(&dir.path().join(name), &u);
        check_reads_back(&dir.path().join(name), &u);
    }
    for name in ["a.i8bin", "i.npy"] {
        write(&dir.path().join(name), &i);
        check_reads_back(&dir.path().join(name), &i);
    }
    // Exact on-disk sizes: no stray bytes, no missing header.
    let len = |n: &str| fs::metadata(dir.path().join(n)).unwrap().len();
    assert_eq!(len("a.fbin"), 8 + 70 * 4);
    assert_eq!(len("a.fvecs"), 10 * (4 + 7 * 4));
    assert_eq!(len("a.bvecs"), 10 * (4 + 7));
    assert_eq!(len("a.i8bin"), 8 + 70);
    assert_eq!(len("u.npy"), 128 + 70);
}

#[test]
fn writer_streams_several_batches() {
    let dir = tmp();
    let m = f32_matrix(25, 4);
    for name in ["s.fbin", "s.fvecs", "s.npy"] {
        let path = dir.path().join(name);
        let mut w = VectorWriter::create(&path, DType::F32, 4).unwrap();
        for (a, b) in [(0, 10), (10, 10), (10, 24), (24, 25)] {
            w.write_rows(m.view().slice_rows(a, b)).unwrap();
        }
        assert_eq!(w.rows(), 25);
        assert_eq!(w.finish().unwrap(), 25);
        check_reads_back(&path, &m);
    }
}

#[test]
fn npy_written_header_is_version_1_aligned_and_newline_terminated() {
    let dir = tmp();
    let path = dir.path().join("x.npy");
    write(&path, &f32_matrix(3, 5));
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    assert_eq!(bytes[10 + hlen - 1], b'\n');
    let text = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }"));
    assert_eq!(bytes.len(), 10 + hlen + 60);
}

/// An npy file with a hand-made header of the given version.
fn npy_file(dir: &Path, name: &str, version: u8, dict: &str, data: &[u8]) -> PathBuf {
    let mut header = dict.as_bytes().to_vec();
    let prefix = if version == 1 { 10 } else { 12 };
    while !(prefix + header.len() + 1).is_multiple_of(16) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[version, 0]);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn hand_made_npy_headers_of_versions_1_2_3_parse() {
    let dir = tmp();
    let vals = [1.5f32, -2.0, 3.25, 4.0, 5.0, 6.5];
    let data: &[u8] = bytemuck::cast_slice(&vals);
    let dicts = [
        (
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
        ),
        (
            2,
            "{'shape': (3, 2), 'descr': '<f4', 'fortran_order': False}",
        ),
        (
            3,
            "{ 'fortran_order' : False , 'shape' : ( 3 , 2 , ) , 'descr' : '<f4' , }",
        ),
    ];
    for (version, dict) in dicts {
        let path = npy_file(dir.path(), &format!("v{version}.npy"), version, dict, data);
        let f = VectorFile::open(&path).unwrap();
        assert_eq!(
            (f.rows(), f.dim(), f.dtype()),
            (3, 2, DType::F32),
            "v{version}"
        );
        assert_eq!(f.read_all_f32().unwrap().as_slice(), &vals);
    }
    // Version 3 is utf-8: a non-ASCII key is fine.
    let dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), 'note': 'é'}";
    let path = npy_file(dir.path(), "u.npy", 3, dict, &[1, 2, 3, 4, 5, 6]);
    let f = VectorFile::open(&path).unwrap();
    assert_eq!((f.rows(), f.dim(), f.dtype()), (2, 3, DType::U8));
}

#[test]
fn unsupported_npy_arrays_are_rejected_with_the_reason() {
    let dir = tmp();
    let data = [0u8; 48];
    let cases = [
        (
            "fortran",
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }",
            "Fortran",
        ),
        (
            "big",
            1,
            "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }",
            "big-endian",
        ),
        (
            "f8",
            1,
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }",
            "'<f8'",
        ),
        (
            "3d",
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2), }",
            "2-D",
        ),
        (
            "1d",
            2,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }",
            "2-D",
        ),
    ];
    for (name, version, dict, needle) in cases {
        let path = npy_file(
            dir.path(),
            &format!("{name}.npy"),
            version,
            dict,
            &data[..24],
        );
        let err = VectorFile::open(&path).unwrap_err();
        assert!(
            matches!(err, DataError::UnsupportedFormat { .. }),
            "{name}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(needle) && msg.contains(name), "{name}: {msg}");
    }
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
    let path = npy_file(dir.path(), "v4.npy", 4, dict, &data[..24]);
    let err = VectorFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::UnsupportedVersion { found, .. } if found == "4.0"),
        "{err}"
    );
    let path = dir.path().join("magic.npy");
    fs::write(&path, b"\x93NUMPX\x01\x00\x10\x00{}").unwrap();
    assert!(matches!(
        VectorFile::open(&path),
        Err(DataError::UnsupportedFormat { .. })
    ));
}

#[test]
fn extensions_choose_format_and_dtype() {
    let cases = [
        ("a.fbin", FileFormat::BigAnn, Some(DType::F32)),
        ("a.U8BIN", FileFormat::BigAnn, Some(DType::U8)),
        ("a.i8bin", FileFormat::BigAnn, Some(DType::I8)),
        ("a.fvecs", FileFormat::Vecs, Some(DType::F32)),
        ("a.bvecs", FileFormat::Vecs, Some(DType::U8)),
        ("a.npy", FileFormat::Npy, None),
    ];
    for (name, format, dtype) in cases {
        assert_eq!(
            FileFormat::from_path(Path::new(name)).unwrap(),
            (format, dtype)
        );
    }
    for name in ["a.ibin", "a.ivecs", "a.txt", "noext"] {
        assert!(matches!(
            FileFormat::from_path(Path::new(name)),
            Err(DataError::UnsupportedFormat { .. })
        ));
    }
}

fn value_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        -1e30f32..1e30f32,
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::MIN_POSITIVE)
    ]
}

fn shaped<T: std::fmt::Debug + Clone>(
    elem: impl Strategy<Value = T> + Clone,
) -> impl Strategy<Value = (usize, Vec<T>)> {
    (1usize..40, 1usize..17).prop_flat_map(move |(rows, dim)| {
        (Just(dim), prop::collection::vec(elem.clone(), rows * dim))
    })
}

fn round_trip<T: Element>(dir: &Path, name: &str, dim: usize, data: Vec<T>) {
    let m = Matrix::from_vec(data, dim).unwrap();
    let path = dir.join(name);
    write(&path, &m);
    check_reads_back(&path, &m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_f32_round_trips((dim, data) in shaped(value_f32())) {
        let dir = tmp();
        for name in ["p.fbin", "p.fvecs", "p.npy"] {
            round_trip(dir.path(), name, dim, data.clone());
        }
    }

    #[test]
    fn prop_u8_round_trips((dim, data) in shaped(any::<u8>())) {
        let dir = tmp();
        for name in ["p.u8bin", "p.bvecs", "p.npy"] {
            round_trip(dir.path(), name, dim, data.clone());
        }
    }

    #[test]
    fn prop_i8_round_trips((dim, data) in shaped(any::<i8>())) {
        let dir = tmp();
        for name in ["p.i8bin", "p.npy"] {
            round_trip(dir.path(), name, dim, data.clone());
        }
    }
}

#[test]
fn shipped_sets_open_with_their_shapes() {
    let Some(root) = m3::testing::shared_data_root() else {
        return;
    };
    let cases = [
        ("glove-50d/base.390K.fbin", 390_000, 50),
        ("glove-50d/query.10K.fbin", 10_000, 50),
        ("ngt-sift5k/base.5K.fbin", 5_000, 128),
        ("shopsphere-xmodal/query.text.1126.fbin", 1_126, 512),
    ];
    for (name, rows, dim) in cases {
        let f = VectorFile::open(&root.join(name)).unwrap();
        assert_eq!(
            (f.rows(), f.dim(), f.dtype()),
            (rows, dim, DType::F32),
            "{name}"
        );
    }
    // Streaming the whole glove base checks every component finite; rows are unit norm.
    let base = VectorFile::open(&root.join("glove-50d/base.390K.fbin")).unwrap();
    let mut rows = 0;
    for chunk in base.chunks_f32(65_536) {
        let (first, c) = chunk.unwrap();
        assert_eq!(first, rows);
        let norm2: f32 = c.row(0).iter().map(|v| v * v).sum();
        assert!((norm2 - 1.0).abs() < 1e-3, "row {first} norm² {norm2}");
        rows += c.rows() as u64;
    }
    assert_eq!(rows, 390_000);
}
