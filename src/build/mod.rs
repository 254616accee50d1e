//! Building an index (DESIGN §2): train → query routing → assign → neighbour lists and
//! layout → publish. The base is streamed; it is never held whole in RAM.

mod assign;
mod error;
mod params;
mod routing;
mod stats;
mod train;

pub use assign::{Assignment, assign};
pub use error::BuildError;
pub use params::{
    AlphaChoice, BuildParams, ClusterParams, GraphBuildParams, PqBuildParams, RoutingParams,
    SpillParams,
};
pub use routing::{QueryRouting, train_routing};
pub use stats::Welford;
pub use train::{Trained, normalize_rows, scan_base, train};
