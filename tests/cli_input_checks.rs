//! The `m3` binary checks its inputs before any work, with a message that names the flag or
//! the file: `--ram-budget-gb`, `--gt` (missing, wrong format, too few rows, too small a k) in
//! every command that takes it, and vector files whose header overflows or that are longer
//! than their header says.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use m3::build::{BuildParams, Silent, build_index};
use m3::data::{DType, GroundTruth, Matrix};
use m3::distance::Metric;
use m3::synth::gauss::{GaussModel, GaussParams};
use m3::synth::{SplitSizes, WriteSpec, WrittenFiles, write_dataset};

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn gauss_set(dir: &Path) -> WrittenFiles {
    let model = GaussModel::new(
        GaussParams {
            dim: 16,
            clusters: 8,
            seed: 4,
            ..GaussParams::default()
        },
        SplitSizes {
            base: 800,
            queries: 20,
            training: 0,
        },
    )
    .unwrap();
    let spec = WriteSpec {
        out_dir: dir.to_path_buf(),
        dtype: DType::F32,
        batch_chunks: 4,
    };
    write_dataset(&model, &spec, &pool()).unwrap()
}

/// A small index with its queries.
fn small_index(dir: &Path) -> (PathBuf, WrittenFiles) {
    let set = gauss_set(&dir.join("data"));
    let out = dir.join("idx");
    let mut p = BuildParams::new(set.base.clone(), Metric::L2, out.clone());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(4);
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    build_index(&p, &pool(), &Silent).unwrap();
    (out, set)
}

fn m3(args: &[&OsStr]) -> (Output, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, stdout, stderr)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Ground truth of `rows` queries and `k` neighbours (ids only; values do not matter here).
fn write_gt(path: &Path, rows: usize, k: usize) {
    GroundTruth {
        ids: Matrix::from_vec((0..(rows * k) as u32).collect(), k).unwrap(),
        dists: None,
    }
    .write(path)
    .unwrap();
}

#[test]
fn cli_bad_ram_budget_is_refused_naming_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let set = gauss_set(&work.path().join("data"));
    let out = work.path().join("fresh");
    for budget in ["0", "-1", "NaN", "inf", "-0.5", "1e-30", "lots"] {
        let (o, _, stderr) = m3(&[
            os("build"),
            os("--base"),
            set.base.as_os_str(),
            os("--metric"),
            os("l2"),
            os("--out"),
            out.as_os_str(),
            os("--ram-budget-gb"),
            os(budget),
        ]);
        assert!(!o.status.success(), "{budget}: {stderr}");
        assert!(stderr.contains("--ram-budget-gb"), "{budget}: {stderr}");
        assert!(!stderr.contains("m3 build: scan"), "{budget}: {stderr}");
        assert!(!out.exists());
    }
}

/// A bad `--gt` fails before the search in `search`, `bench` and `tune`, naming the file and
/// what is wrong with it.
#[test]
fn cli_bad_gt_fails_before_the_search() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (index, set) = small_index(w);
    let missing = w.join("missing.ibin");
    let wrong_ext = set.base.clone(); // a vector file, not an id file
    let garbage = w.join("garbage.ibin");
    std::fs::write(&garbage, b"not a ground truth file").unwrap();
    let few_rows = w.join("few.ibin");
    write_gt(&few_rows, 5, 10);
    let small_k = w.join("small-k.ibin");
    write_gt(&small_k, 20, 5);
    let cases: [(&Path, &[&str]); 5] = [
        (&missing, &["missing.ibin", "No such file"]),
        (&wrong_ext, &["base.fbin", ".ibin or .ivecs"]),
        (&garbage, &["garbage.ibin"]),
        (&few_rows, &["few.ibin", "5 queries", "20 queries"]),
        (&small_k, &["small-k.ibin", "5 neighbours", "--k 10"]),
    ];
    for (gt, says) in cases {
        for cmd in ["search", "bench", "tune"] {
            let (o, stdout, stderr) = m3(&[
                os(cmd),
                os("--index"),
                index.as_os_str(),
                os("--queries"),
                set.queries.as_os_str(),
                os("--gt"),
                gt.as_os_str(),
                os("--k"),
                os("10"),
                os("--threads"),
                os("1"),
            ]);
            let what = format!("{cmd} --gt {}", gt.display());
            assert!(!o.status.success(), "{what}: {stderr}");
            for s in says {
                assert!(stderr.contains(s), "{what}: no {s:?} in {stderr}");
            }
            // No search ran: search prints its QPS, bench its plan, tune its table first.
            assert!(
                !stderr.contains("QPS") && !stderr.contains("points"),
                "{what}: {stderr}"
            );
            assert!(stdout.is_empty(), "{what}: {stdout}");
        }
    }
}

/// Vector file headers: counts that overflow 64-bit sizes, and files longer than the header
/// says, are reported as such and name the file, before any work.
#[test]
fn cli_vector_file_header_errors_name_the_file() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let set = gauss_set(&w.join("data"));
    let huge = w.join("huge.fbin");
    let mut bytes = vec![0xFFu8; 8];
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&huge, &bytes).unwrap();
    let longer = w.join("longer.fbin");
    let mut bytes = std::fs::read(&set.base).unwrap();
    bytes.extend_from_slice(&[0; 12]);
    std::fs::write(&longer, &bytes).unwrap();
    for (file, says) in [(&huge, "overflow"), (&longer, "12 trailing bytes beyond")] {
        let (o, _, stderr) = m3(&[
            os("build"),
            os("--base"),
            file.as_os_str(),
            os("--metric"),
            os("l2"),
            os("--out"),
            w.join("idx").as_os_str(),
        ]);
        assert!(!o.status.success(), "{stderr}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(name) && stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("truncated"), "{stderr}");
        assert!(!stderr.contains("m3 build: scan"), "{stderr}");
    }
}

/// An output file that is one of the command's inputs is refused before any work, and the
/// input is left as it was.
#[test]
fn cli_out_that_is_an_input_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (index, set) = small_index(w);
    let gt = w.join("gt.ibin");
    write_gt(&gt, 20, 10);
    let gt_bytes = std::fs::read(&gt).unwrap();
    let q_bytes = std::fs::read(&set.queries).unwrap();
    let search = |out: &Path| {
        m3(&[
            os("search"),
            os("--index"),
            index.as_os_str(),
            os("--queries"),
            set.queries.as_os_str(),
            os("--gt"),
            gt.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ])
    };
    let range = |out: &Path| {
        m3(&[
            os("range"),
            os("--index"),
            index.as_os_str(),
            os("--queries"),
            set.queries.as_os_str(),
            os("--radius"),
            os("1.0"),
            os("--out"),
            out.as_os_str(),
        ])
    };
    for (o, stdout, stderr) in [search(&gt), range(&set.queries)] {
        assert!(!o.status.success(), "{stderr}");
        assert!(
            stderr.contains("--out") && stderr.contains("input"),
            "{stderr}"
        );
        assert!(!stderr.contains("QPS") && stdout.is_empty(), "{stderr}");
    }
    assert_eq!(std::fs::read(&gt).unwrap(), gt_bytes);
    assert_eq!(std::fs::read(&set.queries).unwrap(), q_bytes);
}
