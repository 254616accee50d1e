//! The JSON of the HTTP API: request and response bodies, and the checks that turn a request
//! into work for the search workers (or into a 400 naming the field at fault).
//!
//! Requests reject unknown fields, so a misspelt knob is an error rather than a silently
//! ignored setting. Distances in responses are in the metric's natural units (squared L2,
//! inner product, cosine similarity), or LC-CMD's D² when the rerank used it; ids are the
//! user ids the index was built with (`m3 build --ids`), or row numbers of the base file the
//! index was built from when it was built without.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ApiError, Limits};
use crate::distance::Metric;
use crate::search::{Index, QueryStats, RerankDistance, SearchParams};

/// `POST /v1/search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// One or more query vectors, each of the index's dimension.
    pub vectors: Vec<Vec<f32>>,
    /// Neighbours per query (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Search knobs; absent ones take the engine's defaults for `k`. Exact search takes only
    /// `block_weights` (it reads what it must to be exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<Knobs>,
    /// Exact k-NN (recall 1 by construction) instead of the approximate search.
    #[serde(default)]
    pub exact: bool,
}

fn default_k() -> usize {
    SearchParams::DEFAULT_K
}

/// The knobs of [`SearchParams`], each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Base clusters probed ([`SearchParams::nprobe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// Query-modality anchors consulted ([`SearchParams::qprobe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qprobe: Option<usize>,
    /// Cross-modal edges followed per query anchor ([`SearchParams::edges`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<usize>,
    /// Nearest training queries whose answers (`hints.m3`) are scored; 0 = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<usize>,
    /// Answers taken from each (0 = all the index stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint_depth: Option<usize>,
    /// Candidates read and reranked exactly ([`SearchParams::rerank`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<usize>,
    /// Candidates re-ranked by the refinement codes ([`SearchParams::refine`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<usize>,
    /// Rounds along neighbour lists ([`SearchParams::expand_rounds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_rounds: Option<usize>,
    /// Best results whose neighbour lists feed a round ([`SearchParams::expand_from`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_from: Option<usize>,
    /// Records read per round ([`SearchParams::expand_read`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_read: Option<usize>,
    /// Triangle-inequality early stop ([`SearchParams::early_stop`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<bool>,
    /// `auto` (default: what calibration stored in the index, as `m3 search` does), `native`
    /// or `lccmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<DistanceMode>,
    /// LC-CMD α (only with `distance: lccmd`; default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// LC-CMD β (only with `distance: lccmd`; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f32>,
    /// Multi-vector indexes: weight per block name (blocks not named keep their build
    /// weight; 0 leaves a block out). The query vector is the blocks concatenated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_weights: Option<std::collections::BTreeMap<String, f32>>,
}

/// The `distance` knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistanceMode {
    /// What calibration stored in the index (native when it was not calibrated).
    Auto,
    /// The index's metric.
    Native,
    /// LC-CMD with `alpha` and `beta`.
    Lccmd,
}

impl Knobs {
    /// Every knob of `p` (for clients that want to send a complete setting).
    pub fn from_params(p: &SearchParams) -> Self {
        let (distance, alpha, beta) = match p.distance {
            RerankDistance::Native => (Some(DistanceMode::Native), None, None),
            RerankDistance::LcCmd { alpha, beta } => {
                (Some(DistanceMode::Lccmd), Some(alpha), Some(beta))
            }
        };
        Self {
            nprobe: Some(p.nprobe),
            qprobe: Some(p.qprobe),
            edges: Some(p.edges),
            hints: Some(p.hints),
            hint_depth: Some(p.hint_depth),
            rerank: Some(p.rerank),
            refine: Some(p.refine),
            expand_rounds: Some(p.expand_rounds),
            expand_from: Some(p.expand_from),
            expand_read: Some(p.expand_read),
            early_stop: Some(p.early_stop),
            distance,
            alpha,
            beta,
            block_weights: None,
        }
    }
}

/// `POST /v1/range`: every vector within `radius` of each query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    /// One or more query vectors, each of the index's dimension.
    pub vectors: Vec<Vec<f32>>,
    /// In the metric's natural unit: squared L2 ≤ radius; inner product or cosine similarity
    /// ≥ radius.
    pub radius: f32,
    /// Results kept per query, best first (default and maximum: the server's
    /// `max_range_results`); a query with more is marked `truncated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    /// Multi-vector indexes: weight per block name, as in [`Knobs::block_weights`]; the
    /// radius is in units of the weighted distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_weights: Option<std::collections::BTreeMap<String, f32>>,
}

/// The answer to a search or range request: one result per query vector, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// One result per query vector, in request order.
    pub results: Vec<QueryResult>,
    /// What the request cost.
    pub stats: ResponseStats,
}

/// One query's neighbours, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// User ids (`m3 build --ids`; base row numbers for an index built without), best first.
    pub ids: Vec<u64>,
    /// Their distances, in the metric's natural unit (squared L2, inner product, cosine
    /// similarity; LC-CMD's D² under `distance: lccmd`).
    pub distances: Vec<f32>,
    /// Range queries only: more vectors were within the radius than `max_results`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What a request cost, summed over its queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseStats {
    /// Query vectors answered.
    pub queries: u64,
    /// Read requests (coalesced sector ranges) to the data file.
    pub reads: u64,
    /// 4 KiB sectors read from the data file.
    pub sectors: u64,
    /// Bytes read from the data file.
    pub bytes: u64,
    /// Batches of reads waited on.
    pub io_rounds: u64,
    /// Exact distances computed.
    pub dist_comps: u64,
    /// Wall time from the start of the request to the answer, in microseconds.
    pub took_us: u64,
}

impl ResponseStats {
    pub(crate) fn add(&mut self, s: &QueryStats) {
        self.queries += 1;
        self.reads += s.reads;
        self.sectors += s.sectors;
        self.bytes += s.bytes;
        self.io_rounds += s.io_rounds;
        self.dist_comps += s.dist_comps;
    }
}

/// What a checked request asks the workers to do for each of its vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKind {
    Approx(SearchParams),
    /// `block_weights`: one per block of a multi-vector index (`None`: the build weights).
    Exact {
        k: usize,
        block_weights: Option<Vec<f32>>,
    },
    /// `radius` in natural units.
    Range {
        radius: f32,
        max_results: usize,
        block_weights: Option<Vec<f32>>,
    },
}

/// A request that passed every check: its vectors and what to do with them.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    pub vectors: Vec<Vec<f32>>,
    pub kind: QueryKind,
}

/// Parses a JSON body; errors name the field (as a JSON path) where parsing stopped.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let r: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = r.map_err(|e| {
        let inner = e.inner().to_string();
        // The path names the unknown field itself for `deny_unknown_fields` errors.
        let path = e.path().to_string();
        if path == "." {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {inner}"),
            )
        } else {
            ApiError::field(path, inner)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e} (after the request object)"),
        )
    })?;
    Ok(value)
}

impl SearchRequest {
    /// Checks the request against the index and the limits.
    pub(crate) fn check(self, index: &Index, limits: &Limits) -> Result<CheckedRequest, ApiError> {
        check_vectors(&self.vectors, index, limits)?;
        let k = self.k;
        if k == 0 {
            return Err(ApiError::field("k", "k must be at least 1"));
        }
        if k > limits.max_k {
            return Err(ApiError::field(
                "k",
                format!("k = {k} is above this server's limit of {}", limits.max_k),
            ));
        }
        if k as u64 > index.n_vectors() {
            return Err(ApiError::field(
                "k",
                format!(
                    "k = {k} is larger than the {} vectors of the index",
                    index.n_vectors()
                ),
            ));
        }
        let kind = if self.exact {
            let knobs = self.knobs.unwrap_or_default();
            let Knobs { block_weights, .. } = &knobs;
            let others = Knobs {
                block_weights: None,
                ..knobs.clone()
            };
            if others != Knobs::default() {
                return Err(ApiError::field(
                    "knobs",
                    "exact search takes no knobs but block_weights (it reads what it must to \
                     be exact)",
                ));
            }
            QueryKind::Exact {
                k,
                block_weights: resolve_block_weights(
                    block_weights.as_ref(),
                    index,
                    "knobs.block_weights",
                )?,
            }
        } else {
            QueryKind::Approx(self.knobs.unwrap_or_default().params(k, index, limits)?)
        };
        Ok(CheckedRequest {
            vectors: self.vectors,
            kind,
        })
    }
}

impl RangeRequest {
    pub(crate) fn check(self, index: &Index, limits: &Limits) -> Result<CheckedRequest, ApiError> {
        check_vectors(&self.vectors, index, limits)?;
        if !self.radius.is_finite() {
            return Err(ApiError::field(
                "radius",
                "the radius must be a finite number",
            ));
        }
        if index.metric() == Metric::L2 && self.radius < 0.0 {
            return Err(ApiError::field(
                "radius",
                format!("a squared L2 radius cannot be negative ({})", self.radius),
            ));
        }
        let max_results = self.max_results.unwrap_or(limits.max_range_results);
        if max_results == 0 || max_results > limits.max_range_results {
            return Err(ApiError::field(
                "max_results",
                format!(
                    "max_results must be in 1..={} (this server's limit), got {max_results}",
                    limits.max_range_results
                ),
            ));
        }
        Ok(CheckedRequest {
            vectors: self.vectors,
            kind: QueryKind::Range {
                radius: self.radius,
                max_results,
                block_weights: resolve_block_weights(
                    self.block_weights.as_ref(),
                    index,
                    "block_weights",
                )?,
            },
        })
    }
}

/// Block weights by name → one weight per block of the index (names not given keep their
/// build weight); errors name `field`.
fn resolve_block_weights(
    given: Option<&std::collections::BTreeMap<String, f32>>,
    index: &Index,
    field: &str,
) -> Result<Option<Vec<f32>>, ApiError> {
    let Some(w) = given else {
        return Ok(None);
    };
    let given: Vec<(String, f32)> = w.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let blocks = index.blocks().map_or(0, |t| t.blocks.len());
    index
        .block_weights(&given, &vec![true; blocks])
        .map(Some)
        .map_err(|e| ApiError::field(field, e.to_string()))
}

/// `POST /v1/upsert`: insert the vectors under their ids, replacing the vectors of ids that
/// are live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// User ids (unsigned 64-bit integers), one per vector; the last of repeated ids wins.
    pub ids: Vec<u64>,
    /// The vectors, each of the index's dimension, finite; on a u8 or i8 index integers
    /// within the type's range.
    pub vectors: Vec<Vec<f32>>,
}

/// `POST /v1/delete`: delete the vectors of these ids (ids that are not live are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// User ids (unsigned 64-bit integers).
    pub ids: Vec<u64>,
}

/// `POST /v1/compact`: a per-cluster merge now (decision 0012). An empty body is `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactRequest {
    /// Merge every cluster (`m3 merge --all`) instead of what the default merge policy
    /// chooses.
    #[serde(default)]
    pub all: bool,
}

/// The answer to `POST /v1/compact`, sent once the merged generation is installed for the
/// searchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactResponse {
    /// Whether a merge ran (`false`: the policy chose no cluster).
    pub merged: bool,
    /// Clusters rewritten.
    pub clusters: usize,
    /// Records written into the new data segment.
    pub records_written: u64,
    /// Bytes of the index directory before the merge.
    pub bytes_before: u64,
    /// Bytes of the index directory after the merge.
    pub bytes_after: u64,
    /// The generation searches now see.
    pub generation: u64,
}

/// The answer to a write: it is durable and every search that starts from now on sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The generation (commits since the index was published) that holds the write.
    pub generation: u64,
    /// Write requests committed together with this one (group commit), itself included.
    pub requests_in_commit: usize,
}

impl UpsertRequest {
    /// Checks the request against the index and the limits: as many ids as vectors, each
    /// vector of the index's dimension and finite (on a u8 or i8 index, integers within the
    /// type's range). Returns the ids and the vectors row-major.
    pub(crate) fn check(
        self,
        index: &Index,
        limits: &Limits,
    ) -> Result<(Vec<u64>, Vec<f32>), ApiError> {
        if self.ids.len() != self.vectors.len() {
            return Err(ApiError::field(
                "ids",
                format!("{} ids for {} vectors", self.ids.len(), self.vectors.len()),
            ));
        }
        check_vectors(&self.vectors, index, limits)?;
        for (i, v) in self.vectors.iter().enumerate() {
            check_element_type(v, i, index)?;
        }
        Ok((self.ids, self.vectors.concat()))
    }
}

impl DeleteRequest {
    /// Checks the request against the limits: one id at least, at most `max_vectors`.
    pub(crate) fn check(self, limits: &Limits) -> Result<Vec<u64>, ApiError> {
        if self.ids.is_empty() || self.ids.len() > limits.max_vectors {
            return Err(ApiError::field(
                "ids",
                format!(
                    "{} ids: give between 1 and {} (this server's limit)",
                    self.ids.len(),
                    limits.max_vectors
                ),
            ));
        }
        Ok(self.ids)
    }
}

fn check_vectors(vectors: &[Vec<f32>], index: &Index, limits: &Limits) -> Result<(), ApiError> {
    if vectors.is_empty() {
        return Err(ApiError::field("vectors", "give at least one vector"));
    }
    if vectors.len() > limits.max_vectors {
        return Err(ApiError::field(
            "vectors",
            format!(
                "{} vectors in one request, this server's limit is {}",
                vectors.len(),
                limits.max_vectors
            ),
        ));
    }
    let dim = index.dim();
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dim {
            return Err(ApiError::field(
                format!("vectors[{i}]"),
                format!("has dimension {}, the index has {dim}", v.len()),
            ));
        }
        if let Some((j, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(ApiError::field(
                format!("vectors[{i}][{j}]"),
                format!("{x} is not a finite number"),
            ));
        }
        if index.metric() == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
            return Err(ApiError::field(
                format!("vectors[{i}]"),
                "the zero vector has no direction under cosine",
            ));
        }
    }
    Ok(())
}

/// On a u8 or i8 index: every value of vector `i` an integer within the type's range
/// (nothing is rounded or clamped).
fn check_element_type(v: &[f32], i: usize, index: &Index) -> Result<(), ApiError> {
    let dtype = index.element_type();
    let Some((lo, hi)) = dtype.integer_range() else {
        return Ok(());
    };
    match v.iter().position(|&x| !dtype.holds(x)) {
        Some(j) => Err(ApiError::field(
            format!("vectors[{i}][{j}]"),
            format!(
                "{} is not an integer in {lo}..={hi}: this index stores {dtype} vectors",
                v[j]
            ),
        )),
        None => Ok(()),
    }
}

impl Knobs {
    /// The search parameters for `k` with these knobs, each within its limit.
    pub fn params(
        &self,
        k: usize,
        index: &Index,
        limits: &Limits,
    ) -> Result<SearchParams, ApiError> {
        let mut p = SearchParams::new(k);
        let knob = |name: &str, v: Option<usize>, max: usize, dst: &mut usize| {
            if let Some(v) = v {
                if v > max {
                    return Err(ApiError::field(
                        format!("knobs.{name}"),
                        format!("{name} = {v} is above this server's limit of {max}"),
                    ));
                }
                *dst = v;
            }
            Ok(())
        };
        knob("nprobe", self.nprobe, limits.max_nprobe, &mut p.nprobe)?;
        knob("qprobe", self.qprobe, limits.max_qprobe, &mut p.qprobe)?;
        knob("edges", self.edges, limits.max_edges, &mut p.edges)?;
        knob("hints", self.hints, limits.max_hints, &mut p.hints)?;
        // The depth is capped by what the index stores; any value is safe.
        knob("hint_depth", self.hint_depth, usize::MAX, &mut p.hint_depth)?;
        knob("rerank", self.rerank, limits.max_rerank, &mut p.rerank)?;
        // Refinement costs RAM lookups only; it is bounded like the rerank.
        knob("refine", self.refine, limits.max_rerank, &mut p.refine)?;
        knob(
            "expand_rounds",
            self.expand_rounds,
            limits.max_expand_rounds,
            &mut p.expand_rounds,
        )?;
        knob(
            "expand_from",
            self.expand_from,
            limits.max_expand_from,
            &mut p.expand_from,
        )?;
        knob(
            "expand_read",
            self.expand_read,
            limits.max_expand_read,
            &mut p.expand_read,
        )?;
        if let Some(e) = self.early_stop {
            p.early_stop = e;
        }
        p.block_weights =
            resolve_block_weights(self.block_weights.as_ref(), index, "knobs.block_weights")?;
        match self.distance.unwrap_or(DistanceMode::Auto) {
            mode @ (DistanceMode::Auto | DistanceMode::Native) => {
                for (name, v) in [("alpha", self.alpha), ("beta", self.beta)] {
                    if v.is_some() {
                        return Err(ApiError::field(
                            format!("knobs.{name}"),
                            "alpha and beta apply only with \"distance\": \"lccmd\"",
                        ));
                    }
                }
                if mode == DistanceMode::Auto {
                    p.distance = index.calibrated_distance();
                }
            }
            DistanceMode::Lccmd => {
                p.distance = RerankDistance::LcCmd {
                    alpha: self.alpha.unwrap_or(SearchParams::DEFAULT_LCCMD_ALPHA),
                    beta: self.beta.unwrap_or(SearchParams::DEFAULT_LCCMD_BETA),
                };
            }
        }
        // The engine's contract (k, block weights, the nprobe rule, LC-CMD), each error
        // naming its knob (`knobs.nprobe`, `knobs.beta`, …).
        p.validate(index).map_err(|e| ApiError::from_search(0, e))?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_parse_json_names_the_field_at_fault() {
        let e = parse_json::<SearchRequest>(br#"{"vectors": [[1.0]], "kk": 3}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("kk"), "{e:?}");
        assert!(e.message.contains("unknown field"), "{e:?}");
        let e = parse_json::<SearchRequest>(br#"{"vectors": [[1.0]], "knobs": {"nprobes": 3}}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("knobs.nprobes"), "{e:?}");
        let e = parse_json::<SearchRequest>(br#"{"vectors": [[1.0, "x"]]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vectors[0][1]"), "{e:?}");
        let e = parse_json::<SearchRequest>(br#"{"vectors": [[1.0]], "k": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("k"), "{e:?}");
        let e = parse_json::<SearchRequest>(br#"{"k": 1}"#).unwrap_err();
        assert!(e.message.contains("missing field `vectors`"), "{e:?}");
        let e = parse_json::<SearchRequest>(b"{\"vectors\": [[1.0, NaN]]}").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("vectors[0][1]"), "{e:?}");
        let e = parse_json::<SearchRequest>(br#"{"vectors": [[1.0]]}&{"k": 2}"#).unwrap_err();
        assert!(e.message.contains("trailing characters"), "{e:?}");
        let e = parse_json::<SearchRequest>(b"not json").unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.message.starts_with("invalid JSON body"), "{e:?}");
    }

    #[test]
    fn serve_knobs_round_trip_through_params() {
        let mut p = SearchParams::new(10);
        p.nprobe = 7;
        p.rerank = 99;
        p.expand_rounds = 2;
        p.early_stop = false;
        let k = Knobs::from_params(&p);
        let json = serde_json::to_string(&k).unwrap();
        let back: Knobs = parse_json(json.as_bytes()).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.nprobe, Some(7));
        assert_eq!(back.early_stop, Some(false));
    }
}
