//! `exact` against the ground truth shipped with the real data sets, and the `m3 gt` binary
//! end to end.

use std::path::PathBuf;
use std::process::Command;

use m3::data::{GroundTruth, Matrix, VectorFile};
use m3::distance::Metric;
use m3::exact::{ExactParams, exact_knn_file, recall_at_k, to_ground_truth};

fn dataset(name: &str) -> Option<PathBuf> {
    m3::testing::shared_data(name, &[])
}

/// Checks `got` against `want`: ids equal up to ties (a differing id must carry a distance
/// within 1e-5 of the expected one at that rank) and distances within 1e-5.
fn assert_matches_shipped(got: &GroundTruth, want: &GroundTruth, first_query: usize) {
    let want_d = want.dists.as_ref().expect("shipped distances");
    let got_d = got.dists.as_ref().expect("computed distances");
    let mut differing_ids = 0;
    for q in 0..got.queries() {
        let wq = first_query + q;
        for j in 0..got.k() {
            let (a, b) = (got_d.row(q)[j], want_d.row(wq)[j]);
            assert!(
                (a - b).abs() <= 1e-5,
                "query {wq} rank {j}: distance {a} vs {b}"
            );
            if got.ids.row(q)[j] != want.ids.row(wq)[j] {
                differing_ids += 1;
            }
        }
    }
    // Differing ids are only allowed as ties, which the distance check above already bounds;
    // they must stay rare.
    assert!(
        differing_ids * 100 <= got.queries() * got.k(),
        "{differing_ids} differing ids"
    );
}

#[test]
fn glove_ground_truth_is_reproduced() {
    let Some(dir) = dataset("glove-50d") else {
        return;
    };
    let base = VectorFile::open(&dir.join("base.390K.fbin")).unwrap();
    let queries = VectorFile::open(&dir.join("query.10K.fbin")).unwrap();
    // 400 queries spread over the file keep the test fast while covering the whole base.
    let first = 3000;
    let mut q = Vec::new();
    queries.read_rows_f32(first, 400, &mut q).unwrap();
    let q = Matrix::from_vec(q, queries.dim()).unwrap();
    let params = ExactParams::new(100, Metric::InnerProduct);
    let res = exact_knn_file(&base, q.view(), &params, &|_| {}).unwrap();
    let got = to_ground_truth(&res, 100, Metric::InnerProduct).unwrap();
    let want =
        GroundTruth::read_with_dists(&dir.join("gt100.ip.ibin"), &dir.join("gt100.ip.dist.fbin"))
            .unwrap();
    assert_matches_shipped(&got, &want, first as usize);
}

#[test]
fn sift5k_l2_ground_truth_is_reproduced_by_the_binary() {
    let Some(dir) = dataset("ngt-sift5k") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gt.ibin");
    let status = Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(["gt", "--metric", "l2", "--k", "100", "--threads", "2"])
        .arg("--base")
        .arg(dir.join("base.5K.fbin"))
        .arg("--queries")
        .arg(dir.join("query.3.fbin"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let got = GroundTruth::read(&out).unwrap();
    let want =
        GroundTruth::read_with_dists(&dir.join("gt100.l2.ibin"), &dir.join("gt100.l2.dist.fbin"))
            .unwrap();
    // SIFT distances are large integers stored as f32: compare relatively.
    let (gd, wd) = (got.dists.as_ref().unwrap(), want.dists.as_ref().unwrap());
    for q in 0..3 {
        for j in 0..100 {
            let (a, b) = (gd.row(q)[j], wd.row(q)[j]);
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "q{q} r{j}: {a} vs {b}"
            );
        }
    }
    let r = recall_at_k(got.ids.view(), Some(gd.view()), &want, 100, Metric::L2).unwrap();
    assert_eq!(r.mean, 1.0);
}

#[test]
fn gt_binary_reports_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("b.fbin");
    let queries = tmp.path().join("q.fbin");
    m3::data::format::write_matrix(&base, Matrix::from_vec(vec![1.0f32; 6], 3).unwrap().view())
        .unwrap();
    m3::data::format::write_matrix(
        &queries,
        Matrix::from_vec(vec![1.0f32, f32::NAN, 0.0], 3)
            .unwrap()
            .view(),
    )
    .unwrap();
    let run = |k: &str, q: &PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_m3"))
            .args(["gt", "--metric", "l2", "--k", k])
            .arg("--base")
            .arg(&base)
            .arg("--queries")
            .arg(q)
            .arg("--out")
            .arg(tmp.path().join("gt.ibin"))
            .output()
            .unwrap()
    };
    let out = run("1", &queries);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("q.fbin") && msg.contains("row 0") && msg.contains("component 1"),
        "{msg}"
    );
    let out = run("5", &base);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("k = 5 is larger than the 2 vectors"));
    assert!(!tmp.path().join("gt.ibin").exists(), "no output on failure");
}
