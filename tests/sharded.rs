//! Sharded indexes (docs/DISTRIBUTED.md): shards cut from an index of a generated cross-modal
//! set (training queries, so hints and query anchors are used) give the same recall as the
//! unsharded index at the same knobs, exact search equals brute force, every shard verifies,
//! and the shards' files are the same bytes whether the steps ran together or one by one.

use std::path::{Path, PathBuf};

use m3::build::{
    BuildParams, Silent, build_index, build_shards, plan_shards, publish_shards, shard_dir,
    write_shard,
};
use m3::data::{DType, Matrix, VectorFile};
use m3::distance::Metric;
use m3::io::{IoBackend, ReaderOptions};
use m3::search::{Index, SearchParams, Searcher, ShardedIndex};
use m3::synth::xmodal::{XmodalModel, XmodalParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

const DIM: usize = 32;
const K: usize = 10;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

struct Set {
    index: PathBuf,
    base: Matrix<f32>,
    queries: Matrix<f32>,
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
            base: 6000,
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
    let index = dir.join("index");
    let mut p = BuildParams::new(files.base.clone(), Metric::L2, index.clone());
    p.train_queries = files.training.clone();
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(8);
    p.pq.iters = 8;
    p.graph.max_degree = 16;
    p.graph.candidates = 32;
    p.routing.edges_per_anchor = 8;
    p.seed = 7;
    build_index(&p, &pool(), &Silent).unwrap();
    let read = |p: &Path| VectorFile::open(p).unwrap().read_all_f32().unwrap();
    Set {
        index,
        base: read(&files.base),
        queries: read(&files.queries),
    }
}

fn open() -> ReaderOptions {
    ReaderOptions::default()
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

fn params() -> SearchParams {
    let mut p = SearchParams::new(K);
    p.nprobe = 4;
    p.rerank = 40;
    p
}

/// Every file of every shard and `shards.m3`, by relative path.
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

#[test]
fn shards_answer_like_the_unsharded_index_and_their_bytes_do_not_depend_on_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let truth = truth(&set);
    let single = Index::open(&set.index, IoBackend::Pread, &open()).unwrap();
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
        let out = tmp.path().join(format!("sharded-{shards}"));
        let (table, summaries) = build_shards(&set.index, shards, 7, &out).unwrap();
        assert_eq!(table.n_shards(), shards);
        let records: u64 = summaries.iter().map(|s| s.records).sum();
        assert_eq!(
            records,
            single.meta().n_records,
            "every record in one shard"
        );
        for s in 0..shards {
            m3::verify(&shard_dir(&out, s)).unwrap();
        }
        let sharded = ShardedIndex::open(&out, IoBackend::Pread, &open()).unwrap();
        let mut searchers = sharded.searchers();
        let mut touched = 0u64;
        let answers: Vec<Vec<u32>> = (0..set.queries.rows())
            .map(|qi| {
                let (r, st) = sharded
                    .search(&mut searchers, qi, set.queries.row(qi), &p)
                    .unwrap();
                assert!(st.shards_touched >= 1 && st.shards_touched <= shards as u64);
                touched += st.shards_touched;
                r.into_iter().map(|n| n.id).collect()
            })
            .collect();
        let r = recall(&answers, &truth);
        eprintln!(
            "S = {shards}: recall@10 {r:.4} (unsharded {single_recall:.4}), shards touched per \
             query {:.2}",
            touched as f64 / set.queries.rows() as f64
        );
        if shards == 1 {
            assert_eq!(
                answers, single_answers,
                "one shard answers exactly as the index"
            );
        } else {
            // Each shard reranks its own best candidates, so the union read is a superset of
            // the unsharded index's first batch; the refinement step and the neighbour lists
            // cut at shard borders can still move a result either way.
            assert!(
                r >= single_recall - 0.01,
                "S = {shards}: recall {r} below the unsharded {single_recall} − 0.01"
            );
        }
        // Exact search over the shards is brute force.
        for (qi, want) in truth.iter().enumerate().take(20) {
            let (ex, _) = sharded.exact(set.queries.row(qi), K).unwrap();
            let ids: Vec<u32> = ex.iter().map(|n| n.id).collect();
            assert_eq!(&ids, want, "S = {shards}, query {qi}: exact ≠ brute force");
        }
    }
    // The same shards, one step at a time (as separate tasks would run them): same bytes.
    let apart = tmp.path().join("apart-3");
    let plan = plan_shards(&set.index, 3, 7).unwrap();
    std::fs::create_dir_all(&apart).unwrap();
    for s in (0..3).rev() {
        write_shard(&set.index, &plan, s, &shard_dir(&apart, s)).unwrap();
    }
    // A shard written twice (a retried task) is replaced by the same bytes.
    write_shard(&set.index, &plan, 1, &shard_dir(&apart, 1)).unwrap();
    publish_shards(&set.index, &plan, &apart).unwrap();
    assert_eq!(
        tree_bytes(&apart),
        tree_bytes(&tmp.path().join("sharded-3"))
    );
}

#[test]
fn a_shard_replaced_after_publication_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let out = tmp.path().join("sharded");
    build_shards(&set.index, 2, 7, &out).unwrap();
    // Shard 1 rewritten from another plan (three shards): shards.m3 no longer matches it.
    let plan = plan_shards(&set.index, 3, 7).unwrap();
    write_shard(&set.index, &plan, 1, &shard_dir(&out, 1)).unwrap();
    let e = ShardedIndex::open(&out, IoBackend::Pread, &open()).unwrap_err();
    assert!(e.to_string().contains("shard 1"), "{e}");
    let e = plan_shards(&set.index, 0, 7).unwrap_err();
    assert!(e.to_string().contains("shards"), "{e}");
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
fn the_cli_steps_in_separate_processes_write_the_bytes_of_one_run_and_search_verify_inspect_open_it()
 {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path());
    let together = tmp.path().join("together");
    let apart = tmp.path().join("apart");
    let os = |p: &Path| p.as_os_str().to_owned();
    let idx = os(&set.index);
    m3(&[
        "shard".as_ref(),
        "--index".as_ref(),
        &idx,
        "--out".as_ref(),
        &os(&together),
        "--shards".as_ref(),
        "4".as_ref(),
    ]);
    for s in ["3", "0", "2", "1"] {
        m3(&[
            "shard".as_ref(),
            "--index".as_ref(),
            &idx,
            "--out".as_ref(),
            &os(&apart),
            "--shards".as_ref(),
            "4".as_ref(),
            "--stage".as_ref(),
            "shard".as_ref(),
            "--shard".as_ref(),
            s.as_ref(),
        ]);
    }
    m3(&[
        "shard".as_ref(),
        "--index".as_ref(),
        &idx,
        "--out".as_ref(),
        &os(&apart),
        "--shards".as_ref(),
        "4".as_ref(),
        "--stage".as_ref(),
        "publish".as_ref(),
    ]);
    assert_eq!(tree_bytes(&apart), tree_bytes(&together));
    let out = m3(&["verify".as_ref(), &os(&apart)]);
    assert!(out.contains("ok: shards.m3 and 4 shards"), "{out}");
    let out = m3(&["inspect".as_ref(), &os(&apart)]);
    assert!(out.contains("4 shards, 6000 vectors"), "{out}");
    let queries = tmp.path().join("query.fbin");
    let out = m3(&[
        "search".as_ref(),
        "--index".as_ref(),
        &os(&apart),
        "--queries".as_ref(),
        &os(&queries),
        "--nprobe".as_ref(),
        "4".as_ref(),
    ]);
    assert!(out.contains("shards_touched = "), "{out}");
}
