//! Training-query hints (`hints.m3`, docs/decisions/0007-training-query-hints.md): every
//! training query's exact top-`depth` answers over the whole base, as records.
//!
//! Two steps. [`exact_answers`] streams the base once and keeps each training query's exact
//! best `depth` base rows (blocked matrix products, `crate::exact::ExactSearch`): training
//! queries × N × dim multiply-adds, the cost RoarGraph pays for its training-query graph.
//! [`answers_to_records`] then reads the assign stage's record-id scratch file once and
//! replaces every base row by one of its records (the first in record order; a spilled vector
//! has several). RAM: the queries, `queries × depth` heap entries and a map over the distinct
//! answer rows (at most `queries × depth`).

use std::collections::HashMap;

use super::source::BaseSource;
use super::{BuildError, BuildParams, RecordIds};
use crate::data::Matrix;
use crate::distance::Metric;
use crate::exact::{ExactSearch, Neighbor};
use crate::format::NO_ID;

/// Base rows per streamed chunk of the exact search.
const CHUNK_ROWS: usize = 1 << 15;

/// The exact top-`depth` base rows of every training query (`queries` in the build's
/// coordinates, as `train_routing` prepared them), best first; over the rows of `only`
/// (ascending) when given, else over the whole base.
pub fn exact_answers(
    params: &BuildParams,
    base: &BaseSource,
    queries: &Matrix<f32>,
    depth: usize,
    only: Option<&[u32]>,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Vec<Neighbor>>, BuildError> {
    // Both sides are normalised already under cosine: rank by the inner product.
    let metric = match params.metric {
        Metric::Cosine => Metric::InnerProduct,
        m => m,
    };
    let depth = depth.min(base.rows() as usize).max(1);
    pool.install(|| {
        let mut search = ExactSearch::new(queries.view(), depth, metric)?;
        let mut done = 0u64;
        for chunk in base.chunks_prepared(CHUNK_ROWS, params.metric) {
            let (first, mut rows) = chunk?;
            done += rows.rows() as u64;
            match only {
                None => search.add_chunk(first, &mut rows)?,
                Some(ids) => add_selected(&mut search, ids, first, &rows)?,
            }
            progress(done);
        }
        let mut answers = search.finish();
        if let Some(ids) = only {
            // Positions in `only` back to base rows (ascending, so ties keep their order).
            answers
                .iter_mut()
                .flatten()
                .for_each(|n| n.id = ids[n.id as usize]);
        }
        Ok(answers)
    })
}

/// Adds the rows of `chunk` (base rows from `first` on) that `ids` (ascending) names, each
/// numbered by its position in `ids`.
fn add_selected(
    search: &mut ExactSearch,
    ids: &[u32],
    first: u64,
    chunk: &Matrix<f32>,
) -> Result<(), BuildError> {
    let end = first + chunk.rows() as u64;
    let lo = ids.partition_point(|&r| u64::from(r) < first);
    let hi = ids.partition_point(|&r| u64::from(r) < end);
    if hi == lo {
        return Ok(());
    }
    let mut rows = Vec::with_capacity((hi - lo) * chunk.dim());
    for &r in &ids[lo..hi] {
        rows.extend_from_slice(chunk.row((u64::from(r) - first) as usize));
    }
    let mut rows = Matrix::from_vec(rows, chunk.dim())?;
    search.add_chunk(lo as u64, &mut rows)?;
    Ok(())
}

/// `answers` (base rows) as a `queries × depth` matrix of record ids, [`NO_ID`] padded.
pub fn answers_to_records(
    answers: &[Vec<Neighbor>],
    depth: usize,
    ids: &RecordIds,
    n_records: u64,
) -> Result<Matrix<u32>, BuildError> {
    let mut record_of: HashMap<u32, u32> =
        answers.iter().flatten().map(|n| (n.id, NO_ID)).collect();
    let step = 1u64 << 20;
    let mut first = 0u64;
    while first < n_records {
        let count = (n_records - first).min(step) as usize;
        for (i, row) in ids.read(first, count)?.into_iter().enumerate() {
            if let Some(r) = record_of.get_mut(&row)
                && *r == NO_ID
            {
                *r = (first + i as u64) as u32;
            }
        }
        first += count as u64;
    }
    let depth = depth.max(1);
    let mut out = vec![NO_ID; answers.len() * depth];
    for (q, list) in answers.iter().enumerate() {
        for (slot, n) in out[q * depth..(q + 1) * depth].iter_mut().zip(list) {
            *slot = record_of[&n.id];
        }
    }
    Ok(Matrix::from_vec(out, depth)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u32) -> Neighbor {
        Neighbor { id, dist: 0.0 }
    }

    /// Every answer becomes the first record holding its base row; short lists are padded.
    #[test]
    fn answers_map_to_the_first_record_of_their_row() {
        let dir = tempfile::tempdir().unwrap();
        // Records in cluster order; base row 7 was spilled into records 1 and 4.
        let ids = RecordIds::write_for_test(&dir.path().join("ids"), &[3, 7, 0, 5, 7, 1]);
        let answers = vec![vec![n(7), n(0), n(5)], vec![n(1)]];
        let m = answers_to_records(&answers, 3, &ids, 6).unwrap();
        assert_eq!(m.row(0), &[1, 2, 3]);
        assert_eq!(m.row(1), &[5, NO_ID, NO_ID]);
    }
}
