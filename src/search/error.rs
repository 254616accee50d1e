//! Errors of opening and searching an index.

/// What can go wrong opening or searching an index. Three kinds a caller can act on: a bad
/// query or parameter (`QueryDim`, `NonFinite`, `ZeroQuery`, `QueryNorm`, `KZero`, `KTooLarge`,
/// `Param`, `Block`), a corrupt index (`Format`, `Data`) and a failed read (`Io`).
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// An index file is missing, corrupt, or of an unsupported version; or a record read from
    /// `data.m3` fails its checks.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// Reading `data.m3` failed.
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// Reading a vector file failed (calibration, evaluation).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Multi-vector query weights or block names do not fit the index.
    #[error(transparent)]
    Block(#[from] crate::multivec::BlockError),
    /// The query's dimension is not the index's.
    #[error("query has dimension {found}, the index has {expected}")]
    QueryDim {
        /// The index's dimension.
        expected: usize,
        /// The query's.
        found: usize,
    },
    /// A query component is NaN or infinite.
    #[error("query {query}: component {col} is not finite ({value})")]
    NonFinite {
        /// The query's position in its batch.
        query: usize,
        /// The 0-based component.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A cosine query is all zeros.
    #[error("query {query} is the zero vector, which has no direction under cosine")]
    ZeroQuery {
        /// The query's position in its batch.
        query: usize,
    },
    /// A query whose distances to the index's vectors could overflow f32 (or, under cosine,
    /// that f32 cannot normalise): see [`super::Index::check_query_as`].
    #[error(
        "query {query}: its norm {norm:.3e} is outside [{min:.3e}, {max:.3e}], the query norms \
         this index can score without overflowing f32 (its vectors' norms reach {data_norm:.3e})"
    )]
    QueryNorm {
        /// The query's position in its batch.
        query: usize,
        /// The query's norm.
        norm: f64,
        /// Smallest norm accepted.
        min: f64,
        /// Largest norm accepted.
        max: f64,
        /// The largest norm of the index's vectors.
        data_norm: f64,
    },
    /// Zero neighbours were asked for.
    #[error("k must be at least 1")]
    KZero,
    /// More neighbours were asked for than the index holds.
    #[error("k = {k} is larger than the {n} vectors of the index")]
    KTooLarge {
        /// Neighbours asked for.
        k: usize,
        /// Vectors in the index.
        n: u64,
    },
    /// A search parameter is out of range.
    #[error("invalid search parameter {name}: {what}")]
    Param {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        what: String,
    },
}
