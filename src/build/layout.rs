//! Stages 4 and 5, lay out: every record's vector is written into its slot of `data.m3`
//! (clusters after each other, members in key order, see [`crate::format::layout`]); then,
//! window by window (the window's clusters in parallel), the members are read back, their
//! neighbour lists built ([`crate::graph::build_cluster_graph`]) and the window rewritten.
//!
//! Memory: one layout window (an eighth of the RAM budget, at most 256 MiB), and one cluster
//! per thread.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use super::assign::Assignment;
use super::source::BaseSource;
use super::{BuildError, BuildParams};
use crate::data::{DType, Matrix};
use crate::format::{ClusterEntry, DataFileWriter, FormatError, SECTOR_BYTES};
use crate::graph::{LidStats, build_cluster_graph};

/// What the neighbour-list stage measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GraphReport {
    /// `degree_histogram[d]` = records with d neighbours.
    pub degree_histogram: Vec<u64>,
    /// Mean of the per-record local intrinsic dimension (LID) estimates.
    pub lid_mean: f64,
    /// Their standard deviation.
    pub lid_std: f64,
    /// Deciles (0, 10, …, 100th percentile) of the per-record LID.
    pub lid_deciles: Vec<f32>,
    /// Deciles of the per-record pruning α.
    pub alpha_deciles: Vec<f32>,
}

/// Most bytes of `data.m3` filled in RAM before one sequential write (the layout window).
const MAX_WINDOW_BYTES: u64 = 256 << 20;

/// Writes every record's vector and id (no neighbours yet) into `writer`, in windows of whole
/// clusters: a window's sectors are filled in RAM (each cluster on its own thread, reading its
/// members' base rows by id) and written with one sequential write. Writing the records one
/// by one instead scatters partial-sector writes over the whole file, which the page cache
/// absorbs only while the file fits in it (measured: 3 s at 1M × 200, 395 s at 5M; see
/// docs/BENCHMARKS.md, "Scale test"). The reads are random in the base file, which the
/// statistics and assign passes have just streamed, so they are mostly served from the page
/// cache. The window is an eighth of the RAM budget, at most 256 MiB, at least one cluster.
pub fn write_vectors(
    base: &BaseSource,
    params: &BuildParams,
    asg: &Assignment,
    writer: &DataFileWriter,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), BuildError> {
    let sb = SECTOR_BYTES as u64;
    let entries = writer.cluster_entries();
    let layout = writer.layout();
    let codec = writer.codec();
    let rb = codec.record_bytes() as usize;
    let metric = params.metric;
    let dtype = base.stored_dtype(metric);
    let encode = |id: u32, out: &mut [u8]| -> Result<(), BuildError> {
        let first = id as u64;
        match dtype {
            DType::F32 => {
                codec.encode(base.read_prepared(first, 1, metric)?.row(0), id, &[], out)?
            }
            DType::U8 => codec.encode(base.read_native::<u8>(first, 1)?.row(0), id, &[], out)?,
            DType::I8 => codec.encode(base.read_native::<i8>(first, 1)?.row(0), id, &[], out)?,
        }
        Ok(())
    };
    let mut done = 0u64;
    for_each_window(
        writer,
        params,
        pool,
        |c, out| -> Result<(), BuildError> {
            let e = &entries[c];
            let ids = asg.ids.read(e.first_record, e.records as usize)?;
            for (i, &id) in ids.iter().enumerate() {
                let loc = layout.locate(i as u64);
                let at = (loc.sector * sb) as usize + loc.offset_bytes as usize;
                encode(id, &mut out[at..at + rb])?;
            }
            Ok(())
        },
        |window, _| {
            done += window.map(|c| entries[c].records as u64).sum::<u64>();
            progress(done);
        },
    )
}

/// Fills `data.m3` in windows of whole clusters: for each window, `fill(c, sectors)` runs for
/// its clusters in parallel on zeroed sector buffers, then the window is written with one
/// sequential write and `done(clusters, outputs)` is called in cluster order.
///
/// No write is in flight while `fill` runs, so a `fill` may read any cluster of the file
/// (written windows hold their final bytes, later ones their earlier contents) without
/// seeing a record half rewritten. The window is an eighth of the RAM budget, at most
/// 256 MiB, at least one cluster.
fn for_each_window<T: Send>(
    writer: &DataFileWriter,
    params: &BuildParams,
    pool: &rayon::ThreadPool,
    fill: impl Fn(usize, &mut [u8]) -> Result<T, BuildError> + Sync,
    mut done: impl FnMut(std::ops::Range<usize>, Vec<T>),
) -> Result<(), BuildError> {
    let sb = SECTOR_BYTES as u64;
    let entries = writer.cluster_entries();
    let layout = writer.layout();
    let window = (params.ram_budget_bytes / 8).clamp(sb, MAX_WINDOW_BYTES);
    let sectors_of = |c: usize| layout.sectors_for(entries[c].records as u64);
    let mut c0 = 0;
    while c0 < entries.len() {
        let mut c1 = c0 + 1;
        let mut sectors = sectors_of(c0);
        while c1 < entries.len() && (sectors + sectors_of(c1)) * sb <= window {
            sectors += sectors_of(c1);
            c1 += 1;
        }
        let mut buf = vec![0u8; (sectors * sb) as usize];
        let mut parts: Vec<(usize, &mut [u8])> = Vec::with_capacity(c1 - c0);
        let mut rest: &mut [u8] = &mut buf;
        for c in c0..c1 {
            // Clusters follow each other on disk (`DataFileWriter::create`).
            debug_assert_eq!(
                entries[c].first_sector,
                entries[c0].first_sector + (buf_len(&parts) / SECTOR_BYTES) as u64
            );
            let (head, tail) = rest.split_at_mut((sectors_of(c) * sb) as usize);
            parts.push((c, head));
            rest = tail;
        }
        let outputs = pool.install(|| {
            parts
                .into_par_iter()
                .map(|(c, out)| fill(c, out))
                .collect::<Result<Vec<T>, BuildError>>()
        })?;
        writer.write_sector_range(entries[c0].first_sector, &buf)?;
        done(c0..c1, outputs);
        c0 = c1;
    }
    Ok(())
}

fn buf_len(parts: &[(usize, &mut [u8])]) -> usize {
    parts.iter().map(|(_, p)| p.len()).sum()
}

/// Per-record LID statistics estimated the way the build uses them: on up to `clusters`
/// whole clusters (in-cluster neighbour distances), spread evenly over the index.
pub fn estimate_lid_stats(
    data_path: &Path,
    writer: &DataFileWriter,
    params: &BuildParams,
    clusters: usize,
    pool: &rayon::ThreadPool,
) -> Result<LidStats, BuildError> {
    let entries = writer.cluster_entries();
    let step = (entries.len() / clusters.max(1)).max(1);
    let picked: Vec<&ClusterEntry> = entries.iter().step_by(step).take(clusters).collect();
    let reader = ClusterReader::open(data_path, writer)?;
    let mut gp = params.graph;
    gp.alpha = crate::graph::AlphaMode::Fixed(1.0);
    let lids: Vec<Vec<f32>> = pool.install(|| {
        picked
            .par_iter()
            .map(|e| -> Result<Vec<f32>, BuildError> {
                let (vectors, ids) = reader.read(e)?;
                if vectors.rows() < 2 {
                    return Ok(Vec::new());
                }
                let g = build_cluster_graph(
                    vectors.view(),
                    &ids,
                    &gp,
                    &LidStats {
                        count: 0,
                        mean: 0.0,
                        std: 1.0,
                    },
                )
                .map_err(|e| BuildError::param("graph", e.to_string()))?;
                Ok(g.lid)
            })
            .collect::<Result<_, _>>()
    })?;
    Ok(LidStats::from_values(
        lids.into_iter()
            .flatten()
            .map(|l| (!l.is_nan()).then_some(l)),
    ))
}

/// `data.m3` as the layout wrote it, read back a cluster at a time.
struct ClusterReader<'a> {
    file: File,
    path: &'a Path,
    writer: &'a DataFileWriter,
}

impl<'a> ClusterReader<'a> {
    fn open(path: &'a Path, writer: &'a DataFileWriter) -> Result<Self, BuildError> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        Ok(Self { file, path, writer })
    }

    /// One cluster's records: vectors (as f32) and original ids.
    fn read(&self, e: &ClusterEntry) -> Result<(Matrix<f32>, Vec<u32>), BuildError> {
        let (path, writer) = (self.path, self.writer);
        let layout = writer.layout();
        let codec = writer.codec();
        let sectors = layout.sectors_for(e.records as u64);
        let mut buf = vec![0u8; sectors as usize * SECTOR_BYTES];
        let offset = (1 + e.first_sector) * SECTOR_BYTES as u64;
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|err| FormatError::io(path, err))?;
        let dim = codec.dim() as usize;
        let mut vectors = Vec::with_capacity(e.records as usize * dim);
        let mut ids = Vec::with_capacity(e.records as usize);
        for i in 0..e.records as u64 {
            let loc = layout.locate(i);
            let start = loc.sector as usize * SECTOR_BYTES + loc.offset_bytes as usize;
            let rec = codec.decode(
                &buf[start..start + codec.record_bytes() as usize],
                path,
                offset + start as u64,
            )?;
            let bad = || FormatError::corrupt(path, offset + start as u64, "record vector");
            match codec.dtype() {
                DType::F32 => vectors.extend(rec.vector::<f32>().ok_or_else(bad)?),
                DType::U8 => vectors.extend(
                    rec.vector::<u8>()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|&v| v as f32),
                ),
                DType::I8 => vectors.extend(
                    rec.vector::<i8>()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|&v| v as f32),
                ),
            }
            ids.push(rec.id());
        }
        Ok((Matrix::from_vec(vectors, dim)?, ids))
    }

    /// Each member's nearest records (global record ids) among the members of the cluster's
    /// `params.cross.clusters` nearest neighbouring clusters (`near`, by the anchor graph), at
    /// most `params.cross.links`, never another copy of the member itself.
    fn cross_links(
        &self,
        params: &BuildParams,
        near: &[u32],
        own: &Matrix<f32>,
        own_ids: &[u32],
    ) -> Result<Vec<Vec<u32>>, BuildError> {
        let entries = self.writer.cluster_entries();
        let links = params.cross.links.min(params.graph.max_degree);
        let mut out = vec![Vec::new(); own.rows()];
        if links == 0 || params.cross.clusters == 0 {
            return Ok(out);
        }
        let mut vectors: Vec<f32> = Vec::new();
        let mut records: Vec<u32> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for &c in near
            .iter()
            .filter(|&&c| (c as usize) < entries.len())
            .take(params.cross.clusters)
        {
            let ce = &entries[c as usize];
            if ce.records == 0 {
                continue;
            }
            let (v, i) = self.read(ce)?;
            vectors.extend_from_slice(v.as_slice());
            records.extend((0..ce.records).map(|r| ce.first_record as u32 + r));
            ids.extend(i);
        }
        if records.is_empty() {
            return Ok(out);
        }
        let extra = Matrix::from_vec(vectors, own.dim())?;
        // A few more than needed, so that copies of the member itself can be dropped.
        let k = (links + 2).min(extra.rows());
        let found =
            crate::exact::exact_knn(extra.view(), own.view(), k, crate::distance::Metric::L2)?;
        for (i, list) in found.into_iter().enumerate() {
            out[i] = list
                .into_iter()
                .filter(|n| ids[n.id as usize] != own_ids[i])
                .take(links)
                .map(|n| records[n.id as usize])
                .collect();
        }
        Ok(out)
    }
}

/// What the neighbour-list stage reads besides `data.m3` and the parameters: the assignment
/// (record ids, key ranges), the LID population α is mapped from, and the anchor graph the
/// cross-links follow.
#[derive(Clone, Copy)]
pub struct GraphInputs<'a> {
    pub asg: &'a Assignment,
    pub lid_stats: &'a LidStats,
    pub anchor_graph: &'a Matrix<u32>,
}

/// One cluster's entry (radii filled in), its records' degrees, LIDs and α (held for one
/// window only).
type ClusterGraphOut = (ClusterEntry, Vec<u32>, Vec<f32>, Vec<f32>);

/// Builds every cluster's neighbour lists and rewrites its sectors with them, window by
/// window (`for_each_window`): the neighbour lists of a window's clusters are built in
/// parallel, reading their own and nearby clusters' records, and only then is the window
/// written, so no read ever races a rewrite of the sectors it reads. Returns the cluster
/// entries with r_min/r_max filled in and the graph report.
pub fn write_graphs(
    data_path: &Path,
    writer: &DataFileWriter,
    inputs: &GraphInputs<'_>,
    params: &BuildParams,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<ClusterEntry>, GraphReport), BuildError> {
    let GraphInputs {
        asg,
        lid_stats,
        anchor_graph,
    } = *inputs;
    let reader = ClusterReader::open(data_path, writer)?;
    let all_entries = writer.cluster_entries();
    let layout = writer.layout();
    let codec = writer.codec();
    let rb = codec.record_bytes() as usize;
    let fill = |ci: usize, buf: &mut [u8]| -> Result<ClusterGraphOut, BuildError> {
        let e = &all_entries[ci];
        let mut entry = *e;
        [entry.r_min, entry.r_max] = asg.key_ranges[ci];
        if e.records == 0 {
            return Ok((entry, Vec::new(), Vec::new(), Vec::new()));
        }
        let (vectors, ids) = reader.read(e)?;
        let graph = build_cluster_graph(vectors.view(), &ids, &params.graph, lid_stats)
            .map_err(|err| BuildError::param("graph", err.to_string()))?;
        let cross = reader.cross_links(params, anchor_graph.row(ci), &vectors, &ids)?;
        let mut global = Vec::with_capacity(params.graph.max_degree);
        for (i, &id) in ids.iter().enumerate() {
            global.clear();
            let room = params.graph.max_degree.saturating_sub(cross[i].len());
            global.extend(
                graph.neighbours[i]
                    .iter()
                    .take(room)
                    .map(|&l| e.first_record as u32 + l),
            );
            global.extend(&cross[i]);
            let loc = layout.locate(i as u64);
            let start = loc.sector as usize * SECTOR_BYTES + loc.offset_bytes as usize;
            let out = &mut buf[start..start + rb];
            match codec.dtype() {
                DType::F32 => codec.encode(vectors.row(i), id, &global, out)?,
                DType::U8 => {
                    let v: Vec<u8> = vectors.row(i).iter().map(|&x| x as u8).collect();
                    codec.encode(&v, id, &global, out)?
                }
                DType::I8 => {
                    let v: Vec<i8> = vectors.row(i).iter().map(|&x| x as i8).collect();
                    codec.encode(&v, id, &global, out)?
                }
            }
        }
        let degrees = graph.neighbours.iter().map(|l| l.len() as u32).collect();
        Ok((entry, degrees, graph.lid, graph.alpha))
    };
    let total: u64 = all_entries.iter().map(|e| e.records as u64).sum();
    let stride = total.div_ceil(DECILE_SAMPLE).max(1);
    let mut entries = Vec::with_capacity(all_entries.len());
    let mut report = GraphReport {
        degree_histogram: vec![0; params.graph.max_degree + 1],
        lid_mean: lid_stats.mean,
        lid_std: lid_stats.std,
        ..GraphReport::default()
    };
    let (mut lids, mut alphas) = (DecileSample::default(), DecileSample::default());
    let mut done = 0u64;
    for_each_window(writer, params, pool, fill, |window, outputs| {
        done += window.map(|c| all_entries[c].records as u64).sum::<u64>();
        progress(done);
        for (entry, degrees, lid, alpha) in outputs {
            for d in degrees {
                report.degree_histogram[d as usize] += 1;
            }
            let sampled = |i: usize| (entry.first_record + i as u64).is_multiple_of(stride);
            for (i, (l, a)) in lid.into_iter().zip(alpha).enumerate() {
                lids.add(l, sampled(i));
                alphas.add(a, sampled(i));
            }
            entries.push(entry);
        }
    })?;
    report.lid_deciles = lids.deciles();
    report.alpha_deciles = alphas.deciles();
    Ok((entries, report))
}

/// Most records whose LID and α the graph report's deciles are taken from.
const DECILE_SAMPLE: u64 = 1 << 20;

/// Deciles of a per-record value over a sample (every `stride`-th record, so that the report
/// holds no per-record state at any N), with the exact minimum and maximum at the ends. NaN
/// (no LID for a record alone in its cluster) is left out.
#[derive(Default)]
struct DecileSample {
    values: Vec<f32>,
    min: Option<f32>,
    max: Option<f32>,
}

impl DecileSample {
    fn add(&mut self, v: f32, sampled: bool) {
        if v.is_nan() {
            return;
        }
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
        if sampled {
            self.values.push(v);
        }
    }

    fn deciles(mut self) -> Vec<f32> {
        let mut d = deciles(&mut self.values);
        if let (Some(first), Some(min)) = (d.first_mut(), self.min) {
            *first = min;
        }
        if let (Some(last), Some(max)) = (d.last_mut(), self.max) {
            *last = max;
        }
        d
    }
}

fn deciles(v: &mut [f32]) -> Vec<f32> {
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_unstable_by(f32::total_cmp);
    (0..=10).map(|i| v[((v.len() - 1) * i) / 10]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decile_sample_has_the_exact_ends_and_skips_nan() {
        let mut all = DecileSample::default();
        let mut every_third = DecileSample::default();
        for i in 0..1001u32 {
            let v = ((i * 7919) % 1001) as f32;
            all.add(v, true);
            every_third.add(v, i % 3 == 0);
            every_third.add(f32::NAN, true);
        }
        let exact = all.deciles();
        assert_eq!(
            exact,
            (0..=10).map(|d| (d * 100) as f32).collect::<Vec<_>>()
        );
        let sampled = every_third.deciles();
        assert_eq!(sampled.len(), 11);
        assert_eq!(
            (sampled[0], sampled[10]),
            (0.0, 1000.0),
            "exact min and max"
        );
        for (s, e) in sampled.iter().zip(&exact) {
            assert!((s - e).abs() <= 30.0, "{sampled:?} vs {exact:?}");
        }
        assert!(DecileSample::default().deciles().is_empty());
    }
}
