//! How much of a query's true top-10 lies in the clusters a router would probe?
//!
//! Runs the build's train, routing and assign stages on a base file, then for each query
//! counts the share of its true top-10 (ids from a ground-truth file) stored in the `nprobe`
//! clusters chosen by (a) the nearest base anchors only and (b) multi-entry routing (base
//! anchors ∪ edges of the nearest query anchors). Prints one row per nprobe.
//!
//! cargo run --release --example route_coverage -- BASE QUERIES GT METRIC [TRAIN_QUERIES] [SPILL] [CLUSTER_SIZE]

use std::collections::HashSet;
use std::path::PathBuf;

use m3::build::{BuildParams, assign, scan_base, train, train_routing};
use m3::data::{GroundTruth, VectorFile};
use m3::distance::{self, Metric};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let metric: Metric = a[4].parse()?;
    let mut p = BuildParams::new(PathBuf::from(&a[1]), metric, PathBuf::from("/tmp/unused"));
    p.train_queries = a
        .get(5)
        .filter(|s| !s.is_empty() && *s != "-")
        .map(PathBuf::from);
    p.spill.max_copies = a.get(6).map_or(Ok(1), |s| s.parse())?;
    if let Some(cs) = a.get(7) {
        p.clusters.target_size = cs.parse()?;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    let base = m3::build::BaseSource::open(&p)?;
    let k = p.clusters.resolve(base.rows());
    let t0 = std::time::Instant::now();
    let sample_rows = (k * p.clusters.train_rows_per_cluster).max(20_000);
    let (stats, sample, ids) = scan_base(&base, metric, sample_rows, p.seed, &|_| {})?;
    let bounds = m3::pq::even_bounds(base.dim(), p.pq.resolve(base.dim()))?;
    let trained = train(&p, k, bounds, stats, sample, ids, &pool)?;
    let t1 = t0.elapsed().as_secs_f64();
    let routing = train_routing(&p, &base, &trained, &pool)?;
    let t2 = t0.elapsed().as_secs_f64();
    let scratch = tempfile::tempdir()?;
    let outputs = m3::build::AssignOutputs {
        pq: scratch.path().join("pq.m3"),
        keys: scratch.path().join("keys.m3"),
        ids: scratch.path().join("ids"),
    };
    let asg = assign(&base, &p, &trained, &outputs, &pool, &|_| {})?;
    let t3 = t0.elapsed().as_secs_f64();
    eprintln!(
        "K={k} records={} spilled={} train {t1:.1}s routing {:.1}s assign {:.1}s",
        asg.records,
        asg.spilled,
        t2 - t1,
        t3 - t2
    );
    // clusters holding each id
    let mut holders: Vec<Vec<u32>> = vec![Vec::new(); base.rows() as usize];
    let starts = asg.cluster_starts();
    for c in 0..k {
        let ids = asg
            .ids
            .read(starts[c], (starts[c + 1] - starts[c]) as usize)?;
        for id in ids {
            holders[id as usize].push(c as u32);
        }
    }
    let queries = VectorFile::open(&PathBuf::from(&a[2]))?.read_all_f32()?;
    let gt = GroundTruth::read(&PathBuf::from(&a[3]))?;
    let cents = trained.anchors.centroids.view();
    println!("nprobe | base anchors only | multi-entry");
    for nprobe in [8usize, 16, 32, 64, 128] {
        let (mut cov_a, mut cov_b) = (0.0, 0.0);
        for q in 0..queries.rows() {
            let mut x = queries.row(q).to_vec();
            if metric == Metric::Cosine {
                let n = distance::dot(&x, &x).sqrt();
                x.iter_mut().for_each(|v| *v /= n);
            }
            let score = |c: usize| match metric {
                Metric::L2 => distance::l2_sq(&x, cents.row(c)),
                _ => -distance::dot(&x, cents.row(c)),
            };
            let mut order: Vec<(f32, usize)> = (0..k).map(|c| (score(c), c)).collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0));
            let base_only: HashSet<u32> = order.iter().take(nprobe).map(|e| e.1 as u32).collect();
            let mut multi: HashSet<u32> =
                order.iter().take(nprobe / 2).map(|e| e.1 as u32).collect();
            if let Some(r) = &routing {
                let mut qa: Vec<(f32, usize)> = (0..r.anchors.rows())
                    .map(|j| (distance::l2_sq(&x, r.anchors.row(j)), j))
                    .collect();
                qa.sort_by(|a, b| a.0.total_cmp(&b.0));
                'outer: for (_, j) in qa.iter().take(4) {
                    for &c in r.edges.row(*j) {
                        if multi.len() >= nprobe {
                            break 'outer;
                        }
                        if c != u32::MAX {
                            multi.insert(c);
                        }
                    }
                }
            }
            for (_, c) in &order {
                if multi.len() >= nprobe {
                    break;
                }
                multi.insert(*c as u32);
            }
            let top = &gt.ids.row(q)[..10];
            let hit = |set: &HashSet<u32>| {
                top.iter()
                    .filter(|&&id| holders[id as usize].iter().any(|c| set.contains(c)))
                    .count() as f64
                    / 10.0
            };
            cov_a += hit(&base_only);
            cov_b += hit(&multi);
        }
        let nq = queries.rows() as f64;
        println!("{nprobe:6} | {:.3} | {:.3}", cov_a / nq, cov_b / nq);
    }
    Ok(())
}
