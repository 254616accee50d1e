//! Multi-vector objects and queries (DESIGN §4.6) end to end: exhaustive weighted search equals
//! the brute-force weighted ground truth for every non-empty subset of blocks, several weight
//! settings and every metric; typed errors for bad block inputs; a recall floor with the
//! default knobs; `blocks.m3` round trip, corruption and `verify`.

use std::path::{Path, PathBuf};

use m3::build::{BlockInput, BuildError, BuildParams, Silent, build_index};
use m3::data::{DType, DataError, GroundTruth};
use m3::distance::Metric;
use m3::exact::{Neighbor, recall_at_k, to_ground_truth};
use m3::format::{BlockInfo, BlockTable, FormatError};
use m3::io::{IoBackend, ReaderOptions};
use m3::multivec::{
    BlockError, BlockFiles, BlockQueries, WeightedKnnParams, base_spreads, internal_metric,
    weighted_exact_knn,
};
use m3::search::{
    BatchOptions, ExactParams, ExactQuery, ExactSearcher, Index, RerankDistance, SearchError,
    SearchParams, exact_batch, lccmd_weights, search_batch,
};
use m3::synth::multiblock::{MultiblockModel, MultiblockParams};
use m3::synth::{SplitSizes, WriteSpec, write_dataset};

const NAMES: [&str; 3] = ["img", "txt", "tag"];

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

/// Writes a multi-block set (blocks img/txt/tag at scales 1, 10, 100) under `dir/NAME/`.
fn generate(dir: &Path, n: u64, queries: u64, dims: &[usize]) -> Vec<(String, PathBuf, PathBuf)> {
    let model = MultiblockModel::new(
        MultiblockParams {
            dims: dims.to_vec(),
            scales: vec![1.0, 10.0, 100.0],
            concepts: 16,
            seed: 5,
            ..MultiblockParams::default()
        },
        SplitSizes {
            base: n,
            queries,
            training: 0,
        },
    )
    .unwrap();
    (0..dims.len())
        .map(|b| {
            let spec = WriteSpec {
                out_dir: dir.join(NAMES[b]),
                dtype: DType::F32,
                batch_chunks: 2,
            };
            let f = write_dataset(&model.block(b), &spec, &pool()).unwrap();
            (NAMES[b].to_string(), f.base, f.queries)
        })
        .collect()
}

fn build(
    files: &[(String, PathBuf, PathBuf)],
    weights: &[f32],
    metric: Metric,
    out: &Path,
    standardize: bool,
) -> Result<m3::build::BuildSummary, BuildError> {
    let blocks = files
        .iter()
        .zip(weights)
        .map(|((name, base, _), &weight)| BlockInput {
            name: name.clone(),
            path: base.clone(),
            weight,
        })
        .collect();
    let mut p = BuildParams::with_blocks(blocks, metric, out.to_path_buf());
    p.blocks.as_mut().unwrap().standardize = standardize;
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(8);
    p.pq.train_rows = 2048;
    p.pq.iters = 4;
    p.graph.max_degree = 12;
    p.graph.candidates = 24;
    build_index(&p, &pool(), &Silent)
}

/// Query files of the blocks in `subset`.
fn query_files(files: &[(String, PathBuf, PathBuf)], subset: &[usize]) -> Vec<(String, PathBuf)> {
    subset
        .iter()
        .map(|&b| (files[b].0.clone(), files[b].2.clone()))
        .collect()
}

fn base_files(files: &[(String, PathBuf, PathBuf)]) -> Vec<(String, PathBuf)> {
    files
        .iter()
        .map(|(n, b, _)| (n.clone(), b.clone()))
        .collect()
}

/// Exact weighted ground truth (natural units).
fn weighted_gt(
    files: &[(String, PathBuf, PathBuf)],
    queries: &BlockQueries,
    weights: &[f32],
    metric: Metric,
    k: usize,
) -> GroundTruth {
    let base = BlockFiles::open(&base_files(files)).unwrap();
    let spreads = base_spreads(&base, metric).unwrap();
    let p = WeightedKnnParams {
        weights,
        spreads: &spreads,
        metric,
        k,
        chunk_rows: 97,
    };
    let res = pool().install(|| weighted_exact_knn(&base, queries, &p, &|_| {}).unwrap());
    to_ground_truth(&res, k, internal_metric(metric)).unwrap()
}

fn open(dir: &Path) -> Index {
    Index::open(dir, IoBackend::Pread, &ReaderOptions::default()).unwrap()
}

/// Results equal the ground truth: the same distances rank by rank (relative 1e-4), and every
/// returned id is a true neighbour or ties the k-th true distance.
fn assert_exact(results: &[Vec<Neighbor>], gt: &GroundTruth, metric: Metric, what: &str) {
    let k = gt.k();
    let dists = gt.dists.as_ref().unwrap();
    for (q, r) in results.iter().enumerate() {
        assert_eq!(r.len(), k, "{what}: query {q}");
        let truth = gt.ids.row(q);
        let kth = dists.row(q)[k - 1];
        for (j, n) in r.iter().enumerate() {
            let got = metric.to_natural(n.dist);
            let want = dists.row(q)[j];
            let tol = 1e-4 * want.abs().max(kth.abs()).max(1e-3);
            assert!(
                (got - want).abs() <= tol,
                "{what}: query {q} rank {j}: distance {got}, brute force {want}"
            );
            assert!(
                truth.contains(&n.id) || (got - kth).abs() <= tol,
                "{what}: query {q}: id {} is not among the true neighbours",
                n.id
            );
        }
    }
}

fn subsets(n: usize) -> Vec<Vec<usize>> {
    (1..(1u32 << n))
        .map(|mask| (0..n).filter(|&b| mask & (1 << b) != 0).collect())
        .collect()
}

/// Exhaustive search (every cluster, every record reranked) returns the brute-force weighted
/// top-k for every non-empty subset of blocks and several weight settings, for l2, ip and
/// cosine, standardised or not.
#[test]
fn multivector_exhaustive_search_equals_weighted_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 700, 12, &[8, 6, 4]);
    let k = 10;
    for (metric, build_w, standardize) in [
        (Metric::L2, [1.0, 1.0, 1.0], true),
        (Metric::L2, [1.0, 2.0, 0.5], false),
        (Metric::InnerProduct, [1.0, 1.0, 1.0], true),
        (Metric::Cosine, [2.0, 1.0, 1.0], true),
    ] {
        let out = tmp.path().join(format!("idx-{metric}-{standardize}"));
        build(&files, &build_w, metric, &out, standardize).unwrap();
        let index = open(&out);
        let table = index.blocks().expect("a multi-vector index has blocks");
        assert_eq!(table.blocks.len(), 3);
        assert_eq!(table.standardized, standardize);
        let layout = table.layout();
        let mut params = SearchParams::new(k);
        params.nprobe = index.n_clusters();
        params.qprobe = 0;
        params.rerank = index.meta().n_records as usize;
        for subset in subsets(3) {
            let queries = BlockQueries::read(&layout, &query_files(&files, &subset), None).unwrap();
            let weight_sets: Vec<Vec<(String, f32)>> = vec![
                vec![],
                subset
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| (NAMES[b].to_string(), [3.0, 0.25, 1.5][i]))
                    .collect(),
            ];
            for given in &weight_sets {
                let w = index.block_weights(given, &queries.present).unwrap();
                let what =
                    format!("{metric} std={standardize} blocks {subset:?} weights {given:?}");
                params.block_weights = Some(w.clone());
                let res = search_batch(
                    &index,
                    queries.rows.view(),
                    &params,
                    &pool(),
                    &BatchOptions::default(),
                )
                .unwrap();
                let gt = weighted_gt(&files, &queries, &w, metric, k);
                assert_exact(&res.results, &gt, metric, &what);
            }
        }
        // A full concatenated query with the build weights takes the single-vector path.
        let all = BlockQueries::read(&layout, &query_files(&files, &[0, 1, 2]), None).unwrap();
        params.block_weights = None;
        let res = search_batch(
            &index,
            all.rows.view(),
            &params,
            &pool(),
            &BatchOptions::default(),
        )
        .unwrap();
        let gt = weighted_gt(&files, &all, &build_w, metric, k);
        assert_exact(&res.results, &gt, metric, &format!("{metric}: full query"));
    }
}

/// Exact k-NN by metric pruning (DESIGN §4.5) on a multi-vector index returns the weighted
/// brute-force top-k for every subset of blocks and weight setting, for l2 (standardised or
/// not), ip and cosine; range search returns exactly the vectors within a radius (the 5th true
/// distance of each query).
#[test]
fn multivector_exact_and_range_equal_weighted_brute_force() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 900, 8, &[8, 6, 4]);
    let k = 10;
    for (metric, build_w, standardize) in [
        (Metric::L2, [1.0, 1.0, 1.0], true),
        (Metric::L2, [1.0, 2.0, 0.5], false),
        (Metric::InnerProduct, [1.0, 1.0, 1.0], true),
        (Metric::Cosine, [2.0, 1.0, 1.0], true),
    ] {
        let out = tmp.path().join(format!("idx-{metric}-{standardize}"));
        build(&files, &build_w, metric, &out, standardize).unwrap();
        let index = open(&out);
        let layout = index.blocks().unwrap().layout();
        let mut searcher = ExactSearcher::new(&index);
        for subset in subsets(3) {
            let queries = BlockQueries::read(&layout, &query_files(&files, &subset), None).unwrap();
            let weight_sets: Vec<Vec<(String, f32)>> = vec![
                vec![],
                subset
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| (NAMES[b].to_string(), [0.3, 4.0, 1.5][i]))
                    .collect(),
            ];
            for given in &weight_sets {
                let w = index.block_weights(given, &queries.present).unwrap();
                let what =
                    format!("{metric} std={standardize} blocks {subset:?} weights {given:?}");
                let res = exact_batch(
                    &index,
                    queries.rows.view(),
                    ExactQuery::Knn(k),
                    Some(&w),
                    ExactParams::default(),
                    &pool(),
                )
                .unwrap();
                let gt = weighted_gt(&files, &queries, &w, metric, k);
                assert_exact(&res.results, &gt, metric, &format!("exact {what}"));
                // Range: the radius is each query's 5th true distance (natural units).
                searcher.set_block_weights(Some(&w)).unwrap();
                let dists = gt.dists.as_ref().unwrap();
                for q in 0..queries.rows.rows() {
                    let radius = dists.row(q)[4];
                    let r_int = metric.from_natural(radius);
                    let tol = 1e-4 * r_int.abs().max(1e-3);
                    let (found, _) = searcher.range(queries.rows.row(q), radius).unwrap();
                    for n in &found {
                        assert!(
                            n.dist <= r_int + tol,
                            "range {what}: query {q}: id {} at {} beyond {r_int}",
                            n.id,
                            n.dist
                        );
                    }
                    for (j, &id) in gt.ids.row(q).iter().enumerate() {
                        let d = metric.from_natural(dists.row(q)[j]);
                        if d < r_int - tol {
                            assert!(
                                found.iter().any(|n| n.id == id),
                                "range {what}: query {q}: id {id} at {d} within {r_int} missing"
                            );
                        }
                    }
                }
            }
        }
        // Weights are checked against the index.
        let err = searcher.set_block_weights(Some(&[1.0, 1.0])).unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::Param {
                    name: "block_weights",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

/// LC-CMD (DESIGN §4.3) composes with query block weights: an exhaustive search with the
/// LC-CMD rerank returns the brute-force top-k of `Σ_b ω_b Σ_{k∈b} u_k (q'_k − x'_k)²` on the
/// stored coordinates (`x'_b = c_b x_b`, `ω_b = w_b / (σ_b² c_b²)`), computed here from the
/// block files, and with β = 0 (u = 1) it ranks exactly as the native weighted distance.
#[test]
fn multivector_lccmd_composes_with_query_block_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 800, 60, &[8, 6, 4]);
    let all_blocks = BlockQueries::read(
        &m3::multivec::BlockLayout::new(&[("img", 8), ("txt", 6), ("tag", 4)]).unwrap(),
        &query_files(&files, &[0, 1, 2]),
        None,
    )
    .unwrap();
    let train = tmp.path().join("train.fbin");
    m3::data::format::write_matrix(&train, all_blocks.rows.view()).unwrap();
    let out = tmp.path().join("idx");
    let blocks = files
        .iter()
        .map(|(name, base, _)| BlockInput {
            name: name.clone(),
            path: base.clone(),
            weight: 1.0,
        })
        .collect();
    let mut p = BuildParams::with_blocks(blocks, Metric::L2, out.clone());
    p.train_queries = Some(train);
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(8);
    p.pq.train_rows = 2048;
    p.graph.max_degree = 12;
    build_index(&p, &pool(), &Silent).unwrap();
    let index = open(&out);
    let table = index.blocks().unwrap();
    let layout = table.layout();
    let (spreads, scales) = (table.spreads(), table.scales());
    let subset = [0usize, 2];
    let queries = BlockQueries::read(&layout, &query_files(&files, &subset), None).unwrap();
    let w = index
        .block_weights(
            &[("img".into(), 3.0), ("tag".into(), 0.5)],
            &queries.present,
        )
        .unwrap();
    let omega = m3::multivec::scale::query_factors(&spreads, &scales, &w);
    let base = BlockFiles::open(&base_files(&files)).unwrap();
    let x = base.read_rows_f32(0, base.rows() as usize).unwrap();
    let k = 10;
    let mut params = SearchParams::new(k);
    params.nprobe = index.n_clusters();
    params.qprobe = 0;
    params.rerank = index.meta().n_records as usize;
    params.block_weights = Some(w.clone());
    for (alpha, beta) in [(0.5, 1.0), (1.0, 0.0)] {
        params.distance = RerankDistance::LcCmd { alpha, beta };
        let u = lccmd_weights(index.stats(), alpha, beta).unwrap();
        let res = search_batch(
            &index,
            queries.rows.view(),
            &params,
            &pool(),
            &BatchOptions::default(),
        )
        .unwrap();
        for (qi, got) in res.results.iter().enumerate() {
            let q = queries.rows.row(qi);
            let mut truth: Vec<(f32, u32)> = (0..x.rows())
                .map(|id| {
                    let xr = x.row(id);
                    let d: f32 = subset
                        .iter()
                        .map(|&b| {
                            let c = scales[b];
                            let part: f32 = layout
                                .range(b)
                                .map(|j| u[j] * (c * q[j] - c * xr[j]).powi(2))
                                .sum();
                            omega[b] * part
                        })
                        .sum();
                    (d, id as u32)
                })
                .collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            let kth = truth[k - 1].0;
            for (j, n) in got.iter().enumerate() {
                let want = truth[j].0;
                let tol = 1e-3 * want.abs().max(1e-3);
                assert!(
                    (n.dist - want).abs() <= tol,
                    "α {alpha} β {beta}: query {qi} rank {j}: {} vs brute force {want}",
                    n.dist
                );
                assert!(
                    truth[..k].iter().any(|t| t.1 == n.id) || (n.dist - kth).abs() <= tol,
                    "α {alpha} β {beta}: query {qi}: id {} not among the true neighbours",
                    n.id
                );
            }
        }
        if beta == 0.0 {
            // u = 1: the same ranking as the native weighted distance.
            params.distance = RerankDistance::Native;
            let native = search_batch(
                &index,
                queries.rows.view(),
                &params,
                &pool(),
                &BatchOptions::default(),
            )
            .unwrap();
            for (a, b) in res.results.iter().zip(&native.results) {
                let ia: Vec<u32> = a.iter().map(|n| n.id).collect();
                let ib: Vec<u32> = b.iter().map(|n| n.id).collect();
                assert_eq!(ia, ib, "β = 0 must rank as the native weighted distance");
            }
        }
    }
}

/// What per-block standardisation buys (DESIGN §4.6; BENCHMARKS "Multi-vector objects"):
/// with blocks at scales 1 / 10 / 100, an index built on the raw scales organises its clusters
/// and PQ residuals by the largest block, so at a small nprobe its recall@10 of the weighted
/// (standardised) ground truth falls well below the standardised index's.
#[test]
fn multivector_standardisation_gains_recall_at_small_nprobe() {
    let tmp = tempfile::tempdir().unwrap();
    let dims = [32, 24, 16];
    let model = MultiblockModel::new(
        MultiblockParams {
            dims: dims.to_vec(),
            scales: vec![1.0, 10.0, 100.0],
            concepts: 64,
            seed: 11,
            ..MultiblockParams::default()
        },
        SplitSizes {
            base: 8000,
            queries: 200,
            training: 0,
        },
    )
    .unwrap();
    let files: Vec<(String, PathBuf, PathBuf)> = (0..dims.len())
        .map(|b| {
            let spec = WriteSpec {
                out_dir: tmp.path().join(NAMES[b]),
                dtype: DType::F32,
                batch_chunks: 2,
            };
            let f = write_dataset(&model.block(b), &spec, &pool()).unwrap();
            (NAMES[b].to_string(), f.base, f.queries)
        })
        .collect();
    let mut recall = Vec::new();
    for standardize in [true, false] {
        let out = tmp.path().join(format!("idx-{standardize}"));
        let blocks = files
            .iter()
            .map(|(name, base, _)| BlockInput {
                name: name.clone(),
                path: base.clone(),
                weight: 1.0,
            })
            .collect();
        let mut p = BuildParams::with_blocks(blocks, Metric::L2, out.clone());
        p.blocks.as_mut().unwrap().standardize = standardize;
        p.pq.train_rows = 4096;
        p.pq.iters = 6;
        build_index(&p, &pool(), &Silent).unwrap();
        let index = open(&out);
        let layout = index.blocks().unwrap().layout();
        let queries = BlockQueries::read(&layout, &query_files(&files, &[0, 1, 2]), None).unwrap();
        let w = index.block_weights(&[], &queries.present).unwrap();
        let mut params = SearchParams::new(10);
        params.nprobe = 4;
        params.qprobe = 0;
        params.rerank = 40;
        params.block_weights = Some(w.clone());
        let res = search_batch(
            &index,
            queries.rows.view(),
            &params,
            &pool(),
            &BatchOptions::default(),
        )
        .unwrap();
        let gt = weighted_gt(&files, &queries, &w, Metric::L2, 10);
        let table = m3::search::results_table(&res.results, &params, Metric::L2).unwrap();
        let r = recall_at_k(
            table.ids.view(),
            table.dists.as_ref().map(|d| d.view()),
            &gt,
            10,
            Metric::L2,
        )
        .unwrap();
        eprintln!("standardize {standardize}: recall@10 {:.4}", r.mean);
        recall.push(r.mean);
    }
    assert!(
        recall[0] >= recall[1] + 0.05,
        "standardised {:.3} vs raw scales {:.3}: the gain is gone",
        recall[0],
        recall[1]
    );
}

/// Default knobs on a larger generated set (blocks at scales 1, 10, 100): recall@10 of the
/// weighted ground truth stays above a floor for all blocks and for a subset.
#[test]
fn multivector_recall_floor_with_default_knobs() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 6000, 100, &[32, 24, 16]);
    let out = tmp.path().join("idx");
    let blocks = files
        .iter()
        .map(|(name, base, _)| BlockInput {
            name: name.clone(),
            path: base.clone(),
            weight: 1.0,
        })
        .collect();
    let mut p = BuildParams::with_blocks(blocks, Metric::L2, out.clone());
    p.pq.train_rows = 4096;
    p.pq.iters = 6;
    build_index(&p, &pool(), &Silent).unwrap();
    let index = open(&out);
    let layout = index.blocks().unwrap().layout();
    for (subset, floor) in [(vec![0, 1, 2], 0.9), (vec![0, 2], 0.9)] {
        let queries = BlockQueries::read(&layout, &query_files(&files, &subset), None).unwrap();
        let w = index.block_weights(&[], &queries.present).unwrap();
        let mut params = SearchParams::new(10);
        params.block_weights = Some(w.clone());
        let res = search_batch(
            &index,
            queries.rows.view(),
            &params,
            &pool(),
            &BatchOptions::default(),
        )
        .unwrap();
        let gt = weighted_gt(&files, &queries, &w, Metric::L2, 10);
        let table = m3::search::results_table(&res.results, &params, Metric::L2).unwrap();
        let r = recall_at_k(
            table.ids.view(),
            table.dists.as_ref().map(|d| d.view()),
            &gt,
            10,
            Metric::L2,
        )
        .unwrap();
        eprintln!("blocks {subset:?}: recall@10 {:.4}", r.mean);
        assert!(
            r.mean >= floor,
            "blocks {subset:?}: recall@10 {} < {floor}",
            r.mean
        );
    }
}

/// Bad inputs give typed errors naming the file, block or weight.
#[test]
fn multivector_bad_inputs_give_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 300, 5, &[4, 3, 2]);
    // A block file with other rows.
    let other = generate(&tmp.path().join("other"), 200, 5, &[4, 3, 2]);
    let mut mixed = files.clone();
    mixed[1] = other[1].clone();
    let err = build(&mixed, &[1.0; 3], Metric::L2, &tmp.path().join("x"), true).unwrap_err();
    match &err {
        BuildError::Block(BlockError::RowCount {
            block,
            path,
            found: 200,
            expected: 300,
            ..
        }) => {
            assert_eq!(block, "txt");
            assert_eq!(path, &other[1].1);
        }
        e => panic!("expected RowCount, got {e:?}"),
    }
    assert!(!tmp.path().join("x").exists());
    // A missing block file.
    let mut missing = files.clone();
    missing[2].1 = tmp.path().join("nope.fbin");
    let err = build(&missing, &[1.0; 3], Metric::L2, &tmp.path().join("x"), true).unwrap_err();
    assert!(
        matches!(&err, BuildError::Block(BlockError::Data(DataError::Io { path, .. })) if path.ends_with("nope.fbin")),
        "{err:?}"
    );
    // Build weights must be > 0 and finite.
    for bad in [0.0, -1.0, f32::NAN] {
        let err = build(
            &files,
            &[1.0, bad, 1.0],
            Metric::L2,
            &tmp.path().join("x"),
            true,
        )
        .unwrap_err();
        assert!(
            matches!(&err, BuildError::Block(BlockError::BadWeight { block, .. }) if block == "txt"),
            "{err:?}"
        );
    }

    let out = tmp.path().join("idx");
    build(&files, &[1.0; 3], Metric::L2, &out, true).unwrap();
    let index = open(&out);
    let layout = index.blocks().unwrap().layout();
    // Unknown query block, wrong query-block dimension, repeated block.
    let err =
        BlockQueries::read(&layout, &[("audio".into(), files[0].2.clone())], None).unwrap_err();
    assert!(
        matches!(&err, BlockError::UnknownBlock { name, .. } if name == "audio"),
        "{err:?}"
    );
    let err = BlockQueries::read(&layout, &[("img".into(), files[1].2.clone())], None).unwrap_err();
    assert!(
        matches!(&err, BlockError::BlockDim { block, expected: 4, found: 3, .. } if block == "img"),
        "{err:?}"
    );
    let twice = [
        ("img".into(), files[0].2.clone()),
        ("img".into(), files[0].2.clone()),
    ];
    assert!(matches!(
        BlockQueries::read(&layout, &twice, None),
        Err(BlockError::DuplicateBlock { .. })
    ));
    let err = BlockQueries::read(&layout, &[], None).unwrap_err();
    assert!(matches!(err, BlockError::NoBlocks(_)), "{err:?}");
    // Negative, NaN and unknown weights; a weight for a block without a query.
    let present = [true, true, false];
    for bad in [-0.5, f32::NAN, f32::INFINITY] {
        let err = index
            .block_weights(&[("img".into(), bad)], &present)
            .unwrap_err();
        assert!(
            matches!(&err, SearchError::Block(BlockError::BadWeight { block, .. }) if block == "img"),
            "{err:?}"
        );
    }
    assert!(matches!(
        index.block_weights(&[("audio".into(), 1.0)], &present),
        Err(SearchError::Block(BlockError::UnknownBlock { .. }))
    ));
    assert!(matches!(
        index.block_weights(&[("tag".into(), 1.0)], &present),
        Err(SearchError::Param {
            name: "block_weights",
            ..
        })
    ));
    // Weights given straight in the parameters are checked too.
    let q = BlockQueries::read(&layout, &[("img".into(), files[0].2.clone())], None).unwrap();
    for (w, what) in [
        (vec![1.0, 1.0], "length"),
        (vec![0.0, 0.0, 0.0], "all zero"),
        (vec![1.0, -1.0, 0.0], "negative"),
    ] {
        let mut p = SearchParams::new(5);
        p.block_weights = Some(w);
        let err =
            search_batch(&index, q.rows.view(), &p, &pool(), &BatchOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::Param {
                    name: "block_weights",
                    ..
                }
            ),
            "{what}: {err:?}"
        );
    }
    // Block weights on a single-vector index.
    let single = tmp.path().join("single");
    let mut p = BuildParams::new(files[0].1.clone(), Metric::L2, single.clone());
    p.clusters.target_size = 64;
    build_index(&p, &pool(), &Silent).unwrap();
    let s = open(&single);
    assert!(s.blocks().is_none());
    assert!(matches!(
        s.block_weights(&[], &[true]),
        Err(SearchError::Param {
            name: "block_weights",
            ..
        })
    ));
}

/// `blocks.m3` round-trips, every header byte flipped and every truncation is a typed error,
/// and `verify` checks it in a built index.
#[test]
fn multivector_blocks_file_round_trip_corruption_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let t = BlockTable {
        standardized: true,
        blocks: vec![
            BlockInfo {
                name: "img".into(),
                dim: 5,
                spread: 2.5,
                weight: 1.0,
                scale: 0.4,
            },
            BlockInfo {
                name: "txt-2".into(),
                dim: 3,
                spread: 120.0,
                weight: 2.0,
                scale: 2f32.sqrt() / 120.0,
            },
        ],
    };
    let path = tmp.path().join("blocks.m3");
    let entry = t.write(&path).unwrap();
    assert_eq!(BlockTable::read(&path).unwrap(), t);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(entry.bytes, bytes.len() as u64);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        std::fs::write(&path, &b).unwrap();
        if i < 56 {
            // Header bytes are covered by the header CRC.
            assert!(
                BlockTable::read(&path).is_err(),
                "flipped header byte {i} accepted"
            );
        } else {
            // Table bytes: a typed error or a valid table, never a panic.
            let _ = BlockTable::read(&path);
        }
    }
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert!(
            BlockTable::read(&path).is_err(),
            "truncated to {len} accepted"
        );
    }
    // Invalid tables are refused on write.
    let mut bad = t.clone();
    bad.blocks[1].spread = 0.0;
    assert!(matches!(bad.write(&path), Err(FormatError::Invalid { .. })));

    // In an index: verify passes, a corrupted blocks.m3 is named.
    let files = generate(tmp.path(), 300, 5, &[4, 3, 2]);
    let out = tmp.path().join("idx");
    build(&files, &[1.0; 3], Metric::L2, &out, true).unwrap();
    m3::format::verify(&out).unwrap();
    let info = m3::format::IndexInfo::gather(&out).unwrap();
    assert_eq!(info.blocks.as_ref().unwrap().blocks.len(), 3);
    let bp = out.join("blocks.m3");
    let mut b = std::fs::read(&bp).unwrap();
    let last = b.len() - 8;
    b[last] ^= 1;
    std::fs::write(&bp, &b).unwrap();
    let err = m3::format::verify(&out).unwrap_err();
    assert!(err.to_string().contains("blocks.m3"), "{err}");
}

fn m3_cli(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI on a multi-vector index: `m3 search --exact` and `m3 range` take `--query-block` and
/// `--weight` (exact: recall 1 against `m3 gt --block`), and `m3 tune` prints a command line
/// with the block queries and weights it was tuned on.
#[test]
fn multivector_cli_exact_range_and_tune() {
    use std::ffi::OsStr;
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 1500, 20, &[8, 6, 4]);
    let arg = |s: String| -> std::ffi::OsString { s.into() };
    let block_flags: Vec<std::ffi::OsString> = files
        .iter()
        .flat_map(|(n, b, _)| [arg("--block".into()), arg(format!("{n}={}", b.display()))])
        .collect();
    // Blocks img and tag, img weighted 2.
    let query_flags: Vec<std::ffi::OsString> = [0, 2]
        .iter()
        .flat_map(|&i| {
            let (n, _, q) = &files[i];
            [
                arg("--query-block".into()),
                arg(format!("{n}={}", q.display())),
            ]
        })
        .chain([arg("--weight".into()), arg("img=2".into())])
        .collect();
    let idx = tmp.path().join("idx");
    let gt = tmp.path().join("gt.ibin");
    let with = |head: &[&str], tail: &[std::ffi::OsString]| -> Vec<std::ffi::OsString> {
        head.iter()
            .map(|s| arg(s.to_string()))
            .chain(tail.iter().cloned())
            .collect()
    };
    let run = |v: Vec<std::ffi::OsString>| {
        let refs: Vec<&OsStr> = v.iter().map(|s| s.as_os_str()).collect();
        let r = m3_cli(&refs);
        assert!(r.0, "m3 {v:?}\n{}\n{}", r.1, r.2);
        r
    };
    let mut b = with(
        &["build", "--metric", "l2", "--cluster-size", "64"],
        &block_flags,
    );
    b.extend([arg("--out".into()), idx.clone().into_os_string()]);
    run(b);
    let mut g = with(&["gt", "--metric", "l2", "--k", "10"], &block_flags);
    g.extend(query_flags.iter().cloned());
    g.extend([arg("--out".into()), gt.clone().into_os_string()]);
    run(g);
    let index_flags = [arg("--index".into()), idx.clone().into_os_string()];
    let gt_flags = [arg("--gt".into()), gt.clone().into_os_string()];
    // Exact search: recall 1 by construction.
    let mut s = with(
        &["search", "--exact", "--k", "10", "--io", "pread"],
        &index_flags,
    );
    s.extend(query_flags.iter().cloned());
    s.extend(gt_flags.iter().cloned());
    let (_, stdout, _) = run(s);
    assert!(stdout.contains("recall@10 = 1.0000"), "{stdout}");
    // Range search with a huge radius returns every object for every query.
    let out = tmp.path().join("range.bin");
    let mut r = with(
        &["range", "--radius", "1e30", "--io", "pread"],
        &index_flags,
    );
    r.extend(query_flags.iter().cloned());
    r.extend([arg("--out".into()), out.clone().into_os_string()]);
    run(r);
    let res = m3::data::RangeResults::read(&out).unwrap();
    assert_eq!(res.counts.len(), 20);
    assert!(res.counts.iter().all(|&c| c == 1500), "{:?}", res.counts);
    // Tune prints the block queries and the weight.
    let mut t = with(
        &["tune", "--k", "10", "--target-recall", "0.8"],
        &index_flags,
    );
    t.extend(query_flags.iter().cloned());
    t.extend(gt_flags.iter().cloned());
    let (_, stdout, _) = run(t);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("m3 search "))
        .unwrap_or_else(|| panic!("no command line in {stdout}"));
    assert!(
        line.contains("--query-block img=QUERIES_IMG --query-block tag=QUERIES_TAG --weight img=2")
            && !line.contains("--queries"),
        "{line}"
    );
}

/// Weighted multi-vector queries refine under inner product (decision 0008's second code, over
/// the present blocks' subspaces): with `rerank` = k, re-ranking 200 candidates by both codes
/// before the reads finds more of the weighted top-10 than the first code alone, and the
/// refined answers never lose to the unrefined ones by more than noise. Under L2 a weighted
/// query does not refine (its first estimate uses per-block corrections).
#[test]
fn multivector_weighted_queries_refine_under_inner_product() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 6000, 200, &[32, 24, 16]);
    for metric in [Metric::InnerProduct, Metric::L2] {
        let out = tmp.path().join(format!("idx-{metric}"));
        build(&files, &[1.0, 1.0, 1.0], metric, &out, true).unwrap();
        let index = open(&out);
        assert!(
            index.has_refinement(),
            "{metric}: the build wrote refine.m3"
        );
        let layout = index.blocks().unwrap().layout();
        let queries = BlockQueries::read(&layout, &query_files(&files, &[0, 2]), None).unwrap();
        let given = [("img".to_string(), 2.0), ("tag".to_string(), 0.5)];
        let w = index.block_weights(&given, &queries.present).unwrap();
        let gt = weighted_gt(&files, &queries, &w, metric, 10);
        let mut recall = Vec::new();
        for refine in [0, 200] {
            let mut params = SearchParams::new(10);
            params.nprobe = 8;
            params.qprobe = 0;
            params.rerank = 10;
            params.refine = refine;
            params.block_weights = Some(w.clone());
            let res = search_batch(
                &index,
                queries.rows.view(),
                &params,
                &pool(),
                &BatchOptions::default(),
            )
            .unwrap();
            let refined: u64 = res.stats.iter().map(|s| s.refined).sum();
            let expect_refined = refine > 0 && metric != Metric::L2;
            assert_eq!(
                refined > 0,
                expect_refined,
                "{metric} refine {refine}: refined {refined}"
            );
            let table = m3::search::results_table(&res.results, &params, metric).unwrap();
            let r = recall_at_k(
                table.ids.view(),
                table.dists.as_ref().map(|d| d.view()),
                &gt,
                10,
                metric,
            )
            .unwrap();
            eprintln!("{metric} refine {refine}: recall@10 {:.4}", r.mean);
            recall.push(r.mean);
        }
        if metric == Metric::L2 {
            assert_eq!(recall[0], recall[1], "L2: refine must change nothing");
        } else {
            assert!(
                recall[1] >= recall[0] + 0.02,
                "{metric}: refined {:.4} vs first code only {:.4}",
                recall[1],
                recall[0]
            );
        }
    }
}

/// Live updates of a multi-vector index are refused with `UpdateError::Unsupported` (writer,
/// compaction, merge), before anything is written: no `wal.m3` appears.
#[test]
fn multivector_indexes_refuse_live_updates_with_a_typed_error() {
    use m3::UpdateError;
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path(), 300, 5, &[4, 3, 2]);
    let out = tmp.path().join("idx");
    build(&files, &[1.0; 3], Metric::L2, &out, true).unwrap();
    let refused = |r: Result<(), UpdateError>, what: &str| match r {
        Err(UpdateError::Unsupported { what: w, .. }) => {
            assert!(w.contains("multi-vector"), "{what}: {w}")
        }
        other => panic!("{what}: {other:?}"),
    };
    refused(m3::IndexWriter::open(&out).map(drop), "writer");
    refused(m3::update::compact(&out, &pool()).map(drop), "compact");
    refused(m3::update::merge_all(&out, None).map(drop), "merge");
    assert!(!out.join(m3::format::files::WAL_FILE).exists());
    m3::verify(&out).unwrap();
}
