//! Stage 2, query routing: the training queries, read and brought into the build's
//! coordinates, become query anchors with cross-modal edges ([`QueryRouting::train`], module
//! `route`).

use super::source::BaseSource;
use super::train::Trained;
use super::{BuildError, BuildParams};
use crate::data::{DataError, VectorFile};
use crate::route::{QueryRouting, RoutingInputs};

/// The query routing of the build's training queries; `None` without them.
#[doc(hidden)]
pub fn train_routing(
    params: &BuildParams,
    base: &BaseSource,
    trained: &Trained,
    pool: &rayon::ThreadPool,
) -> Result<Option<QueryRouting>, BuildError> {
    let Some(path) = &params.train_queries else {
        return Ok(None);
    };
    let file = VectorFile::open(path)?;
    let dim = trained.sample.dim();
    if file.dim() != dim {
        return Err(DataError::DimMismatch {
            expected_what: format!("base {}", base.path().display()),
            expected: dim,
            found_what: format!("training queries {}", path.display()),
            found: file.dim(),
        }
        .into());
    }
    let mut queries = file.read_all_f32()?;
    // Training queries are full rows (every block, raw values): the same normalisation and
    // block scales as the base.
    base.prepare_rows(&mut queries, 0, params.metric, Some(path))?;
    let inputs = RoutingInputs {
        queries,
        sample: trained.sample.view(),
        sample_labels: &trained.sample_labels,
        metric: params.metric,
        kmeans_iters: params.clusters.kmeans_iters,
        seed: params.seed,
    };
    Ok(Some(QueryRouting::train(&params.routing, inputs, pool)?))
}
