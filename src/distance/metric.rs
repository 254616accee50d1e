//! The metric of an index or a ground-truth computation.

use std::fmt;
use std::str::FromStr;

/// Which notion of nearness. Internally every search ranks by a *distance* where smaller is
/// better: squared L2 for [`Metric::L2`], `−⟨q, x⟩` for [`Metric::InnerProduct`] and
/// `−cos(q, x)` for [`Metric::Cosine`]. Files and users see the natural unit
/// ([`Metric::to_natural`]): squared L2, inner product, cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// Euclidean: the distance is the squared L2 distance.
    L2,
    /// Maximum inner product: larger `⟨q, x⟩` is nearer.
    InnerProduct,
    /// Cosine similarity: larger `cos(q, x)` is nearer (indexes store normalised vectors).
    Cosine,
}

impl Metric {
    /// The name used on the command line and in files: `l2`, `ip` or `cosine`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }

    /// Whether a larger natural value is better (similarities).
    pub const fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Internal distance (smaller is better) to the natural unit.
    #[inline]
    pub fn to_natural(self, dist: f32) -> f32 {
        if self.higher_is_better() { -dist } else { dist }
    }

    /// Natural unit to internal distance (smaller is better).
    #[inline]
    pub fn from_natural(self, value: f32) -> f32 {
        self.to_natural(value)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Ok(Metric::L2),
            "ip" | "mips" | "inner_product" => Ok(Metric::InnerProduct),
            "cosine" | "angular" => Ok(Metric::Cosine),
            other => Err(format!(
                "unknown metric '{other}' (expected l2, ip or cosine)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_natural_units() {
        assert_eq!("IP".parse::<Metric>().unwrap(), Metric::InnerProduct);
        assert!("hamming".parse::<Metric>().is_err());
        assert_eq!(Metric::L2.to_natural(3.0), 3.0);
        assert_eq!(Metric::Cosine.to_natural(-0.5), 0.5);
        assert_eq!(Metric::InnerProduct.from_natural(2.0), -2.0);
    }
}
