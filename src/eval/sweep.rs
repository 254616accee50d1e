//! Parameter sweeps: `knob=v1,v2,…` lists whose cartesian product is the set of points
//! `m3 bench` measures.

use std::num::ParseIntError;
use std::str::FromStr;

use crate::search::{SearchError, SearchParams};

/// One swept knob and its values (`nprobe=8,16,32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// A knob name that [`SearchParams::set`] accepts.
    pub knob: String,
    /// The values it takes, in order.
    pub values: Vec<usize>,
}

/// Why a sweep does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Not of the form `knob=v1,v2,…`.
    #[error("expected knob=v1,v2,…")]
    Syntax,
    /// A value that is not a non-negative integer.
    #[error("values must be integers")]
    Values(#[source] ParseIntError),
}

impl FromStr for Sweep {
    type Err = SweepError;

    /// `knob=v1,v2,…`; spaces around the knob and the values are ignored.
    fn from_str(s: &str) -> Result<Self, SweepError> {
        let (knob, values) = s.split_once('=').ok_or(SweepError::Syntax)?;
        let values = values
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(SweepError::Values)?;
        Ok(Self {
            knob: knob.trim().to_string(),
            values,
        })
    }
}

impl Sweep {
    /// Every point of `points` with each of this sweep's values (points outer, values inner).
    /// Fails on a knob [`SearchParams::set`] does not know or a value out of its range.
    pub fn expand(&self, points: &[SearchParams]) -> Result<Vec<SearchParams>, SearchError> {
        let mut next = Vec::with_capacity(points.len() * self.values.len());
        for p in points {
            for &v in &self.values {
                let mut q = p.clone();
                q.set(&self.knob, v)?;
                next.push(q);
            }
        }
        Ok(next)
    }
}

/// The cartesian product of `sweeps` applied to `base`, the first sweep outermost (`base`
/// alone when there is none).
pub fn sweep_points(
    base: &SearchParams,
    sweeps: &[Sweep],
) -> Result<Vec<SearchParams>, SearchError> {
    let mut points = vec![base.clone()];
    for s in sweeps {
        points = s.expand(&points)?;
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_expand_to_the_cartesian_product_first_sweep_outermost() {
        let sweeps: Vec<Sweep> = ["nprobe=4, 16", " expand_rounds = 0,1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let points = sweep_points(&SearchParams::new(10), &sweeps).unwrap();
        let got: Vec<(usize, usize)> = points.iter().map(|p| (p.nprobe, p.expand_rounds)).collect();
        assert_eq!(got, [(4, 0), (4, 1), (16, 0), (16, 1)]);
        assert_eq!(sweep_points(&SearchParams::new(10), &[]).unwrap().len(), 1);
    }

    #[test]
    fn bad_sweeps_are_refused() {
        assert!(matches!("nprobe".parse::<Sweep>(), Err(SweepError::Syntax)));
        assert!(matches!(
            "nprobe=4,x".parse::<Sweep>(),
            Err(SweepError::Values(_))
        ));
        let s: Sweep = "no_such_knob=1".parse().unwrap();
        assert!(s.expand(&[SearchParams::new(10)]).is_err());
    }
}
