//! The asymmetric-distance scan: `out[i] = Σ_m table[m·256 + codes[i·M + m]]`.

use super::CODEWORDS;

/// Scores `codes` (`n × m` bytes) against a lookup table of `m × 256` floats into `out`
/// (length `n`). Panics when the shapes disagree.
pub fn adc_scan(table: &[f32], codes: &[u8], m: usize, out: &mut [f32]) {
    assert!(m > 0, "adc_scan: m must be positive");
    assert_eq!(table.len(), m * CODEWORDS, "adc_scan: table is not m × 256");
    assert_eq!(codes.len(), out.len() * m, "adc_scan: codes are not n × m");
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        // Four partial sums break the add dependency chain; `c as usize` < 256 and the table
        // slice per subspace has 256 entries, so indexing cannot fail.
        let mut acc = [0.0f32; 4];
        let mut s = 0;
        while s + 4 <= m {
            for (l, a) in acc.iter_mut().enumerate() {
                let t = &table[(s + l) * CODEWORDS..(s + l + 1) * CODEWORDS];
                *a += t[code[s + l] as usize];
            }
            s += 4;
        }
        while s < m {
            acc[0] += table[s * CODEWORDS + code[s] as usize];
            s += 1;
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}
