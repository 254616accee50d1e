//! `m3 inspect`: what an index holds, from its small files and build report.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use m3::format::IndexInfo;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Index directory.
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    if m3::search::is_sharded(&args.dir) {
        return run_sharded(&args);
    }
    crate::common::recover_index("inspect", &args.dir);
    let info = IndexInfo::gather(&args.dir)
        .with_context(|| format!("cannot inspect {}", args.dir.display()))?;
    // The live updates (wal.m3, delta.m3) as an index opened now sees them.
    let index = m3::Index::open(
        &args.dir,
        m3::IoBackend::Pread,
        &m3::ReaderOptions::default(),
    )
    .with_context(|| format!("cannot open {}", args.dir.display()))?;
    let live = index.live_info();
    if args.json {
        let mut v = serde_json::to_value(&info)?;
        v["live"] = live.to_json();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&info));
        print!("{}", render_live(&live));
    }
    Ok(())
}

/// Live updates: generation, delta, tombstones, and what replay cut from the log.
fn render_live(l: &m3::LiveInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "
live updates"
    );
    if l.generation == 0 {
        let _ = writeln!(s, "  none (generation 0, {} live vectors)", l.live_vectors);
        return s;
    }
    let _ = writeln!(
        s,
        "  generation {}, {} live vectors; delta {} inserted records ({}), {} tombstones",
        l.generation,
        l.live_vectors,
        l.inserted,
        mib(l.delta_bytes as f64),
        l.tombstones
    );
    if l.coded_again > 0 {
        let _ = writeln!(
            s,
            "  delta_codes.m3 missing, damaged or behind the log: {} inserted records coded again at open",
            l.coded_again
        );
    }
    if let Some(t) = &l.wal_cut {
        let _ = writeln!(
            s,
            "  wal.m3: {} bytes after the last commit are not replayed ({} operations never committed{})",
            t.bytes,
            t.uncommitted_ops,
            t.corrupt
                .as_ref()
                .map_or(String::new(), |(at, why)| format!(
                    "; unreadable from byte {at}: {why}"
                ))
        );
    }
    s
}

fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / (1u64 << 20) as f64)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn list(v: &[f64], prec: usize) -> String {
    if v.is_empty() {
        return "-".to_string();
    }
    v.iter()
        .map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text report, section by section.
fn render(i: &IndexInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "index {}", i.dir.display());
    for section in [
        files,
        parameters,
        clusters,
        routing,
        pq,
        modality,
        blocks,
        build_report,
    ] {
        section(&mut s, i);
    }
    s
}

/// Every file: bytes, CRC32C and format version, and the total.
fn files(s: &mut String, i: &IndexInfo) {
    let _ = writeln!(s, "\nfiles");
    let total: u64 = i.files.iter().map(|f| f.bytes).sum();
    for f in &i.files {
        let _ = writeln!(
            s,
            "  {:<18} {:>14} B  crc32c {:<10}  version {}",
            f.name,
            f.bytes,
            f.crc32c.map_or_else(|| "-".into(), |c| format!("{c:08x}")),
            f.version.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        s,
        "  {:<18} {:>14} B  ({})",
        "total",
        total,
        mib(total as f64)
    );
}

/// The manifest's parameters.
fn parameters(s: &mut String, i: &IndexInfo) {
    let p = &i.params;
    let _ = writeln!(s, "\nparameters");
    let _ = writeln!(
        s,
        "  vectors {} × dim {} ({}), metric {}, distance mode {}",
        p.n_vectors, p.dim, p.dtype, p.metric, p.distance_mode
    );
    let _ = writeln!(
        s,
        "  records {} in {} data sectors; record {} B, {} per sector ({} sector(s) each), sector fill {:.1}%",
        p.n_records,
        p.data_sectors,
        p.record_bytes,
        p.records_per_sector,
        p.sectors_per_record,
        100.0 * p.sector_fill
    );
    let _ = writeln!(
        s,
        "  clusters {}, query anchors {}, PQ {} B/vector, R {}, anchor degree {}, edges/query anchor {}",
        p.n_clusters,
        p.n_query_anchors,
        p.pq_bytes,
        p.max_degree,
        p.anchor_degree,
        p.edges_per_query_anchor
    );
    let _ = writeln!(
        s,
        "  α [{}, {}] (LID-adaptive {}), LID k {}, spill ε {} max {}, LC-CMD α {} β {}",
        p.alpha_min,
        p.alpha_max,
        p.lid_adaptive_flag,
        p.lid_k,
        p.spill_epsilon,
        p.spill_max,
        p.lccmd_alpha,
        p.lccmd_beta
    );
    let _ = writeln!(
        s,
        "  flags {:#04x} (query anchors {}), seed {}, build threads {}",
        p.flags, p.query_anchors_flag, p.seed, p.build_threads
    );
}

/// Cluster sizes and radii, the spill factor and the anchor graph.
fn clusters(s: &mut String, i: &IndexInfo) {
    let c = &i.clusters;
    let _ = writeln!(s, "\nclusters");
    let _ = writeln!(
        s,
        "  {} clusters ({} empty); size min {} median {} mean {:.1} max {}",
        c.count, c.empty, c.size_min, c.size_median, c.size_mean, c.size_max
    );
    let range = |r: Option<m3::format::inspect::Range>| {
        r.map_or_else(|| "-".into(), |r| format!("{:.4} … {:.4}", r.min, r.max))
    };
    let _ = writeln!(s, "  r_min over clusters {}", range(c.r_min));
    let _ = writeln!(s, "  r_max over clusters {}", range(c.r_max));
    let _ = writeln!(s, "  spill factor {:.3} records/vector", i.spill_factor);
    let _ = writeln!(
        s,
        "  anchor graph: {} slots, {:.2} filled on average",
        i.anchor_graph.degree, i.anchor_graph.mean_degree
    );
}

/// Query anchors and their edges.
fn routing(s: &mut String, i: &IndexInfo) {
    let r = &i.routing;
    let _ = writeln!(s, "\nquery routing");
    if r.query_anchors == 0 {
        let _ = writeln!(s, "  no query anchors (built without training queries)");
    } else {
        let _ = writeln!(
            s,
            "  {} query anchors × {} edge slots: {} edges ({:.1}% of slots), {} distinct clusters reached",
            r.query_anchors,
            r.edges_per_anchor,
            r.edges,
            100.0 * r.edge_slots_used.unwrap_or(0.0),
            r.clusters_reached
        );
    }
}

/// Product quantization.
fn pq(s: &mut String, i: &IndexInfo) {
    let q = &i.pq;
    let _ = writeln!(s, "\nproduct quantization");
    let _ = writeln!(
        s,
        "  {} subspaces of {}–{} dims, residual {}, {} codes; error mean {:.4} max {:.4}",
        q.subspaces,
        q.subspace_dims[0],
        q.subspace_dims[1],
        q.residual,
        q.codes,
        q.error_mean,
        q.error_max
    );
    if let Some(r) = &i.refine {
        let _ = writeln!(
            s,
            "  refinement codes (refine.m3): {} subspaces, {} codes; error of both codes mean {:.4} max {:.4}",
            r.subspaces, r.codes, r.error_mean, r.error_max
        );
    }
}

/// The base's and the training queries' statistics.
fn modality(s: &mut String, i: &IndexInfo) {
    let m = &i.modality;
    let _ = writeln!(s, "\nmodality statistics");
    let _ = writeln!(
        s,
        "  base: {} vectors, |mean| {:.4}, total variance {:.4}, max norm {:.4}, LID {:.2} ± {:.2}",
        m.base_count,
        m.base_mean_norm,
        m.base_total_variance,
        m.max_base_norm,
        m.lid_mean,
        m.lid_std
    );
    if m.has_query_stats {
        let _ = writeln!(
            s,
            "  query: {} training vectors, |mean| {}, total variance {}",
            m.query_count,
            opt(m.query_mean_norm.map(|v| format!("{v:.4}"))),
            opt(m.query_total_variance.map(|v| format!("{v:.4}")))
        );
        let _ = writeln!(
            s,
            "  modality gap |mean_b − mean_q| {}",
            opt(m.modality_gap.map(|v| format!("{v:.4}")))
        );
        let _ = writeln!(
            s,
            "  variance ratio base/query per dim: {}",
            m.variance_ratio.map_or_else(
                || "-".into(),
                |[a, b, c]| format!("min {a:.4} median {b:.4} max {c:.4}")
            )
        );
    } else {
        let _ = writeln!(s, "  no query statistics (built without training queries)");
    }
}

/// The blocks of a multi-vector index (nothing for a single-vector one).
fn blocks(s: &mut String, i: &IndexInfo) {
    if let Some(t) = &i.blocks {
        let _ = writeln!(
            s,
            "\nblocks (multi-vector; stored block = scale × raw block{})",
            if t.standardized {
                ", standardised: scale = √weight / spread"
            } else {
                ", not standardised: scale = √weight"
            }
        );
        let mut first = 0;
        for b in &t.blocks {
            let _ = writeln!(
                s,
                "  {:<12} dims {:>5}..{:<5} spread σ {:<11.5} build weight {:<7} scale {:.6}",
                b.name,
                first,
                first + b.dim,
                b.spread,
                b.weight,
                b.scale
            );
            first += b.dim;
        }
    }
}

/// What `build_report.json` says: degrees, LID and α deciles, stage times, costs.
fn build_report(s: &mut String, i: &IndexInfo) {
    let p = &i.params;
    let _ = writeln!(s, "\nbuild report");
    match (&i.report, &i.report_problem) {
        (Some(b), _) => {
            let _ = writeln!(
                s,
                "  degree: mean {} of R {}",
                opt(b.degree_mean.map(|v| format!("{v:.2}"))),
                p.max_degree
            );
            let n: u64 = b.degree_histogram.iter().sum();
            for k in &b.degree_buckets {
                let share = if n == 0 {
                    0.0
                } else {
                    k.records as f64 / n as f64
                };
                let bar = "#".repeat((share * 40.0).round() as usize);
                let _ = writeln!(
                    s,
                    "    {:>3}–{:<3} {:>10} {:>6.1}% {bar}",
                    k.lo,
                    k.hi,
                    k.records,
                    100.0 * share
                );
            }
            let _ = writeln!(s, "  LID deciles  {}", list(&b.lid_deciles, 2));
            let _ = writeln!(s, "  α deciles    {}", list(&b.alpha_deciles, 3));
            let stages: Vec<String> = b
                .stages
                .iter()
                .map(|t| format!("{} {:.2} s", t.stage, t.seconds))
                .collect();
            let _ = writeln!(
                s,
                "  stages: {}; total {}",
                stages.join(", "),
                opt(b.total_seconds.map(|v| format!("{v:.2} s")))
            );
            let _ = writeln!(
                s,
                "  peak RSS {}, RAM {} B/vector, SSD {}, threads {}, routing vote coverage {}",
                opt(b.peak_rss_bytes.map(|v| mib(v as f64))),
                opt(b.ram_bytes_per_vector.map(|v| format!("{v:.1}"))),
                opt(b.ssd_bytes.map(|v| mib(v as f64))),
                opt(b.threads),
                opt(b.routing_vote_coverage.map(|v| format!("{v:.3}")))
            );
        }
        (None, Some(problem)) => {
            let _ = writeln!(s, "  unreadable: {problem}");
        }
        (None, None) => {
            let _ = writeln!(s, "  none");
        }
    }
}

/// A sharded index: the shard table (clusters and records per shard), then shard 0 (whose
/// global parts route) as `m3 inspect` shows an index.
fn run_sharded(args: &InspectArgs) -> anyhow::Result<()> {
    let table = m3::format::ShardTable::read(&args.dir.join(m3::format::SHARDS_FILE))
        .with_context(|| format!("cannot inspect {}", args.dir.display()))?;
    let mut shards = Vec::new();
    for (s, e) in table.shards.iter().enumerate() {
        let dir = args.dir.join(e.name_str().unwrap_or_default());
        let info =
            IndexInfo::gather(&dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
        let clusters = table.owners.iter().filter(|&&o| o as usize == s).count();
        shards.push((s, dir, clusters, info));
    }
    if args.json {
        let v = serde_json::json!({
            "sharded": true,
            "n_vectors": table.n_vectors,
            "n_clusters": table.owners.len(),
            "hint_queries": table.hint_masks.len(),
            "shards": shards.iter().map(|(s, dir, clusters, info)| serde_json::json!({
                "shard": s,
                "dir": dir,
                "clusters": clusters,
                "index": info,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "sharded index {}: {} shards, {} vectors, {} clusters, {} training queries",
        args.dir.display(),
        table.n_shards(),
        table.n_vectors,
        table.owners.len(),
        table.hint_masks.len()
    );
    for (s, dir, clusters, info) in &shards {
        println!(
            "  shard {s}: {} clusters, {} records ({})",
            clusters,
            info.params.n_records,
            dir.display()
        );
    }
    println!("\nshard 0:");
    print!("{}", render(&shards[0].3));
    Ok(())
}
