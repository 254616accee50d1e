//! What `m3 inspect` shows: [`IndexInfo::gather`] opens the index the way a search does
//! ([`IndexParts::open`]: every file held in RAM read whole and checked), reads the
//! informational `build_report.json` (a missing or unreadable one is reported, not an error),
//! and condenses them into numbers (serialisable, so the CLI can print them as text or JSON).
//! Reads no data sectors (that is [`super::verify()`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::clusters::{ClusterTable, NO_ID};
use super::data::DataFileHeader;
use super::files::{MANIFEST_FILE, REPORT_FILE};
use super::header::{COMMON_HEADER_BYTES, CommonHeader};
use super::manifest::{IndexMeta, META_FLAG_LID_ADAPTIVE, META_FLAG_QUERY_ANCHORS};
use super::pq::PqFile;
use super::routing::Routing;
use super::stats::Stats;
use super::{FormatError, IndexParts, RecordLayout};

/// Everything `m3 inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    pub dir: PathBuf,
    /// Every file: the manifest first, then the listed files in manifest order.
    pub files: Vec<FileInfo>,
    pub params: IndexParams,
    pub clusters: ClusterInfo,
    /// Stored records per base vector (1 = no spilling).
    pub spill_factor: f64,
    pub routing: RoutingInfo,
    pub anchor_graph: AnchorGraphInfo,
    pub pq: PqInfo,
    /// The refinement codes (`refine.m3`); their errors are those of both codes together.
    pub refine: Option<PqInfo>,
    pub modality: ModalityInfo,
    /// The blocks of a multi-vector index (`None` for a single-vector index).
    pub blocks: Option<super::BlockTable>,
    /// From `build_report.json`; `None` when it is not listed (or not readable, see
    /// `report_problem`).
    pub report: Option<ReportInfo>,
    /// Why the listed build report could not be used (it is informational, so this is not an
    /// error of the index).
    pub report_problem: Option<String>,
}

/// One file of the index.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    /// CRC32C from the manifest (`None` for the manifest itself, which covers itself with its
    /// header CRC).
    pub crc32c: Option<u32>,
    /// `major.minor` of the file's common header (`None` for files without one, e.g. the JSON
    /// build report).
    pub version: Option<String>,
}

/// The manifest's [`IndexMeta`], decoded.
#[derive(Debug, Clone, Serialize)]
pub struct IndexParams {
    pub dim: u32,
    pub dtype: String,
    pub metric: String,
    pub distance_mode: String,
    pub flags: u8,
    pub query_anchors_flag: bool,
    pub lid_adaptive_flag: bool,
    pub n_vectors: u64,
    pub n_records: u64,
    pub data_sectors: u64,
    pub seed: u64,
    pub n_clusters: u32,
    pub n_query_anchors: u32,
    pub pq_bytes: u32,
    /// R: neighbour slots per record.
    pub max_degree: u32,
    pub record_bytes: u32,
    /// Records sharing one 4 KiB sector (0 when a record spans several sectors).
    pub records_per_sector: u32,
    pub sectors_per_record: u32,
    /// Share of the data sectors' bytes holding records.
    pub sector_fill: f64,
    pub lccmd_alpha: f32,
    pub lccmd_beta: f32,
    pub spill_epsilon: f32,
    pub spill_max: u32,
    pub alpha_min: f32,
    pub alpha_max: f32,
    pub lid_k: u32,
    pub anchor_degree: u32,
    pub edges_per_query_anchor: u32,
    pub build_threads: u32,
}

/// `[min, max]` of one quantity over the clusters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    pub count: usize,
    pub empty: usize,
    pub size_min: u32,
    pub size_median: u32,
    pub size_mean: f64,
    pub size_max: u32,
    /// Range over the non-empty clusters of the smallest member distance to the centroid.
    pub r_min: Option<Range>,
    /// Range over the non-empty clusters of the largest member distance to the centroid.
    pub r_max: Option<Range>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutingInfo {
    pub query_anchors: usize,
    pub edges_per_anchor: usize,
    /// Edges that point at a cluster (not "none").
    pub edges: u64,
    /// `edges / (query_anchors · edges_per_anchor)`; `None` without anchors.
    pub edge_slots_used: Option<f64>,
    /// Distinct clusters reached by some edge.
    pub clusters_reached: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnchorGraphInfo {
    /// Slots per anchor.
    pub degree: usize,
    /// Mean filled slots per anchor.
    pub mean_degree: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PqInfo {
    pub subspaces: usize,
    /// Smallest and largest subspace width, dimensions.
    pub subspace_dims: [u32; 2],
    pub residual: bool,
    pub codes: usize,
    /// Mean and largest reconstruction error `|x − x̂|` over the records.
    pub error_mean: f64,
    pub error_max: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModalityInfo {
    pub base_count: u64,
    pub query_count: u64,
    pub has_query_stats: bool,
    pub max_base_norm: f32,
    pub lid_mean: f32,
    pub lid_std: f32,
    /// `|mean_b|`.
    pub base_mean_norm: f64,
    /// `|mean_q|` (with query statistics).
    pub query_mean_norm: Option<f64>,
    /// `|mean_b − mean_q|` (with query statistics).
    pub modality_gap: Option<f64>,
    /// Total variance `Σ var` of each modality.
    pub base_total_variance: f64,
    pub query_total_variance: Option<f64>,
    /// Per-dimension variance ratio base / query over dimensions with query variance > 0:
    /// `[min, median, max]`.
    pub variance_ratio: Option<[f64; 3]>,
}

/// A bucket of the degree histogram: records whose degree lies in `[lo, hi]`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DegreeBucket {
    pub lo: u32,
    pub hi: u32,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSeconds {
    pub stage: String,
    pub seconds: f64,
}

/// The parts of `build_report.json` that `m3 inspect` summarises.
#[derive(Debug, Clone, Serialize)]
pub struct ReportInfo {
    /// `degree_histogram[d]` = records with `d` neighbours.
    pub degree_histogram: Vec<u64>,
    /// The histogram in at most 8 equal-width buckets.
    pub degree_buckets: Vec<DegreeBucket>,
    pub degree_mean: Option<f64>,
    pub lid_deciles: Vec<f64>,
    pub alpha_deciles: Vec<f64>,
    pub stages: Vec<StageSeconds>,
    pub total_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub ram_bytes_per_vector: Option<f64>,
    pub ssd_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub routing_vote_coverage: Option<f64>,
}

impl IndexInfo {
    /// Gathers the numbers of the index in `dir` (see the module doc). Fails with the first
    /// problem [`IndexParts::open`] finds.
    pub fn gather(dir: &Path) -> Result<Self, FormatError> {
        let parts = IndexParts::open(dir)?;
        let manifest = &parts.manifest;
        let meta = &manifest.meta;

        let mut files = vec![FileInfo {
            name: MANIFEST_FILE.to_string(),
            bytes: file_len(&dir.join(MANIFEST_FILE))?,
            crc32c: None,
            version: common_version(&dir.join(MANIFEST_FILE))?,
        }];
        for e in &manifest.files {
            let name = e.name_str().unwrap_or("").to_string();
            let version = if name.ends_with(".m3") {
                common_version(&dir.join(&name))?
            } else {
                None
            };
            files.push(FileInfo {
                name,
                bytes: e.bytes,
                crc32c: Some(e.crc32c),
                version,
            });
        }
        // Summaries of the per-record errors, which an open index does not hold.
        let mut pq = parts.pq;
        pq.error = PqFile::read_error_listed(&parts.pq_file)?;
        let refine = match manifest.file(super::files::REFINE_FILE) {
            Some(e) => Some(pq_info(&PqFile::read_listed_as(
                &super::file::ListedFile::open(dir, e)?,
                &super::pq::REFINE_KIND,
            )?)),
            None => None,
        };
        let data_header = parts.data_header;
        let (clusters, routing, stats, blocks) =
            (parts.clusters, parts.routing, parts.stats, parts.blocks);
        let (report, report_problem) = match manifest.file(REPORT_FILE) {
            Some(e) => match read_report(&dir.join(REPORT_FILE), e) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, None),
        };

        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            params: params_of(meta, &data_header),
            clusters: cluster_info(&clusters),
            spill_factor: if meta.n_vectors == 0 {
                0.0
            } else {
                meta.n_records as f64 / meta.n_vectors as f64
            },
            routing: routing_info(&routing),
            anchor_graph: anchor_graph_info(&clusters),
            pq: pq_info(&pq),
            refine,
            modality: modality_info(&stats),
            blocks,
            report,
            report_problem,
        })
    }
}

fn file_len(path: &Path) -> Result<u64, FormatError> {
    Ok(std::fs::metadata(path)
        .map_err(|e| FormatError::io(path, e))?
        .len())
}

/// `major.minor` of the common header of `path` (already checked by `open_check`).
fn common_version(path: &Path) -> Result<Option<String>, FormatError> {
    let f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut buf = [0u8; COMMON_HEADER_BYTES];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| FormatError::io(path, e))?;
    let h: CommonHeader = bytemuck::pod_read_unaligned(&buf);
    Ok(Some(format!("{}.{}", h.version_major, h.version_minor)))
}

fn params_of(meta: &IndexMeta, data: &DataFileHeader) -> IndexParams {
    let layout = RecordLayout::new(meta.record_bytes.max(1)).expect("record_bytes ≥ 1");
    let sector_fill = if meta.data_sectors == 0 {
        0.0
    } else {
        (meta.n_records as f64 * meta.record_bytes as f64)
            / (data.data_sectors as f64 * super::SECTOR_BYTES as f64)
    };
    IndexParams {
        dim: meta.dim,
        dtype: meta
            .dtype()
            .map_or_else(|| format!("code {}", meta.dtype), |d| d.to_string()),
        metric: meta
            .metric()
            .map_or_else(|| format!("code {}", meta.metric), |m| m.to_string()),
        distance_mode: match meta.distance_mode() {
            Ok(mode) => mode.name().to_string(),
            Err(super::UnknownDistanceMode(c)) => format!("code {c}"),
        },
        flags: meta.flags,
        query_anchors_flag: meta.flags & META_FLAG_QUERY_ANCHORS != 0,
        lid_adaptive_flag: meta.flags & META_FLAG_LID_ADAPTIVE != 0,
        n_vectors: meta.n_vectors,
        n_records: meta.n_records,
        data_sectors: meta.data_sectors,
        seed: meta.seed,
        n_clusters: meta.n_clusters,
        n_query_anchors: meta.n_query_anchors,
        pq_bytes: meta.pq_subspaces,
        max_degree: meta.max_degree,
        record_bytes: meta.record_bytes,
        records_per_sector: layout.records_per_sector(),
        sectors_per_record: layout.sectors_per_record(),
        sector_fill,
        lccmd_alpha: meta.lccmd_alpha,
        lccmd_beta: meta.lccmd_beta,
        spill_epsilon: meta.spill_epsilon,
        spill_max: meta.spill_max,
        alpha_min: meta.alpha_min,
        alpha_max: meta.alpha_max,
        lid_k: meta.lid_k,
        anchor_degree: meta.anchor_degree,
        edges_per_query_anchor: meta.edges_per_query_anchor,
        build_threads: meta.build_threads,
    }
}

fn range_of(values: impl Iterator<Item = f32>) -> Option<Range> {
    values.fold(None, |acc, v| {
        let v = v as f64;
        Some(match acc {
            None => Range { min: v, max: v },
            Some(r) => Range {
                min: r.min.min(v),
                max: r.max.max(v),
            },
        })
    })
}

fn cluster_info(t: &ClusterTable) -> ClusterInfo {
    let mut sizes: Vec<u32> = t.entries.iter().map(|e| e.records).collect();
    sizes.sort_unstable();
    let n = sizes.len();
    let nonempty = || t.entries.iter().filter(|e| e.records > 0);
    ClusterInfo {
        count: n,
        empty: sizes.iter().filter(|&&s| s == 0).count(),
        size_min: sizes.first().copied().unwrap_or(0),
        size_median: sizes.get(n / 2).copied().unwrap_or(0),
        size_mean: if n == 0 {
            0.0
        } else {
            sizes.iter().map(|&s| s as f64).sum::<f64>() / n as f64
        },
        size_max: sizes.last().copied().unwrap_or(0),
        r_min: range_of(nonempty().map(|e| e.r_min)),
        r_max: range_of(nonempty().map(|e| e.r_max)),
    }
}

fn routing_info(r: &Routing) -> RoutingInfo {
    let k = r.anchors.rows();
    let e = r.edges.dim();
    let valid: Vec<u32> = r
        .edges
        .as_slice()
        .iter()
        .copied()
        .filter(|&c| c != NO_ID)
        .collect();
    let mut distinct = valid.clone();
    distinct.sort_unstable();
    distinct.dedup();
    RoutingInfo {
        query_anchors: k,
        edges_per_anchor: e,
        edges: valid.len() as u64,
        edge_slots_used: (k > 0).then(|| valid.len() as f64 / (k * e) as f64),
        clusters_reached: distinct.len(),
    }
}

fn anchor_graph_info(t: &ClusterTable) -> AnchorGraphInfo {
    let g = t.anchor_graph.as_slice();
    let rows = t.anchor_graph.rows();
    AnchorGraphInfo {
        degree: t.anchor_graph.dim(),
        mean_degree: if rows == 0 {
            0.0
        } else {
            g.iter().filter(|&&c| c != NO_ID).count() as f64 / rows as f64
        },
    }
}

fn pq_info(pq: &PqFile) -> PqInfo {
    let widths = pq.bounds.windows(2).map(|w| w[1] - w[0]);
    let n = pq.error.len();
    PqInfo {
        subspaces: pq.subspaces(),
        subspace_dims: [widths.clone().min().unwrap_or(0), widths.max().unwrap_or(0)],
        residual: pq.residual,
        codes: pq.n_records(),
        error_mean: if n == 0 {
            0.0
        } else {
            pq.error.iter().map(|&e| e as f64).sum::<f64>() / n as f64
        },
        error_max: pq.error.iter().copied().fold(0.0, f32::max),
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn modality_info(s: &Stats) -> ModalityInfo {
    let q = s.has_query_stats;
    let gap = s
        .base_mean
        .iter()
        .zip(&s.query_mean)
        .map(|(&b, &q)| (b as f64 - q as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut ratios: Vec<f64> = s
        .base_var
        .iter()
        .zip(&s.query_var)
        .filter(|(_, qv)| **qv > 0.0)
        .map(|(&b, &qv)| b as f64 / qv as f64)
        .collect();
    ratios.sort_unstable_by(f64::total_cmp);
    let total = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
    ModalityInfo {
        base_count: s.base_count,
        query_count: s.query_count,
        has_query_stats: q,
        max_base_norm: s.max_base_norm,
        lid_mean: s.lid_mean,
        lid_std: s.lid_std,
        base_mean_norm: norm(&s.base_mean),
        query_mean_norm: q.then(|| norm(&s.query_mean)),
        modality_gap: q.then_some(gap),
        base_total_variance: total(&s.base_var),
        query_total_variance: q.then(|| total(&s.query_var)),
        variance_ratio: (q && !ratios.is_empty()).then(|| {
            [
                ratios[0],
                ratios[ratios.len() / 2],
                ratios[ratios.len() - 1],
            ]
        }),
    }
}

/// At most 8 equal-width buckets over degrees `0..=R`.
pub fn degree_buckets(histogram: &[u64]) -> Vec<DegreeBucket> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let width = histogram.len().div_ceil(8);
    histogram
        .chunks(width)
        .enumerate()
        .map(|(i, c)| DegreeBucket {
            lo: (i * width) as u32,
            hi: (i * width + c.len() - 1) as u32,
            records: c.iter().sum(),
        })
        .collect()
}

/// The build report at `path`, listed as `entry`; `Err` says why it cannot be used (missing,
/// not the listed file, not JSON).
fn read_report(path: &Path, entry: &super::FileEntry) -> Result<ReportInfo, String> {
    let text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{}: missing", path.display()));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if text.len() as u64 != entry.bytes || crc32c::crc32c(&text) != entry.crc32c {
        return Err(format!(
            "{}: not the file the manifest lists (length or CRC32C differs)",
            path.display()
        ));
    }
    let text = String::from_utf8(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let f64s = |v: Option<&serde_json::Value>| -> Vec<f64> {
        v.and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    let graph = v.get("graph");
    let histogram: Vec<u64> = graph
        .and_then(|g| g.get("degree_histogram"))
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    let records: u64 = histogram.iter().sum();
    let degree_mean = (records > 0).then(|| {
        histogram
            .iter()
            .enumerate()
            .map(|(d, &n)| d as f64 * n as f64)
            .sum::<f64>()
            / records as f64
    });
    let stages = v
        .get("stages")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some(StageSeconds {
                        stage: s.get("stage")?.as_str()?.to_string(),
                        seconds: s.get("seconds")?.as_f64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ReportInfo {
        degree_buckets: degree_buckets(&histogram),
        degree_histogram: histogram,
        degree_mean,
        lid_deciles: f64s(graph.and_then(|g| g.get("lid_deciles"))),
        alpha_deciles: f64s(graph.and_then(|g| g.get("alpha_deciles"))),
        stages,
        total_seconds: v.get("total_seconds").and_then(|x| x.as_f64()),
        peak_rss_bytes: v.get("peak_rss_bytes").and_then(|x| x.as_u64()),
        ram_bytes_per_vector: v.get("ram_bytes_per_vector").and_then(|x| x.as_f64()),
        ssd_bytes: v.get("ssd_bytes").and_then(|x| x.as_u64()),
        threads: v.get("threads").and_then(|x| x.as_u64()),
        routing_vote_coverage: v.get("routing_vote_coverage").and_then(|x| x.as_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_degree_buckets_cover_the_histogram() {
        let h: Vec<u64> = (0..17).collect();
        let b = degree_buckets(&h);
        assert!(b.len() <= 8);
        assert_eq!(b[0].lo, 0);
        assert_eq!(b.last().unwrap().hi, 16);
        assert_eq!(
            b.iter().map(|b| b.records).sum::<u64>(),
            h.iter().sum::<u64>()
        );
        for w in b.windows(2) {
            assert_eq!(w[0].hi + 1, w[1].lo);
        }
        assert!(degree_buckets(&[]).is_empty());
        assert_eq!(degree_buckets(&[5]).len(), 1);
    }
}
