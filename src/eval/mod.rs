//! How good is a setting, and which setting is best? Measurement on a query set with ground
//! truth, on top of the query engine: what `m3 bench`, `m3 tune`, `m3 calibrate` and
//! `m3 baseline` print, callable from any program (the CLI parses flags, calls these and
//! prints; a Python package calls the same functions).
//!
//! - [`evaluate`]: one measured point ([`BenchPoint`]: recall@k, QPS, latency, I/O);
//! - [`Sweep`], [`sweep_points`]: the cartesian product of `knob=v1,v2,…` lists;
//! - [`tune`]: the fastest secondary setting whose smallest sufficient `nprobe` reaches a
//!   recall target;
//! - [`QuerySet`]: queries from one file or from a multi-vector index's block files, with
//!   block weights resolved against the index;
//! - [`calibrate`]: the rerank distance (native or LC-CMD α, β) chosen from query/partner
//!   pairs, confirmed on held-out pairs, and stored in the index ([`Calibration::store`]);
//! - [`Baseline`]: the multi-vector comparison system (one single-vector index per block,
//!   candidates merged by the exact weighted distance).

mod baseline;
mod calibrate;
mod point;
mod queries;
mod sweep;
mod tune;

use std::path::PathBuf;

pub use baseline::{Baseline, BaselineKnobs, BaselinePoint, BaselineRun, BlockVectors};
pub use calibrate::{
    Calibration, CalibrationBase, CalibrationParams, CalibrationPoint, calibrate, partner_hits,
    read_partners,
};
pub use point::{BenchPoint, evaluate, evaluate_sharded};
pub use queries::{QuerySet, QuerySource, read_query_rows};
pub use sweep::{Sweep, SweepError, sweep_points};
pub use tune::{TuneParams, tune};

/// Errors of evaluation: the engine's and the inputs' errors as they are, and what the
/// evaluation itself refuses.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    /// The engine refused a query or parameter.
    Search(#[from] crate::search::SearchError),
    #[error(transparent)]
    /// An input file could not be read.
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    /// Multi-vector block files or weights do not fit together.
    Block(#[from] crate::multivec::BlockError),
    #[error(transparent)]
    /// An index file could not be read or written.
    Format(#[from] crate::format::FormatError),
    /// Block queries for an index built from a single base file.
    #[error("block queries need a multi-vector index; {} was built from a single base", index.display())]
    NotMultiVector {
        /// The index directory.
        index: PathBuf,
    },
    /// A partner file with fewer rows than there are calibration queries.
    #[error("{}: {found} partner rows for {queries} calibration queries", path.display())]
    PartnerRows {
        /// The partner file.
        path: PathBuf,
        /// Rows it has.
        found: usize,
        /// Calibration queries.
        queries: usize,
    },
    /// The calibration report could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
