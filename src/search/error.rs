//! Errors of opening and searching an index.

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Block(#[from] crate::multivec::BlockError),
    #[error("query has dimension {found}, the index has {expected}")]
    QueryDim { expected: usize, found: usize },
    #[error("query {query}: component {col} is not finite ({value})")]
    NonFinite {
        query: usize,
        col: usize,
        value: f32,
    },
    #[error("query {query} is the zero vector, which has no direction under cosine")]
    ZeroQuery { query: usize },
    /// A query whose distances to the index's vectors could overflow f32 (or, under cosine,
    /// that f32 cannot normalise): see [`super::Index::check_query_as`].
    #[error(
        "query {query}: its norm {norm:.3e} is outside [{min:.3e}, {max:.3e}], the query norms \
         this index can score without overflowing f32 (its vectors' norms reach {data_norm:.3e})"
    )]
    QueryNorm {
        query: usize,
        norm: f64,
        min: f64,
        max: f64,
        data_norm: f64,
    },
    #[error("k must be at least 1")]
    KZero,
    #[error("k = {k} is larger than the {n} vectors of the index")]
    KTooLarge { k: usize, n: u64 },
    #[error("invalid search parameter {name}: {what}")]
    Param { name: &'static str, what: String },
}
