//! Vector files, bad input: truncation at every byte, headers that disagree with the file,
//! bad TexMex rows, non-finite values, empty sets, wrong element types, dimensions and row
//! ranges, and writers dropped without `finish`.

use std::fs;
use std::path::Path;

use m3::data::format::write_matrix;
use m3::data::{DType, DataError, Element, Matrix, MatrixView, VectorFile, VectorWriter};

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

/// Every cut of a valid file fails to open with `Truncated` (or `Empty` for a zero-length
/// TexMex file), and names the file; cuts at whole TexMex rows give fewer rows.
#[test]
fn truncated_files_are_detected_at_every_byte() {
    let dir = tmp();
    let m = f32_matrix(3, 2);
    for name in ["t.fbin", "t.fvecs", "t.npy"] {
        let full_path = dir.path().join(name);
        write(&full_path, &m);
        let full = fs::read(&full_path).unwrap();
        let cut_path = dir.path().join(format!("cut-{name}"));
        for cut in 0..full.len() {
            fs::write(&cut_path, &full[..cut]).unwrap();
            let res = VectorFile::open(&cut_path);
            if name.ends_with("fvecs") && cut % 12 == 0 {
                match res {
                    Ok(f) => assert_eq!(f.rows(), (cut / 12) as u64),
                    Err(e) => assert!(cut == 0 && matches!(e, DataError::Empty { .. }), "{e}"),
                }
                continue;
            }
            let err = res.expect_err(&format!("{name} cut at {cut}"));
            assert!(
                matches!(err, DataError::Truncated { found_bytes, .. } if found_bytes == cut as u64),
                "{name} cut at {cut}: {err}"
            );
            assert!(err.to_string().contains("cut-t."), "{err}");
        }
    }
}

#[test]
fn header_row_count_must_agree_with_length() {
    let dir = tmp();
    let path = dir.path().join("h.fbin");
    write(&path, &f32_matrix(4, 3));
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] = 5;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        VectorFile::open(&path),
        Err(DataError::Truncated {
            expected_bytes: 68,
            found_bytes: 56,
            ..
        })
    ));
    bytes[0] = 3;
    fs::write(&path, &bytes).unwrap();
    let err = VectorFile::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TrailingBytes {
                extra_bytes: 12,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("h.fbin"));
    bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        VectorFile::open(&path),
        Err(DataError::Header { .. })
    ));
}

/// A header whose counts overflow 64-bit sizes (n = dim = 0xFFFFFFFF) is an error that names
/// the file, for every format with such a header.
#[test]
fn overflowing_headers_name_the_file() {
    let dir = tmp();
    let huge = [0xFFu8; 8];
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("huge.fbin", huge.to_vec()),
        ("huge.i8bin", huge.to_vec()),
        ("huge.ibin", huge.to_vec()),
    ];
    // npy: a shape whose byte size overflows.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 4), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header_len = (dict.len() + 1).div_ceil(64) * 64 + 54; // total a multiple of 64
    npy.extend_from_slice(&(header_len as u16).to_le_bytes());
    npy.extend_from_slice(dict.as_bytes());
    npy.resize(10 + header_len - 1, b' ');
    npy.push(b'\n');
    cases.push(("huge.npy", npy));
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs::write(&path, &bytes).unwrap();
        let err = if name.ends_with(".ibin") {
            m3::data::GroundTruth::read(&path).unwrap_err()
        } else {
            VectorFile::open(&path).unwrap_err()
        };
        let msg = err.to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        if name != "huge.i8bin" {
            // One-byte elements: 8 + (2³² − 1)² bytes fit in 64 bits, so that one is merely
            // truncated.
            assert!(
                matches!(err, DataError::SizeOverflow { .. }),
                "{name}: {err:?}"
            );
            assert!(msg.contains("overflow"), "{msg}");
        }
    }
}

/// A file longer than its header says is reported as trailing bytes, with the file's name,
/// never as truncated.
#[test]
fn trailing_bytes_are_not_called_truncation() {
    let dir = tmp();
    let m = f32_matrix(4, 3);
    for name in ["x.fbin", "x.npy", "x.fvecs"] {
        let path = dir.path().join(name);
        write(&path, &m);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0xAB; 7]);
        fs::write(&path, &bytes).unwrap();
        let err = VectorFile::open(&path).unwrap_err();
        assert!(
            matches!(err, DataError::TrailingBytes { extra_bytes: 7, .. }),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("7 trailing bytes"),
            "{msg}"
        );
        assert!(!msg.contains("truncated"), "{msg}");
    }
    // Ground truth: longer than ids and distances together.
    let gt = m3::data::GroundTruth {
        ids: Matrix::from_vec(vec![1u32, 2, 3, 4], 2).unwrap(),
        dists: Some(Matrix::from_vec(vec![0.5f32, 1.0, 0.25, 2.0], 2).unwrap()),
    };
    let path = dir.path().join("gt.ibin");
    gt.write(&path).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 5]);
    fs::write(&path, &bytes).unwrap();
    let err = m3::data::GroundTruth::read(&path).unwrap_err();
    assert!(
        matches!(err, DataError::TrailingBytes { extra_bytes: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("gt.ibin"), "{err}");
}

#[test]
fn fvecs_rows_with_a_wrong_dim_prefix_are_named() {
    let dir = tmp();
    let path = dir.path().join("p.fvecs");
    write(&path, &f32_matrix(6, 2));
    let mut bytes = fs::read(&path).unwrap();
    bytes[4 * 12..4 * 12 + 4].copy_from_slice(&3i32.to_le_bytes()); // row 4
    fs::write(&path, &bytes).unwrap();
    let f = VectorFile::open(&path).unwrap();
    let mut out = Vec::new();
    f.read_rows_f32(0, 4, &mut out).unwrap();
    assert_eq!(out.len(), 8);
    for (start, count) in [(0, 6), (3, 2), (4, 1)] {
        let err = f.read_rows_f32(start, count, &mut out).unwrap_err();
        assert!(matches!(err, DataError::BadRow { row: 4, .. }), "{err}");
    }
    for bad_dim in [0i32, -2] {
        bytes[..4].copy_from_slice(&bad_dim.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = VectorFile::open(&path).unwrap_err();
        assert!(matches!(err, DataError::Header { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("prefix is {bad_dim}")),
            "{err}"
        );
    }
}

#[test]
fn non_finite_components_name_row_and_column() {
    let dir = tmp();
    for (name, bad) in [
        ("n.fbin", f32::NAN),
        ("n.fvecs", f32::INFINITY),
        ("n.npy", -f32::INFINITY),
    ] {
        let mut m = f32_matrix(8, 3);
        m.row_mut(5)[2] = bad;
        let path = dir.path().join(name);
        write(&path, &m);
        let f = VectorFile::open(&path).unwrap();
        let mut out = Vec::new();
        f.read_rows_f32(0, 5, &mut out).unwrap();
        for (start, count) in [(0, 8), (4, 2), (5, 1)] {
            let err = f.read_rows_f32(start, count, &mut out).unwrap_err();
            assert!(
                matches!(err, DataError::NonFinite { row: 5, col: 2, .. }),
                "{err}"
            );
            let err = f.read_rows::<f32>(start, count, &mut out).unwrap_err();
            assert!(
                matches!(err, DataError::NonFinite { row: 5, col: 2, .. }),
                "{err}"
            );
        }
        assert!(f.read_all_f32().is_err());
        assert!(f.chunks_f32(2).any(|c| c.is_err()));
    }
}

#[test]
fn empty_sets_are_rejected() {
    let dir = tmp();
    for name in ["e.fbin", "e.npy", "e.bvecs"] {
        let path = dir.path().join(name);
        let dtype = if name.ends_with("bvecs") {
            DType::U8
        } else {
            DType::F32
        };
        let w = VectorWriter::create(&path, dtype, 4).unwrap();
        assert_eq!(w.finish().unwrap(), 0);
        let err = VectorFile::open(&path).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{name}: {err}");
    }
}

#[test]
fn wrong_dtype_range_and_dim_are_errors() {
    let dir = tmp();
    let path = dir.path().join("w.fbin");
    write(&path, &f32_matrix(5, 3));
    let f = VectorFile::open(&path).unwrap();
    let mut bytes: Vec<u8> = Vec::new();
    assert!(matches!(
        f.read_rows::<u8>(0, 1, &mut bytes),
        Err(DataError::DTypeMismatch {
            expected: DType::F32,
            found: DType::U8,
            ..
        })
    ));
    let mut out = Vec::new();
    for (start, count) in [(5, 1), (4, 2), (u64::MAX, 2), (0, 6)] {
        let err = f.read_rows_f32(start, count, &mut out).unwrap_err();
        assert!(matches!(err, DataError::RowRange { rows: 5, .. }), "{err}");
    }
    f.read_rows_f32(5, 0, &mut out).unwrap();
    assert!(out.is_empty());
    assert!(matches!(
        f.chunks_f32(0).next(),
        Some(Err(DataError::Param(_)))
    ));

    for (name, dtype) in [
        ("x.fbin", DType::U8),
        ("x.bvecs", DType::F32),
        ("x.i8bin", DType::U8),
    ] {
        let err = VectorWriter::create(&dir.path().join(name), dtype, 3).unwrap_err();
        assert!(
            matches!(err, DataError::DTypeMismatch { .. }),
            "{name}: {err}"
        );
    }
    let mut w = VectorWriter::create(&dir.path().join("y.npy"), DType::I8, 3).unwrap();
    let u = [1u8, 2, 3];
    assert!(matches!(
        w.write_rows(MatrixView::new(&u, 3).unwrap()),
        Err(DataError::DTypeMismatch { .. })
    ));
    let i = [1i8, 2, 3, 4];
    assert!(matches!(
        w.write_rows(MatrixView::new(&i, 4).unwrap()),
        Err(DataError::DimMismatch {
            expected: 3,
            found: 4,
            ..
        })
    ));
    // The rejected writes left nothing behind: the file is still consistent.
    w.write_rows(MatrixView::new(&i[..3], 3).unwrap()).unwrap();
    assert_eq!(w.finish().unwrap(), 1);
    let f = VectorFile::open(&dir.path().join("y.npy")).unwrap();
    assert_eq!((f.rows(), f.dtype()), (1, DType::I8));
}

#[test]
fn dropped_writer_keeps_the_old_target_and_leaves_no_partial() {
    let dir = tmp();
    for name in ["d.fbin", "d.fvecs", "d.npy"] {
        let path = dir.path().join(name);
        write(&path, &f32_matrix(2, 2));
        let before = fs::read(&path).unwrap();
        let mut w = VectorWriter::create(&path, DType::F32, 2).unwrap();
        w.write_rows(f32_matrix(9, 2).view()).unwrap();
        assert!(dir.path().join(format!("{name}.partial")).exists());
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "target touched before finish"
        );
        drop(w);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(!dir.path().join(format!("{name}.partial")).exists());
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    // finish replaces the old file.
    let path = dir.path().join("d.fbin");
    write(&path, &f32_matrix(9, 2));
    assert_eq!(VectorFile::open(&path).unwrap().rows(), 9);
    assert!(!dir.path().join("d.fbin.partial").exists());
}
