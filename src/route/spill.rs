//! Where a vector's spill copies go (DESIGN §2 step 2, SPANN's rule): besides its primary
//! cluster, a vector is also stored in cluster `j` when `d(x, c_j) ≤ (1 + ε)·d(x, c_1)`
//! (Euclidean, `c_1` its nearest anchor), at most `max_copies` extra. The build's assign stage
//! (`build::assign`) and the live updates' coding of an insert (`search::live`) both place
//! copies with [`SpillRule::copies`], so an insert gets the copies a build would give it.

/// SPANN's spill rule with an index's parameters (`BuildParams::spill`; the manifest's
/// `spill_max` and `spill_epsilon`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpillRule {
    /// At most this many extra copies per vector (0: none).
    pub max_copies: usize,
    /// `(1 + ε)²`: the rule on squared distances.
    pub ratio_sq: f32,
}

impl SpillRule {
    /// The rule for `max_copies` extra copies within `1 + epsilon` of the nearest anchor's
    /// distance (a negative ε counts as 0).
    pub fn new(max_copies: usize, epsilon: f32) -> Self {
        Self {
            max_copies,
            ratio_sq: (1.0 + epsilon.max(0.0)).powi(2),
        }
    }

    /// The clusters of the spill copies, in order: `cand` are a vector's nearest anchors
    /// sorted by squared distance `dists_sq` (nearest first; at least `max_copies + 1` of
    /// them, or all), `primary` the cluster that holds its primary record (skipped).
    ///
    /// Example: `cand = [4, 9, 2]`, `dists_sq = [1.0, 1.2, 1.3]`, ε = 0.1 (ratio 1.21),
    /// `max_copies = 2`, primary 4: copy in 9 (1.2 ≤ 1.21), not in 2 (1.3 > 1.21).
    pub fn copies<'a>(
        &self,
        cand: &'a [u32],
        dists_sq: &'a [f32],
        primary: u32,
    ) -> impl Iterator<Item = u32> + 'a {
        let limit = match dists_sq.first() {
            Some(&d0) => self.ratio_sq * d0,
            None => 0.0,
        };
        cand.iter()
            .zip(dists_sq)
            // Stops at the first candidate beyond the limit (as the build's loop did: a NaN
            // distance does not stop it).
            .take_while(move |&(_, &dj)| {
                dj.partial_cmp(&limit) != Some(std::cmp::Ordering::Greater)
            })
            .map(|(&j, _)| j)
            .filter(move |&j| j != primary)
            .take(self.max_copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_follow_the_rule_in_order_up_to_the_limit() {
        let rule = SpillRule::new(2, 0.1);
        let got: Vec<u32> = rule.copies(&[4, 9, 2], &[1.0, 1.2, 1.3], 4).collect();
        assert_eq!(got, vec![9]);
        let wide = SpillRule::new(2, 1.0);
        let got: Vec<u32> = wide
            .copies(&[4, 9, 2, 7], &[1.0, 1.2, 1.3, 1.4], 4)
            .collect();
        assert_eq!(got, vec![9, 2], "at most max_copies");
        // A primary that is not the nearest (the build's size cap): skipped where it stands.
        let got: Vec<u32> = wide.copies(&[4, 9, 2], &[1.0, 1.2, 1.3], 9).collect();
        assert_eq!(got, vec![4, 2]);
        assert_eq!(
            SpillRule::new(0, 0.5)
                .copies(&[1, 2], &[1.0, 1.0], 1)
                .count(),
            0
        );
        assert_eq!(rule.copies(&[], &[], 0).count(), 0);
    }
}
