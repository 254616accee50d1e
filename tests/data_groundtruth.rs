//! Ground-truth files: `.ibin` with and without appended distances, separate distance files,
//! `.ivecs`, bad input, and the shipped ground truth of the real data sets.

use std::fs;

use m3::data::format::write_matrix;
use m3::data::{DataError, GroundTruth, Matrix, VectorFile};
use proptest::prelude::*;

fn gt(queries: usize, k: usize, with_dists: bool) -> GroundTruth {
    let ids = (0..queries * k)
        .map(|i| (i * 7919 % 100_003) as u32)
        .collect();
    let dists = (0..queries * k).map(|i| 10.0 - i as f32 * 0.25).collect();
    GroundTruth {
        ids: Matrix::from_vec(ids, k).unwrap(),
        dists: with_dists.then(|| Matrix::from_vec(dists, k).unwrap()),
    }
}

#[test]
fn ibin_and_ivecs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for with_dists in [false, true] {
        let g = gt(6, 4, with_dists);
        let path = dir.path().join(format!("gt-{with_dists}.ibin"));
        g.write(&path).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len, 8 + 6 * 4 * 4 * if with_dists { 2 } else { 1 });
        let back = GroundTruth::read(&path).unwrap();
        assert_eq!(back, g);
        assert_eq!((back.queries(), back.k()), (6, 4));
    }
    let path = dir.path().join("gt.ivecs");
    gt(6, 4, true).write(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 6 * (4 + 4 * 4));
    assert_eq!(GroundTruth::read(&path).unwrap(), gt(6, 4, false));
}

#[test]
fn separate_distance_file_must_match_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("gt.ibin");
    gt(5, 3, false).write(&ids).unwrap();
    let dists = dir.path().join("gt.dist.fbin");
    write_matrix(&dists, gt(5, 3, true).dists.unwrap().view()).unwrap();
    let both = GroundTruth::read_with_dists(&ids, &dists).unwrap();
    assert_eq!(both, gt(5, 3, true));

    let wrong_k = dir.path().join("k.fbin");
    write_matrix(&wrong_k, gt(5, 4, true).dists.unwrap().view()).unwrap();
    let err = GroundTruth::read_with_dists(&ids, &wrong_k).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::DimMismatch {
                expected: 3,
                found: 4,
                ..
            }
        ),
        "{err}"
    );

    let wrong_rows = dir.path().join("rows.fbin");
    write_matrix(&wrong_rows, gt(6, 3, true).dists.unwrap().view()).unwrap();
    let err = GroundTruth::read_with_dists(&ids, &wrong_rows).unwrap_err();
    assert!(matches!(err, DataError::Header { .. }), "{err}");
    assert!(err.to_string().contains("rows.fbin"));

    let u8_dists = dir.path().join("d.u8bin");
    write_matrix(
        &u8_dists,
        Matrix::from_vec(vec![1u8; 15], 3).unwrap().view(),
    )
    .unwrap();
    let err = GroundTruth::read_with_dists(&ids, &u8_dists).unwrap_err();
    assert!(matches!(err, DataError::DTypeMismatch { .. }), "{err}");
}

#[test]
fn ibin_lengths_other_than_ids_or_ids_and_dists_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ibin");
    gt(3, 2, true).write(&path).unwrap();
    let full = fs::read(&path).unwrap();
    let ids_end = 8 + 3 * 2 * 4;
    let cut = dir.path().join("cut.ibin");
    for n in 0..full.len() {
        fs::write(&cut, &full[..n]).unwrap();
        let res = GroundTruth::read(&cut);
        match n {
            _ if n == ids_end => assert_eq!(res.unwrap(), gt(3, 2, false)),
            _ if n < ids_end => assert!(
                matches!(res, Err(DataError::Truncated { found_bytes, .. }) if found_bytes == n as u64),
                "cut at {n}"
            ),
            _ => assert!(matches!(res, Err(DataError::Header { .. })), "cut at {n}"),
        }
    }
    let mut longer = full.clone();
    longer.push(0);
    fs::write(&cut, &longer).unwrap();
    assert!(matches!(
        GroundTruth::read(&cut),
        Err(DataError::TrailingBytes { extra_bytes: 1, .. })
    ));
    // Zero queries is an empty set; k = 0 is a header error.
    fs::write(&cut, [0, 0, 0, 0, 5, 0, 0, 0]).unwrap();
    assert!(matches!(
        GroundTruth::read(&cut),
        Err(DataError::Empty { .. })
    ));
    fs::write(&cut, [5, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert!(matches!(
        GroundTruth::read(&cut),
        Err(DataError::Header { .. })
    ));
    // Non-finite distances are caught.
    let mut bad = full.clone();
    bad[ids_end + 4..ids_end + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(&cut, &bad).unwrap();
    assert!(matches!(
        GroundTruth::read(&cut),
        Err(DataError::NonFinite { row: 0, col: 1, .. })
    ));
}

#[test]
fn ivecs_bad_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ivecs");
    gt(4, 3, false).write(&path).unwrap();
    let good = fs::read(&path).unwrap();
    let row = 16; // bytes per row: prefix + 3 ids

    let mut bad = good.clone();
    bad[2 * row + 8..2 * row + 12].copy_from_slice(&(-5i32).to_le_bytes());
    fs::write(&path, &bad).unwrap();
    let err = GroundTruth::read(&path).unwrap_err();
    assert!(matches!(err, DataError::BadRow { row: 2, .. }), "{err}");
    assert!(err.to_string().contains("-5"), "{err}");

    let mut bad = good.clone();
    bad[3 * row..3 * row + 4].copy_from_slice(&2i32.to_le_bytes());
    fs::write(&path, &bad).unwrap();
    assert!(matches!(
        GroundTruth::read(&path),
        Err(DataError::BadRow { row: 3, .. })
    ));

    fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(matches!(
        GroundTruth::read(&path),
        Err(DataError::Truncated { .. })
    ));

    let big = GroundTruth {
        ids: Matrix::from_vec(vec![u32::MAX], 1).unwrap(),
        dists: None,
    };
    assert!(matches!(
        big.write(&path),
        Err(DataError::TooLarge { what: "id", .. })
    ));
    // The failed write left the previous file alone and no partial file.
    assert_eq!(fs::read(&path).unwrap(), &good[..good.len() - 1]);
    assert!(!dir.path().join("g.ivecs.partial").exists());
    assert!(matches!(
        gt(2, 2, false).write(&dir.path().join("g.txt")),
        Err(DataError::UnsupportedFormat { .. })
    ));
}

#[test]
fn mismatched_distance_shape_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = gt(3, 2, true);
    g.dists = Some(Matrix::from_vec(vec![0.0; 4], 2).unwrap());
    assert!(g.write(&dir.path().join("x.ibin")).is_err());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_ground_truth_round_trips(
        (k, ids, dists) in (1usize..20, 1usize..30).prop_flat_map(|(k, q)| (
            Just(k),
            prop::collection::vec(0u32..=i32::MAX as u32, q * k),
            prop::collection::vec(-1e30f32..1e30, q * k),
        )),
        with_dists: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let g = GroundTruth {
            ids: Matrix::from_vec(ids, k).unwrap(),
            dists: with_dists.then(|| Matrix::from_vec(dists, k).unwrap()),
        };
        let ibin = dir.path().join("g.ibin");
        g.write(&ibin).unwrap();
        prop_assert_eq!(&GroundTruth::read(&ibin).unwrap(), &g);
        let ivecs = dir.path().join("g.ivecs");
        g.write(&ivecs).unwrap();
        let back = GroundTruth::read(&ivecs).unwrap();
        prop_assert_eq!(&back.ids, &g.ids);
        prop_assert!(back.dists.is_none());
    }
}

fn shared(name: &str) -> Option<std::path::PathBuf> {
    m3::testing::shared_data(name, &[])
}

#[test]
fn glove_ground_truth_has_10000_by_100_decreasing_inner_products() {
    let Some(dir) = shared("glove-50d") else {
        return;
    };
    let g =
        GroundTruth::read_with_dists(&dir.join("gt100.ip.ibin"), &dir.join("gt100.ip.dist.fbin"))
            .unwrap();
    assert_eq!((g.queries(), g.k()), (10_000, 100));
    let dists = g.dists.as_ref().unwrap();
    for q in [0, 1, 9_999] {
        let d = dists.row(q);
        assert!(
            d.windows(2).all(|w| w[0] >= w[1]),
            "query {q}: {:?}",
            &d[..5]
        );
    }
    // The first id and distance agree with the vectors themselves.
    let base = VectorFile::open(&dir.join("base.390K.fbin")).unwrap();
    let queries = VectorFile::open(&dir.join("query.10K.fbin")).unwrap();
    assert!(
        g.ids
            .as_slice()
            .iter()
            .all(|&id| u64::from(id) < base.rows())
    );
    let (mut q, mut b) = (Vec::new(), Vec::new());
    queries.read_rows_f32(0, 1, &mut q).unwrap();
    base.read_rows_f32(u64::from(g.ids.row(0)[0]), 1, &mut b)
        .unwrap();
    let ip: f32 = q.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!(
        (ip - dists.row(0)[0]).abs() < 1e-4,
        "{ip} vs {}",
        dists.row(0)[0]
    );
}

#[test]
fn sift5k_ground_truth_is_increasing_squared_l2() {
    let Some(dir) = shared("ngt-sift5k") else {
        return;
    };
    let g =
        GroundTruth::read_with_dists(&dir.join("gt100.l2.ibin"), &dir.join("gt100.l2.dist.fbin"))
            .unwrap();
    assert_eq!((g.queries(), g.k()), (3, 100));
    let dists = g.dists.as_ref().unwrap();
    for q in 0..3 {
        assert!(dists.row(q).windows(2).all(|w| w[0] <= w[1]), "query {q}");
    }
}
