//! The staged build (docs/DISTRIBUTED.md, "Stages"): train → assign row ranges → build each
//! shard from its runs → publish, on a generated cross-modal set (training queries, so hints
//! and query anchors are used). The shards' bytes do not depend on how the rows were split
//! or on a stage being run twice; every shard verifies; recall at S = 1, 3, 8 is within 0.01
//! of the single-machine index of the same seed; the CLI stages in separate processes write
//! the same bytes as the library in one.

use std::ops::Range;
use std::path::{Path, PathBuf};

use m3::build::{
    BuildParams, Silent, build_index, shard_dir, stage_assign, stage_publish, stage_shard,
    stage_train,
};
use m3::data::{DType, Matrix, VectorFile};
use m3::distance::Metric;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{Index, SearchParams, Searcher, ShardedIndex};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

const DIM: usize = 32;
const K: usize = 10;
const N: u64 = 6000;
/// The whole base as one row range (a one-element list of ranges, on purpose).
#[allow(clippy::single_range_in_vec_init)]
const ALL: [Range<u64>; 1] = [0..N];

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

struct Set {
    params: BuildParams,
    base: Matrix<f32>,
    queries: Matrix<f32>,
    queries_path: PathBuf,
}

fn small_set(dir: &Path) -> Set {
    let model = XmodalModel::new(
        XmodalParams {
            dim: DIM,
            clusters: 32,
            seed: 11,
            latent_dim: 12,
            ..XmodalParams::fashion_clip()
        },
        SplitSizes {
            base: N,
            queries: 200,
            training: 2000,
        },
    )
    .unwrap();
    let spec = WriteSpec {
        out_dir: dir.to_path_buf(),
        dtype: DType::F32,
        batch_chunks: 4,
    };
    let files = write_dataset(&model, &spec, &pool()).unwrap();
    let mut p = BuildParams::new(files.base.clone(), Metric::L2, dir.join("index"));
    p.train_queries = files.training.clone();
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(8);
    p.pq.iters = 8;
    p.graph.max_degree = 16;
    p.graph.candidates = 32;
    p.routing.edges_per_anchor = 8;
    p.seed = 7;
    let read = |p: &Path| VectorFile::open(p).unwrap().read_all_f32().unwrap();
    Set {
        params: p,
        base: read(&files.base),
        queries: read(&files.queries),
        queries_path: files.queries.clone(),
    }
}

/// Every stage in this process: train, assign `ranges` (in reverse order), each shard, publish.
fn staged(set: &Set, shards: usize, ranges: &[Range<u64>], work: &Path, out: &Path) {
    let pool = pool();
    stage_train(&set.params, shards, work, &pool, &Silent).unwrap();
    for r in ranges.iter().rev() {
        stage_assign(work, None, r.clone(), &pool, &Silent).unwrap();
    }
    for s in 0..shards {
        stage_shard(work, s, None, &pool, &Silent).unwrap();
    }
    stage_publish(work, out).unwrap();
}

fn truth(set: &Set) -> Vec<Vec<u32>> {
    m3::exact::exact_knn(set.base.view(), set.queries.view(), K, Metric::L2)
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|n| n.id).collect())
        .collect()
}

fn recall(answers: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let hits: usize = answers
        .iter()
        .zip(truth)
        .map(|(a, t)| a.iter().filter(|id| t.contains(id)).count())
        .sum();
    hits as f64 / (K * truth.len()) as f64
}

/// Knobs low enough that recall is not saturated on this set.
fn params() -> SearchParams {
    let mut p = SearchParams::new(K);
    p.nprobe = 1;
    p.rerank = 12;
    p.expand_rounds = 0;
    p
}

/// Every file under `root`, by relative path.
fn tree_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn sharded_recall(out: &Path, set: &Set, truth: &[Vec<u32>]) -> f64 {
    let sharded = ShardedIndex::open(out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let mut searchers = sharded.searchers();
    let p = params();
    let answers: Vec<Vec<u32>> = (0..set.queries.rows())
        .map(|qi| {
            let (r, _) = sharded
                .search(&mut searchers, qi, set.queries.row(qi), &p)
                .unwrap();
            r.into_iter().map(|n| n.id).collect()
        })
        .collect();
    // Exact search over the shards is brute force.
    for (qi, want) in truth.iter().enumerate().take(10) {
        let (ex, _) = sharded.exact(set.queries.row(qi), K).unwrap();
        let ids: Vec<u32> = ex.iter().map(|n| n.id).collect();
        assert_eq!(&ids, want, "query {qi}: exact ≠ brute force");
    }
    recall(&answers, truth)
}

#[test]
fn the_shards_do_not_depend_on_how_the_rows_were_split_or_on_a_stage_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let one = tmp.path().join("one");
    staged(&set, 3, &ALL, &tmp.path().join("work-1"), &one);
    // Four ranges whose borders fall inside the assign stage's chunks and the sort's order.
    let four = tmp.path().join("four");
    let work = tmp.path().join("work-4");
    let ranges = [0..1234, 1234..3001, 3001..4500, 4500..N];
    staged(&set, 3, &ranges, &work, &four);
    assert_eq!(tree_bytes(&one), tree_bytes(&four), "1 range vs 4 ranges");
    for s in 0..3 {
        m3::verify(&shard_dir(&four, s)).unwrap();
    }
    // A retried assign task and a retried shard task write the same bytes; publish again.
    let pool = pool();
    stage_assign(&work, None, 1234..3001, &pool, &Silent).unwrap();
    stage_shard(&work, 1, None, &pool, &Silent).unwrap();
    stage_publish(&work, &four).unwrap();
    assert_eq!(tree_bytes(&one), tree_bytes(&four), "after a retry");
    // A missing range is refused by name.
    let gap = tmp.path().join("work-gap");
    stage_train(&set.params, 2, &gap, &pool, &Silent).unwrap();
    stage_assign(&gap, None, 0..1000, &pool, &Silent).unwrap();
    stage_assign(&gap, None, 2000..N, &pool, &Silent).unwrap();
    let e = stage_shard(&gap, 0, None, &pool, &Silent).unwrap_err();
    assert!(e.to_string().contains("rows 1000..2000 have no run"), "{e}");
}

#[test]
fn staged_shards_recall_like_the_single_machine_index_of_the_same_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let truth = truth(&set);
    build_index(&set.params, &pool(), &Silent).unwrap();
    let single = Index::open(&set.params.out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let mut searcher = Searcher::new(&single);
    let p = params();
    let single_answers: Vec<Vec<u32>> = (0..set.queries.rows())
        .map(|qi| {
            let (r, _) = searcher.search(qi, set.queries.row(qi), &p).unwrap();
            r.into_iter().map(|n| n.id).collect()
        })
        .collect();
    let single_recall = recall(&single_answers, &truth);
    assert!(single_recall > 0.5, "unsharded recall {single_recall}");
    for shards in [1usize, 3, 8] {
        let out = tmp.path().join(format!("staged-{shards}"));
        let ranges = [0..2500, 2500..N];
        staged(
            &set,
            shards,
            &ranges,
            &tmp.path().join(format!("work-{shards}")),
            &out,
        );
        for s in 0..shards {
            m3::verify(&shard_dir(&out, s)).unwrap();
        }
        let r = sharded_recall(&out, &set, &truth);
        eprintln!("staged S = {shards}: recall@10 {r:.4} (single machine {single_recall:.4})");
        assert!(
            r >= single_recall - 0.01,
            "S = {shards}: recall {r} below the single-machine {single_recall} − 0.01"
        );
    }
}

fn m3(args: &[&std::ffi::OsStr]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "m3 {args:?} failed: {err}");
    String::from_utf8_lossy(&o.stdout).to_string() + &err
}

#[test]
fn the_cli_stages_in_separate_processes_write_the_bytes_of_the_library_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let mut set = small_set(tmp.path());
    set.params.pq.iters = 10; // the CLI's
    let lib = tmp.path().join("lib");
    staged(&set, 4, &ALL, &tmp.path().join("work-lib"), &lib);
    let os = |p: &Path| p.as_os_str().to_owned();
    let work = tmp.path().join("work-cli");
    let cli = tmp.path().join("cli");
    let p = &set.params;
    let train = p.train_queries.as_ref().unwrap();
    // The CLI reads the base as two files (rows 0..2500 and 2500..6000), repeated --base.
    let (a, b) = (tmp.path().join("cli-a.fbin"), tmp.path().join("cli-b.fbin"));
    m3::data::format::write_matrix(&a, set.base.view().slice_rows(0, 2500)).unwrap();
    m3::data::format::write_matrix(&b, set.base.view().slice_rows(2500, N as usize)).unwrap();
    m3(&[
        "build".as_ref(),
        "--stage".as_ref(),
        "train".as_ref(),
        "--base".as_ref(),
        &os(&a),
        "--base".as_ref(),
        &os(&b),
        "--train-queries".as_ref(),
        &os(train),
        "--metric".as_ref(),
        "l2".as_ref(),
        "--out".as_ref(),
        &os(&work),
        "--shards".as_ref(),
        "4".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--seed".as_ref(),
        "7".as_ref(),
        "--cluster-size".as_ref(),
        "64".as_ref(),
        "--pq-bytes".as_ref(),
        "8".as_ref(),
        "--degree".as_ref(),
        "16".as_ref(),
        "--candidates".as_ref(),
        "32".as_ref(),
        "--edges-per-anchor".as_ref(),
        "8".as_ref(),
    ]);
    for rows in ["3000..6000", "0..3000"] {
        m3(&[
            "build".as_ref(),
            "--stage".as_ref(),
            "assign".as_ref(),
            "--work".as_ref(),
            &os(&work),
            "--base".as_ref(),
            &os(&a),
            "--base".as_ref(),
            &os(&b),
            "--rows".as_ref(),
            rows.as_ref(),
            "--threads".as_ref(),
            "2".as_ref(),
        ]);
    }
    for s in ["2", "0", "3", "1"] {
        m3(&[
            "build".as_ref(),
            "--stage".as_ref(),
            "shard".as_ref(),
            "--work".as_ref(),
            &os(&work),
            "--shard".as_ref(),
            s.as_ref(),
            "--threads".as_ref(),
            "2".as_ref(),
        ]);
    }
    let out = m3(&[
        "build".as_ref(),
        "--stage".as_ref(),
        "publish".as_ref(),
        "--work".as_ref(),
        &os(&work),
        "--out".as_ref(),
        &os(&cli),
    ]);
    assert!(out.contains("published 4 shards"), "{out}");
    assert_eq!(tree_bytes(&cli), tree_bytes(&lib), "CLI stages vs library");
    let out = m3(&["verify".as_ref(), &os(&cli)]);
    assert!(out.contains("ok: shards.m3 and 4 shards"), "{out}");
    let out = m3(&[
        "search".as_ref(),
        "--index".as_ref(),
        &os(&cli),
        "--queries".as_ref(),
        &os(&set.queries_path),
        "--nprobe".as_ref(),
        "4".as_ref(),
    ]);
    assert!(out.contains("shards_touched = "), "{out}");
    // Exact, range and bench on the sharded index, from the command line.
    let gt = tmp.path().join("gt.ibin");
    m3(&[
        "gt".as_ref(),
        "--base".as_ref(),
        &os(&p.base),
        "--queries".as_ref(),
        &os(&set.queries_path),
        "--k".as_ref(),
        "10".as_ref(),
        "--metric".as_ref(),
        "l2".as_ref(),
        "--out".as_ref(),
        &os(&gt),
    ]);
    let index_args = |cmd: &str| -> Vec<std::ffi::OsString> {
        vec![
            cmd.into(),
            "--index".into(),
            os(&cli),
            "--queries".into(),
            os(&set.queries_path),
            "--threads".into(),
            "2".into(),
        ]
    };
    let run = |cmd: &str, extra: &[&str]| -> String {
        let mut args = index_args(cmd);
        args.extend(extra.iter().map(std::ffi::OsString::from));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        m3(&refs)
    };
    let out = run("search", &["--exact", "--gt", gt.to_str().unwrap()]);
    assert!(out.contains("recall@10 = 1.0000"), "{out}");
    let out = run("range", &["--radius", "1.0"]);
    assert!(
        out.contains("shards_touched = ") && out.contains("results: "),
        "{out}"
    );
    let gt_arg = gt.to_str().unwrap();
    let out = run("bench", &["--gt", gt_arg, "--sweep", "nprobe=2,4"]);
    assert_eq!(out.matches("shards touched").count(), 2, "{out}");
    let out = run("bench", &["--gt", gt_arg, "--exact", "--json"]);
    let point: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(point["recall_at_k"], 1.0, "{out}");
    assert!(
        point["mean_shards_touched"].as_f64().unwrap() <= 4.0,
        "{out}"
    );
    // What the staged build does not implement is refused, not ignored.
    for (flag, value) in [("--distance", "auto"), ("--ids", "ids.u64bin")] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_m3"))
            .args(["build", "--stage", "shard", "--shard", "0", "--work"])
            .arg(&work)
            .args([flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(flag), "{flag}: {err}");
    }
}

#[test]
fn two_base_files_give_the_shards_of_their_concatenation_and_mismatched_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let pool = pool();
    // The same rows in two files, 2,500 + 3,500.
    let (a, b) = (
        tmp.path().join("part-a.fbin"),
        tmp.path().join("part-b.fbin"),
    );
    m3::data::format::write_matrix(&a, set.base.view().slice_rows(0, 2500)).unwrap();
    m3::data::format::write_matrix(&b, set.base.view().slice_rows(2500, N as usize)).unwrap();
    let mut two = set.params.clone();
    two.base = a.clone();
    two.more_base = vec![b.clone()];
    let (work1, out1) = (tmp.path().join("work-1"), tmp.path().join("out-1"));
    staged(&set, 3, &ALL, &work1, &out1);
    let (work2, out2) = (tmp.path().join("work-2"), tmp.path().join("out-2"));
    stage_train(&two, 3, &work2, &pool, &Silent).unwrap();
    // Ranges that span the files' border (row 2500), and one given the paths again.
    let files = [a.clone(), b.clone()];
    stage_assign(&work2, None, 0..2000, &pool, &Silent).unwrap();
    stage_assign(&work2, Some(&files), 2000..4100, &pool, &Silent).unwrap();
    stage_assign(&work2, None, 4100..N, &pool, &Silent).unwrap();
    for s in 0..3 {
        stage_shard(&work2, s, None, &pool, &Silent).unwrap();
    }
    stage_publish(&work2, &out2).unwrap();
    assert_eq!(tree_bytes(&out1), tree_bytes(&out2));

    // A file of another dimension, or of another element type, is refused by name.
    let narrow = tmp.path().join("narrow.fbin");
    let rows: Vec<f32> = set.base.view().slice_rows(0, 10).as_slice()[..10 * (DIM - 1)].to_vec();
    m3::data::format::write_matrix(&narrow, Matrix::from_vec(rows, DIM - 1).unwrap().view())
        .unwrap();
    let bytes = tmp.path().join("bytes.u8bin");
    let u8rows = Matrix::from_vec(vec![1u8; 10 * DIM], DIM).unwrap();
    m3::data::format::write_matrix(&bytes, u8rows.view()).unwrap();
    for bad in [&narrow, &bytes] {
        let mut p = set.params.clone();
        p.more_base = vec![bad.clone()];
        let e = stage_train(&p, 3, &tmp.path().join("work-bad"), &pool, &Silent).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, m3::build::BuildError::Param { .. })
                && msg.contains(&bad.display().to_string()),
            "{msg}"
        );
    }
    // An assign task given another list of files than the model's is refused.
    let e = stage_assign(
        &work2,
        Some(std::slice::from_ref(&a)),
        0..10,
        &pool,
        &Silent,
    )
    .unwrap_err();
    assert!(e.to_string().contains("model was trained on"), "{e}");
}
