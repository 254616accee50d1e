//! A tiny but complete index (50-d f32, R = 32, 4 clusters of 30, 0, 13, 7 records) for the
//! format tests, and byte-patching helpers.
#![allow(dead_code)]

use std::path::Path;

use m3::data::{DType, Matrix};
use m3::format::files::*;
use m3::format::header::{COMMON_HEADER_BYTES, HEADER_CRC_OFFSET};
use m3::format::{
    ClusterTable, DataFileParams, DataFileWriter, IndexDirWriter, IndexMeta, Manifest, NO_ID,
    PqFile, Routing, Stats,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const DIM: u32 = 50;
pub const R: u32 = 32;
pub const SIZES: [u32; 4] = [30, 0, 13, 7];
pub const N_RECORDS: u64 = 50;
pub const N_VECTORS: u64 = 45;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn floats(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn sample_routing(seed: u64, k: usize) -> Routing {
    let mut r = rng(seed);
    let edges = (0..k * 3)
        .map(|i| {
            if i % 3 == 2 {
                NO_ID
            } else {
                r.random_range(0..SIZES.len() as u32)
            }
        })
        .collect();
    Routing {
        anchors: Matrix::from_vec(floats(&mut r, k * DIM as usize), DIM as usize).unwrap(),
        edges: Matrix::from_vec(edges, 3).unwrap(),
    }
}

pub fn sample_stats(seed: u64) -> Stats {
    let mut r = rng(seed);
    let d = DIM as usize;
    Stats {
        base_count: N_VECTORS,
        query_count: 17,
        has_query_stats: true,
        lid_mean: 11.5,
        lid_std: 2.25,
        // The largest norm of the sample records (verify checks it).
        max_base_norm: (0..N_RECORDS)
            .map(|g| {
                record_vector(g)
                    .iter()
                    .map(|&v| f64::from(v).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max) as f32,
        base_mean: floats(&mut r, d),
        base_var: floats(&mut r, d).iter().map(|v| v.abs()).collect(),
        query_mean: floats(&mut r, d),
        query_var: floats(&mut r, d).iter().map(|v| v.abs()).collect(),
    }
}

pub fn sample_pq(seed: u64, n_records: usize) -> PqFile {
    let mut r = rng(seed);
    let bounds = vec![0, 10, 25, DIM];
    PqFile {
        codebooks: floats(&mut r, 256 * DIM as usize),
        codes: Matrix::from_vec((0..n_records * 3).map(|_| r.random()).collect(), 3).unwrap(),
        correction: floats(&mut r, n_records),
        error: floats(&mut r, n_records).iter().map(|v| v.abs()).collect(),
        residual: true,
        bounds,
    }
}

/// Vector of record `i` (deterministic).
pub fn record_vector(i: u64) -> Vec<f32> {
    floats(&mut rng(1000 + i), DIM as usize)
}

/// Neighbours of record `i`: `i % 5` ids.
pub fn record_neighbours(i: u64) -> Vec<u32> {
    (0..i % 5)
        .map(|j| ((i * 7 + j * 3) % N_RECORDS) as u32)
        .collect()
}

/// Writes `data.m3` + `sectors.m3` into `dir` from two threads; returns the writer's cluster
/// entries (radii filled in) and the two file entries.
pub fn write_data(dir: &Path) -> (ClusterTable, Vec<m3::format::FileEntry>) {
    let params = DataFileParams {
        dim: DIM,
        dtype: DType::F32,
        max_degree: R,
        cluster_sizes: &SIZES,
    };
    let w = DataFileWriter::create(&dir.join(DATA_FILE), &params).unwrap();
    let mut entries = w.cluster_entries().to_vec();
    let codec = *w.codec();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (w, entries) = (&w, &entries);
            s.spawn(move || {
                let mut buf = vec![0u8; codec.record_bytes() as usize];
                for (c, e) in entries.iter().enumerate() {
                    for i in 0..e.records {
                        let g = e.first_record + i as u64;
                        if g % 2 != t {
                            continue;
                        }
                        let v = record_vector(g);
                        let id = (g % N_VECTORS) as u32;
                        codec
                            .encode(&v, id, &record_neighbours(g), &mut buf)
                            .unwrap();
                        w.write_record(c as u32, i, &buf).unwrap();
                    }
                }
            });
        }
    });
    for e in &mut entries {
        e.r_min = 0.5;
        e.r_max = 1.5;
    }
    let (d, s) = w.finish(&dir.join(SECTORS_FILE)).unwrap();
    let mut r = rng(7);
    let k = SIZES.len();
    let table = ClusterTable {
        centroids: Matrix::from_vec(floats(&mut r, k * DIM as usize), DIM as usize).unwrap(),
        entries,
        anchor_graph: Matrix::from_vec(vec![1, 2, 0, NO_ID, 3, 0, 2, 1], 2).unwrap(),
    };
    (table, vec![d, s])
}

pub fn sample_meta(data_sectors: u64, file_count: u32) -> IndexMeta {
    let mut m: IndexMeta = bytemuck::Zeroable::zeroed();
    m.dim = DIM;
    m.set_dtype(DType::F32);
    m.set_metric(m3::distance::Metric::L2);
    m.distance_mode = 1;
    m.flags = 3;
    m.n_vectors = N_VECTORS;
    m.n_records = N_RECORDS;
    m.n_clusters = SIZES.len() as u32;
    m.n_query_anchors = 3;
    m.pq_subspaces = 3;
    m.max_degree = R;
    m.record_bytes = m3::format::record::record_bytes(DIM, DType::F32, R).unwrap();
    m.file_count = file_count;
    m.data_sectors = data_sectors;
    m.seed = 42;
    m.lccmd_alpha = 0.5;
    m.lccmd_beta = 0.25;
    m.spill_epsilon = 0.1;
    m.spill_max = 2;
    m.alpha_min = 1.0;
    m.alpha_max = 1.3;
    m.lid_k = 20;
    m.anchor_degree = 2;
    m.edges_per_query_anchor = 3;
    m.build_threads = 2;
    m
}

/// Writes and publishes the sample index at `target`; returns its manifest.
pub fn publish_index(target: &Path) -> Manifest {
    let w = IndexDirWriter::create(target).unwrap();
    let manifest = write_files(&w);
    w.publish(&manifest).unwrap();
    manifest
}

/// Writes every file but the manifest into the writer's directory; returns the manifest.
pub fn write_files(w: &IndexDirWriter) -> Manifest {
    let (table, mut files) = write_data(w.dir());
    files.push(table.write(&w.path(CLUSTERS_FILE)).unwrap());
    files.push(sample_routing(1, 3).write(&w.path(ROUTING_FILE)).unwrap());
    files.push(sample_stats(2).write(&w.path(STATS_FILE)).unwrap());
    files.push(
        sample_pq(3, N_RECORDS as usize)
            .write(&w.path(PQ_FILE))
            .unwrap(),
    );
    let data_sectors = SIZES.iter().map(|&n| (n as u64).div_ceil(12)).sum();
    Manifest {
        meta: sample_meta(data_sectors, files.len() as u32),
        files,
    }
}

/// Recomputes the header CRC of a file image after a deliberate patch.
pub fn fix_crc(bytes: &mut [u8]) {
    let hb = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
    let crc = crc32c::crc32c(&bytes[..hb]);
    bytes[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the recorded `file_bytes` and fixes the CRC.
pub fn set_file_bytes(bytes: &mut [u8], len: u64) {
    bytes[16..24].copy_from_slice(&len.to_le_bytes());
    fix_crc(bytes);
}

/// Overwrites the kind-specific field at `offset` (from the file start) and fixes the CRC.
pub fn patch(bytes: &mut [u8], offset: usize, value: &[u8]) {
    assert!(offset >= COMMON_HEADER_BYTES);
    bytes[offset..offset + value.len()].copy_from_slice(value);
    fix_crc(bytes);
}

pub fn header_bytes(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize
}
