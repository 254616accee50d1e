//! The result type of every search, exact or approximate: a [`Neighbor`] (id and internal
//! distance), and [`TopK`], bounded best-k selection with a deterministic total order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A candidate answer: a base row id and its internal distance (smaller is better, see
/// [`crate::distance::Metric`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// Base row.
    pub id: u32,
    /// Internal distance (smaller is better).
    pub dist: f32,
}

impl Neighbor {
    /// Total order: by distance (IEEE total order), then by id, so equal distances resolve
    /// the same way on every run and thread count.
    #[inline]
    pub fn cmp_total(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then_with(|| self.id.cmp(&other.id))
    }
}

#[derive(Debug, Clone, Copy)]
struct HeapEntry(Neighbor);

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.0.cmp_total(&other.0) == Ordering::Equal
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp_total(&other.0)
    }
}

/// Keeps the `k` smallest neighbours seen so far (a max-heap whose top is the worst kept).
/// `Default` is an empty `TopK` of capacity 1 that allocates nothing, to be [`TopK::reset`].
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<HeapEntry>,
}

impl Default for TopK {
    fn default() -> Self {
        Self {
            k: 1,
            heap: BinaryHeap::new(),
        }
    }
}

impl TopK {
    /// Panics when `k == 0` (callers validate k against user input first).
    pub fn new(k: usize) -> Self {
        assert!(k > 0, "TopK needs k >= 1");
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The capacity k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Entries held (at most k).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Distance a new candidate must beat (or tie with a smaller id) to enter; `+∞` while
    /// fewer than `k` are kept.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |e| e.0.dist)
        }
    }

    /// Offers a candidate; returns whether it was kept.
    #[inline]
    pub fn push(&mut self, n: Neighbor) -> bool {
        if self.heap.len() < self.k {
            self.heap.push(HeapEntry(n));
            return true;
        }
        // Replace the worst in place: one sift down (on the guard's drop) instead of a pop
        // and a push.
        let mut worst = self.heap.peek_mut().expect("heap is full, so not empty");
        if n.cmp_total(&worst.0) == Ordering::Less {
            *worst = HeapEntry(n);
            true
        } else {
            false
        }
    }

    /// Empties it for reuse with capacity `k`, keeping its allocation (per-query scratch).
    /// Panics when `k == 0`, as [`TopK::new`].
    pub fn reset(&mut self, k: usize) {
        assert!(k > 0, "TopK needs k >= 1");
        self.k = k;
        self.heap.clear();
    }

    /// The kept neighbours, best first, into `out` (cleared first); leaves this empty with
    /// its allocation. Same order as [`TopK::into_sorted`].
    pub fn drain_sorted_into(&mut self, out: &mut Vec<Neighbor>) {
        out.clear();
        out.extend(self.heap.drain().map(|e| e.0));
        out.sort_by(Neighbor::cmp_total);
    }

    /// The kept neighbours, best first.
    pub fn into_sorted(self) -> Vec<Neighbor> {
        let mut v: Vec<Neighbor> = self.heap.into_iter().map(|e| e.0).collect();
        v.sort_by(Neighbor::cmp_total);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keeps_the_k_smallest(dists in proptest::collection::vec(-100i32..100, 0..300), k in 1usize..40) {
            let mut t = TopK::new(k);
            for (i, &d) in dists.iter().enumerate() {
                t.push(Neighbor { id: i as u32, dist: d as f32 });
            }
            let got = t.into_sorted();
            let mut all: Vec<Neighbor> = dists
                .iter()
                .enumerate()
                .map(|(i, &d)| Neighbor { id: i as u32, dist: d as f32 })
                .collect();
            all.sort_by(Neighbor::cmp_total);
            all.truncate(k);
            prop_assert_eq!(got, all);
        }

        /// A reused TopK (reset, then drained into a buffer) keeps what a fresh one keeps,
        /// whatever the previous query left in it.
        #[test]
        fn reset_and_drain_equal_a_fresh_topk(
            before in proptest::collection::vec(-100i32..100, 0..100),
            dists in proptest::collection::vec(-100i32..100, 0..300),
            k0 in 1usize..40,
            k in 1usize..40,
        ) {
            let mut reused = TopK::new(k0);
            for (i, &d) in before.iter().enumerate() {
                reused.push(Neighbor { id: i as u32, dist: d as f32 });
            }
            reused.reset(k);
            let mut fresh = TopK::new(k);
            for (i, &d) in dists.iter().enumerate() {
                let n = Neighbor { id: i as u32, dist: d as f32 };
                prop_assert_eq!(reused.push(n), fresh.push(n));
            }
            let mut out = vec![Neighbor { id: 7, dist: 0.0 }];
            reused.drain_sorted_into(&mut out);
            prop_assert!(reused.is_empty());
            prop_assert_eq!(out, fresh.into_sorted());
        }
    }

    #[test]
    fn threshold_tracks_worst_kept() {
        let mut t = TopK::new(2);
        assert_eq!(t.threshold(), f32::INFINITY);
        t.push(Neighbor { id: 0, dist: 5.0 });
        t.push(Neighbor { id: 1, dist: 3.0 });
        assert_eq!(t.threshold(), 5.0);
        assert!(t.push(Neighbor { id: 2, dist: 4.0 }));
        assert_eq!(t.threshold(), 4.0);
        assert!(
            !t.push(Neighbor { id: 3, dist: 4.0 }),
            "tie with larger id stays out"
        );
        assert!(
            t.push(Neighbor { id: 0, dist: 4.0 }),
            "tie with smaller id enters"
        );
    }
}
