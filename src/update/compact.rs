//! Compaction (`m3 compact`): folds the live updates (`wal.m3`, `delta.m3`) into a new
//! generation of the published files, so that disk use and the per-open replay stop growing
//! with the updates.
//!
//! The simplest correct fold: the live set (every live vector once, with its user id) is
//! exported beside the index (`<dir>.compact-<pid>/`, removed afterwards, and by
//! `recover_index_dir` if the process died) and the index is built again from it with the
//! parameters its manifest records (clusters of the same mean size, PQ subspaces, graph
//! degree, spill, seed), then published over `<dir>` by the build's crash-safe publication
//! (`format::publish`): the new directory has no log and no delta. A kill at any point leaves
//! the old index with its log (every acknowledged write) or the new one with every live
//! vector. The writer lock is held throughout, so no commit can land in between; searchers
//! holding the old generation keep reading it through their open descriptors
//! ([`crate::LiveIndex::refresh`] then installs the new one).
//!
//! It trains again (anchors, codebooks) rather than reusing the index's: a whole build's
//! cost, proportional to the live set, not to the updates. An index built with training
//! queries gets them from `hints.m3`, which stores every one of them, so its query anchors,
//! cross-modal edges and hints are trained again too (their answers over the new live set).

use std::path::{Path, PathBuf};

use super::{UpdateError, lock_dir};
use crate::build::{BuildParams, Silent, build_index};
use crate::data::{DType, MatrixView, VectorWriter, write_user_ids};
use crate::format::FormatError;
use crate::io::{IoBackend, ReaderOptions};
use crate::search::Index;

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Live vectors, all now in the published files.
    pub live_vectors: u64,
    /// Commits folded in.
    pub generation: u64,
    /// Bytes of the index directory before.
    pub bytes_before: u64,
    /// Bytes of the index directory after.
    pub bytes_after: u64,
}

/// `<dir>.compact-<pid>`: the exported live set.
fn staging(dir: &Path) -> PathBuf {
    crate::format::publish::sibling(dir, "compact", std::process::id())
}

/// Bytes of the files directly in `dir`.
pub fn dir_bytes(dir: &Path) -> Result<u64, FormatError> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let e = e.map_err(|e| FormatError::io(dir, e))?;
        let m = e.metadata().map_err(|err| FormatError::io(e.path(), err))?;
        if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

/// Compacts the index in `dir` (module doc), building on `pool`. Takes the writer lock
/// ([`UpdateError::Locked`] while a writer is open). An index built with training queries is
/// built again with the ones `hints.m3` stores (query anchors, edges and hints as before);
/// refused: one whose training queries are not stored (built with `--hint-depth 0`) and one
/// with nothing live.
pub fn compact(dir: &Path, pool: &rayon::ThreadPool) -> Result<CompactReport, UpdateError> {
    let dir = crate::format::index_dir::normalize_target(dir)?;
    let _lock = lock_dir(&dir)?;
    let _claim = super::StagingClaim::take(&dir)?;
    let bytes_before = dir_bytes(&dir)?;
    let index = Index::open(&dir, IoBackend::Pread, &ReaderOptions::default())?;
    let unsupported = |what: &str| UpdateError::Unsupported {
        dir: dir.clone(),
        what: what.into(),
    };
    index.check_updatable().map_err(|w| unsupported(&w))?;
    if index.n_query_anchors() > 0 && index.n_hint_queries() == 0 {
        return Err(unsupported(
            "the index was built with training queries but does not store them (no hints.m3: \
             --hint-depth 0), so its query routing cannot be built again; rebuild it with \
             m3 build",
        ));
    }
    if index.live_vectors() == 0 {
        return Err(unsupported(
            "nothing is live: there is nothing to build from",
        ));
    }
    let stage = staging(&dir);
    crate::format::publish::remove_dir_if_exists(&stage)?;
    std::fs::create_dir(&stage).map_err(|e| FormatError::io(&stage, e))?;
    let result = export_and_build(&index, &dir, &stage, pool);
    let _ = std::fs::remove_dir_all(&stage);
    let live_vectors = result?;
    Ok(CompactReport {
        live_vectors,
        generation: index.live_info().generation,
        bytes_before,
        bytes_after: dir_bytes(&dir)?,
    })
}

fn export_and_build(
    index: &Index,
    dir: &Path,
    stage: &Path,
    pool: &rayon::ThreadPool,
) -> Result<u64, UpdateError> {
    // The live set in the index's own element type, so the build stores the same type
    // (u8/i8 values come from records: exact integers of the type).
    let dtype = index.element_type();
    let base = stage.join(match dtype {
        DType::F32 => "live.fbin",
        DType::U8 => "live.u8bin",
        DType::I8 => "live.i8bin",
    });
    let ids_path = stage.join("live.u64bin");
    let dim = index.dim();
    let mut writer = VectorWriter::create(&base, dtype, dim)?;
    let mut ids = Vec::with_capacity(index.live_vectors() as usize);
    let mut rows = Vec::with_capacity(dim * 4096);
    let flush = |rows: &mut Vec<f32>, w: &mut VectorWriter| -> Result<(), UpdateError> {
        if !rows.is_empty() {
            match dtype {
                DType::F32 => w.write_rows(MatrixView::new(rows, dim)?)?,
                DType::U8 => {
                    let v: Vec<u8> = rows.iter().map(|&x| x as u8).collect();
                    w.write_rows(MatrixView::new(&v, dim)?)?
                }
                DType::I8 => {
                    let v: Vec<i8> = rows.iter().map(|&x| x as i8).collect();
                    w.write_rows(MatrixView::new(&v, dim)?)?
                }
            }
            rows.clear();
        }
        Ok(())
    };
    let mut failed = None;
    let n = index.for_each_live(&mut |id, v| {
        ids.push(id);
        rows.extend_from_slice(v);
        if rows.len() >= dim * 4096
            && let Err(e) = flush(&mut rows, &mut writer)
        {
            failed = Some(e);
            return Err(crate::search::SearchError::Param {
                name: "export",
                what: "writing the live set failed".into(),
            });
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    n?;
    flush(&mut rows, &mut writer)?;
    writer.finish()?;
    write_user_ids(&ids_path, &ids)?;
    let meta = *index.meta();
    let mut p = BuildParams::new(base, index.metric(), dir.to_path_buf());
    p.ids = Some(ids_path);
    p.seed = meta.seed;
    p.clusters.target_size = meta.n_vectors.div_ceil(u64::from(meta.n_clusters.max(1))) as usize;
    if meta.anchor_degree > 0 {
        p.clusters.anchor_degree = meta.anchor_degree as usize;
    }
    p.pq.subspaces = Some(meta.pq_subspaces as usize);
    p.graph.max_degree = meta.max_degree as usize;
    p.graph.candidates = p.graph.candidates.max(p.graph.max_degree);
    p.spill.max_copies = meta.spill_max as usize;
    p.spill.epsilon = meta.spill_epsilon;
    p.pq.refine = index.has_refinement();
    if let Some((queries, depth)) = index.hint_queries() {
        // The training queries as hints.m3 keeps them (normalised under cosine, where the
        // build's normalisation leaves them as they are): query anchors, edges and hints are
        // trained again from them with the manifest's counts.
        let path = stage.join("train_query.fbin");
        let mut w = VectorWriter::create(&path, DType::F32, dim)?;
        w.write_rows(queries)?;
        w.finish()?;
        p.train_queries = Some(path);
        p.routing.hint_depth = depth;
        if meta.n_query_anchors > 0 {
            p.routing.query_anchors = Some(meta.n_query_anchors as usize);
        }
        if meta.edges_per_query_anchor > 0 {
            p.routing.edges_per_anchor = meta.edges_per_query_anchor as usize;
        }
    }
    build_index(&p, pool, &Silent)?;
    Ok(ids.len() as u64)
}
