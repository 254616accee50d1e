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

/// The score of one code: `Σ_m table[m·256 + code[m]]`, summed exactly as [`adc_scan`] sums
/// it (four partial sums, same order), so a record scored alone and scored in a scan get the
/// same bits. For scattered records (hint answers, training queries), where a scan does not
/// apply.
#[inline]
pub fn adc_score(table: &[f32], code: &[u8]) -> f32 {
    assert_eq!(
        table.len(),
        code.len() * CODEWORDS,
        "adc_score: table is not m × 256"
    );
    let quads = code.len() / 4;
    let mut acc = [0.0f32; 4];
    for (t4, c4) in table.chunks_exact(4 * CODEWORDS).zip(code.chunks_exact(4)) {
        // A fixed-size block of four tables: a byte index is always inside it.
        let t4: &[f32; 4 * CODEWORDS] = t4.try_into().expect("four tables");
        acc[0] += t4[c4[0] as usize];
        acc[1] += t4[CODEWORDS + c4[1] as usize];
        acc[2] += t4[2 * CODEWORDS + c4[2] as usize];
        acc[3] += t4[3 * CODEWORDS + c4[3] as usize];
    }
    for (t, &c) in table[quads * 4 * CODEWORDS..]
        .chunks_exact(CODEWORDS)
        .zip(&code[quads * 4..])
    {
        let t: &[f32; CODEWORDS] = t.try_into().expect("one table");
        acc[0] += t[c as usize];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Like [`adc_scan`] over the subspaces `span` only (`table` still `m × 256`, codes `n × m`):
/// `out[i] (+)= Σ_{s ∈ span} table[s·256 + codes[i·M + s]]`, added to `out` when `accumulate`.
/// A multi-vector query scans the subspaces of its present blocks and skips the rest.
pub fn adc_scan_span(
    table: &[f32],
    codes: &[u8],
    m: usize,
    span: std::ops::Range<usize>,
    out: &mut [f32],
    accumulate: bool,
) {
    assert!(
        m > 0 && span.end <= m,
        "adc_scan_span: span outside the subspaces"
    );
    assert_eq!(
        table.len(),
        m * CODEWORDS,
        "adc_scan_span: table is not m × 256"
    );
    assert_eq!(
        codes.len(),
        out.len() * m,
        "adc_scan_span: codes are not n × m"
    );
    let tables: Vec<&[f32; CODEWORDS]> = table[span.start * CODEWORDS..span.end * CODEWORDS]
        .chunks_exact(CODEWORDS)
        .map(|t| t.try_into().expect("256 entries"))
        .collect();
    let width = span.len();
    let quads = width / 4;
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        let code = &code[span.clone()];
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
        let v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        if accumulate {
            *o += v;
        } else {
            *o = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanning spans that cover every subspace gives the full scan (up to summation order),
    /// and one span equals the full scan of a table that is zero elsewhere.
    #[test]
    fn adc_scan_span_matches_the_full_scan() {
        let m = 7;
        let n = 13;
        let table: Vec<f32> = (0..m * CODEWORDS)
            .map(|i| ((i * 37) % 101) as f32 * 0.25)
            .collect();
        let codes: Vec<u8> = (0..n * m).map(|i| ((i * 53) % 256) as u8).collect();
        let mut full = vec![0.0; n];
        adc_scan(&table, &codes, m, &mut full);
        let mut parts = vec![0.0; n];
        adc_scan_span(&table, &codes, m, 0..2, &mut parts, false);
        adc_scan_span(&table, &codes, m, 2..7, &mut parts, true);
        for (a, b) in full.iter().zip(&parts) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
        }
        let mut zeroed = table.clone();
        zeroed[..2 * CODEWORDS].iter_mut().for_each(|v| *v = 0.0);
        zeroed[6 * CODEWORDS..].iter_mut().for_each(|v| *v = 0.0);
        let mut want = vec![0.0; n];
        adc_scan(&zeroed, &codes, m, &mut want);
        let mut got = vec![0.0; n];
        adc_scan_span(&table, &codes, m, 2..6, &mut got, false);
        assert_eq!(want, got);
    }

    /// A code scored alone has the bits the scan gives it, for any number of subspaces
    /// (multiples of four and not).
    #[test]
    fn adc_score_equals_the_scan_bit_for_bit() {
        for m in [1, 3, 4, 8, 13, 64] {
            let n = 17;
            let table: Vec<f32> = (0..m * CODEWORDS)
                .map(|i| ((i * 7919) % 1009) as f32 * 0.37 - 150.0)
                .collect();
            let codes: Vec<u8> = (0..n * m).map(|i| ((i * 131 + 7) % 256) as u8).collect();
            let mut scan = vec![0.0; n];
            adc_scan(&table, &codes, m, &mut scan);
            for (i, want) in scan.iter().enumerate() {
                let got = adc_score(&table, &codes[i * m..(i + 1) * m]);
                assert_eq!(got.to_bits(), want.to_bits(), "m {m}, code {i}");
            }
        }
    }
}
