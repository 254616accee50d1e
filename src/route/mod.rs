//! Routing (DESIGN §3 step 2, §4.2): which clusters a query goes to.
//!
//! Both sides live here. The build side ([`QueryRouting::train`]) clusters the training
//! queries into query anchors and gives each the base clusters its queries' neighbours vote
//! for (cross-modal edges, stored in `routing.m3`). The query side ([`Router`]) ranks anchors
//! for a query, exactly or in two levels when there are many (the coarse level stored in
//! `coarse.m3`, or built at open), with [`AnchorScores`] holding one query's anchor scores.
//! The query engine (`search`) probes the clusters of the best base anchors and those behind
//! the best query anchors; the build (`build`) trains the query anchors and stores both. [`SpillRule`] says which
//! further clusters hold a vector's spill copies (the build's and the live inserts' rule).

mod query_anchors;
mod router;
mod spill;

pub use query_anchors::{QueryRouting, RouteError, RoutingInputs, RoutingParams};
pub use router::{AnchorOrder, AnchorScores, DEFAULT_ROUTE_MIN_K, Router, best_first};
pub use spill::SpillRule;
