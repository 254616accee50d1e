//! Errors of the index build.

use std::path::PathBuf;

/// What can stop a build: bad parameters, unreadable or bad input, a failed write.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading or checking an input file failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Writing or publishing an index file failed, or the output is not one the build may
    /// replace.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// k-means could not run (e.g. fewer rows than clusters).
    #[error("k-means of the {what}: {source}")]
    KMeans {
        /// Which k-means (base anchors, query anchors, …).
        what: &'static str,
        /// Why.
        #[source]
        source: crate::kmeans::KMeansError,
    },
    /// The blocks of a multi-vector base are inconsistent.
    #[error(transparent)]
    Block(#[from] crate::multivec::BlockError),
    /// Product quantization could not be trained.
    #[error(transparent)]
    Pq(#[from] crate::pq::PqError),
    /// A build parameter is out of range.
    #[error("invalid build parameter {name}: {what}")]
    Param {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// The operating system refused an operation on a file of the build.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::route::RouteError> for BuildError {
    fn from(e: crate::route::RouteError) -> Self {
        match e {
            crate::route::RouteError::KMeans(source) => BuildError::KMeans {
                what: "training queries",
                source,
            },
            crate::route::RouteError::Data(e) => BuildError::Data(e),
        }
    }
}

impl BuildError {
    /// A [`BuildError::Param`] for parameter `name`.
    pub fn param(name: &'static str, what: impl Into<String>) -> Self {
        BuildError::Param {
            name,
            what: what.into(),
        }
    }
}
