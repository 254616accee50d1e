//! A keyed pseudo-random permutation of `0..n`, evaluated one index at a time in O(1) memory:
//! a 4-round balanced Feistel network on `2·half_bits` bits with cycle walking (Black &
//! Rogaway, 2002), so that position `j` of the permutation is computed without materialising
//! the other positions. Used to give every generated query a distinct partner row.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permutation {
    n: u64,
    half_bits: u32,
    key: u64,
}

const ROUNDS: u64 = 4;

impl Permutation {
    /// A permutation of `0..n` (`n ≥ 1`).
    pub(crate) fn new(n: u64, key: u64) -> Self {
        assert!(n >= 1, "Permutation of an empty range");
        let bits = (64 - (n - 1).leading_zeros()).max(2);
        Self {
            n,
            half_bits: bits.div_ceil(2),
            key,
        }
    }

    /// The image of `i` (`i < n`).
    pub(crate) fn apply(&self, i: u64) -> u64 {
        assert!(i < self.n, "Permutation::apply: {i} ≥ {}", self.n);
        // The domain 0..2^(2·half_bits) is < 4n, so the walk ends after a few steps on average.
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for round in 0..ROUNDS {
            let f = splitmix64(self.key ^ splitmix64(r ^ (round << 56))) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }
}

/// SplitMix64's output function (Steele, Lea & Flood, 2014): a fast 64-bit mixer.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_permutation_for_many_sizes() {
        for n in [1u64, 2, 3, 5, 16, 17, 1000, 4097] {
            for key in [0u64, 7, 12345] {
                let p = Permutation::new(n, key);
                let mut seen = vec![false; n as usize];
                for i in 0..n {
                    let j = p.apply(i);
                    assert!(j < n);
                    assert!(!seen[j as usize], "n {n} key {key}: {j} twice");
                    seen[j as usize] = true;
                }
            }
        }
    }

    #[test]
    fn keys_give_different_orders() {
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1).apply(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 2).apply(i))
            .collect();
        assert_ne!(a, b);
        // Not the identity either.
        assert!(
            a.iter()
                .enumerate()
                .filter(|(i, v)| *i as u64 == **v)
                .count()
                < 10
        );
    }
}
