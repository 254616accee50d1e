//! Errors of the index build.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error("k-means of the {what}: {source}")]
    KMeans {
        what: &'static str,
        #[source]
        source: crate::kmeans::KMeansError,
    },
    #[error(transparent)]
    Block(#[from] crate::multivec::BlockError),
    #[error(transparent)]
    Pq(#[from] crate::pq::PqError),
    #[error("invalid build parameter {name}: {what}")]
    Param { name: &'static str, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub fn param(name: &'static str, what: impl Into<String>) -> Self {
        BuildError::Param {
            name,
            what: what.into(),
        }
    }
}
