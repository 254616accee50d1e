//! The asymmetric-distance scan: `out[i] = Σ_m table[m·256 + codes[i·M + m]]`.

use super::CODEWORDS;

/// Scores `codes` (`n × m` bytes) against a lookup table of `m × 256` floats into `out`
/// (length `n`). Panics when the shapes disagree.
pub fn adc_scan(table: &[f32], codes: &[u8], m: usize, out: &mut [f32]) {
    assert!(m > 0, "adc_scan: m must be positive");
    assert_eq!(table.len(), m * CODEWORDS, "adc_scan: table is not m × 256");
    assert_eq!(codes.len(), out.len() * m, "adc_scan: codes are not n × m");
    // Each subspace's table as a fixed-size array: indexing it with a byte needs no bounds
    // check, which lets the compiler keep the loop tight.
    let tables: Vec<&[f32; CODEWORDS]> = table
        .chunks_exact(CODEWORDS)
        .map(|t| t.try_into().expect("256 entries"))
        .collect();
    let quads = m / 4;
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        // Four partial sums break the add dependency chain.
        let mut acc = [0.0f32; 4];
        for (t4, c4) in tables.chunks_exact(4).zip(code.chunks_exact(4)).take(quads) {
            acc[0] += t4[0][c4[0] as usize];
            acc[1] += t4[1][c4[1] as usize];
            acc[2] += t4[2][c4[2] as usize];
            acc[3] += t4[3][c4[3] as usize];
        }
        for (t, &c) in tables[quads * 4..].iter().zip(&code[quads * 4..]) {
            acc[0] += t[c as usize];
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}
