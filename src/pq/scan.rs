//! The asymmetric-distance scan: `out[i] = Σ_m table[m·256 + codes[i·M + m]]`.
//!
//! One kernel, [`score`], sums one code's table entries; the scans over many codes and the
//! single-code scores, over all subspaces or a span of them, are all written with it, so
//! they agree to the bit.

use super::CODEWORDS;

/// The sum of `code`'s entries in `tables` (one table per subspace, as many as the code has
/// bytes), in four partial sums (which break the add dependency chain) over the subspaces
/// in groups of four, the rest added to the first: the summation order every score of this
/// module has.
#[inline(always)]
fn score(tables: &[[f32; CODEWORDS]], code: &[u8]) -> f32 {
    // Each subspace's table as a fixed-size array: indexing it with a byte needs no bounds
    // check, which lets the compiler keep the loop tight.
    let (t4s, t_rest) = tables.as_chunks::<4>();
    let (c4s, c_rest) = code.as_chunks::<4>();
    let mut acc = [0.0f32; 4];
    for (t4, c4) in t4s.iter().zip(c4s) {
        acc[0] += t4[0][c4[0] as usize];
        acc[1] += t4[1][c4[1] as usize];
        acc[2] += t4[2][c4[2] as usize];
        acc[3] += t4[3][c4[3] as usize];
    }
    for (t, &c) in t_rest.iter().zip(c_rest) {
        acc[0] += t[c as usize];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// `table` (`m × 256` floats) as `m` tables, restricted to the subspaces `span`.
fn tables(table: &[f32], span: std::ops::Range<usize>) -> &[[f32; CODEWORDS]] {
    let (tables, rest) = table.as_chunks::<CODEWORDS>();
    debug_assert!(rest.is_empty());
    &tables[span]
}

/// Scores `codes` (`n × m` bytes) against a lookup table of `m × 256` floats into `out`
/// (length `n`). Panics when the shapes disagree.
pub fn adc_scan(table: &[f32], codes: &[u8], m: usize, out: &mut [f32]) {
    assert!(m > 0, "adc_scan: m must be positive");
    assert_eq!(table.len(), m * CODEWORDS, "adc_scan: table is not m × 256");
    assert_eq!(codes.len(), out.len() * m, "adc_scan: codes are not n × m");
    let tables = tables(table, 0..m);
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        *o = score(tables, code);
    }
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
        m > 0 && span.start <= span.end && span.end <= m,
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
    let tables = tables(table, span.clone());
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        let v = score(tables, &code[span.clone()]);
        if accumulate {
            *o += v;
        } else {
            *o = v;
        }
    }
}

/// One code's score: what [`adc_scan`] writes for it (`table` is `code.len() × 256`).
/// Panics when the shapes disagree.
pub fn adc_score(table: &[f32], code: &[u8]) -> f32 {
    assert_eq!(
        table.len(),
        code.len() * CODEWORDS,
        "adc_score: table is not m × 256"
    );
    score(tables(table, 0..code.len()), code)
}

/// One code's score over the subspaces `spans` only: what scanning it with
/// [`adc_scan_span`] span by span (the first span written, the others accumulated) gives.
/// Panics when the shapes disagree.
pub fn adc_score_spans(table: &[f32], code: &[u8], spans: &[std::ops::Range<usize>]) -> f32 {
    assert_eq!(
        table.len(),
        code.len() * CODEWORDS,
        "adc_score_spans: table is not m × 256"
    );
    let all = tables(table, 0..code.len());
    let mut sum = 0.0;
    for (i, span) in spans.iter().enumerate() {
        let v = score(&all[span.clone()], &code[span.clone()]);
        sum = if i == 0 { v } else { sum + v };
    }
    sum
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

    /// The single-code scores are what the scans write, bit for bit, at every m (tails of
    /// 0–3 subspaces past the groups of four included).
    #[test]
    fn adc_scores_equal_the_scans_bit_for_bit() {
        let n = 9;
        for m in 1..=11 {
            let table: Vec<f32> = (0..m * CODEWORDS)
                .map(|i| ((i * 7919) % 1009) as f32 * 0.013 - 6.0)
                .collect();
            let codes: Vec<u8> = (0..n * m).map(|i| ((i * 131 + 7) % 256) as u8).collect();
            let mut full = vec![0.0; n];
            adc_scan(&table, &codes, m, &mut full);
            let spans = [0..m / 3, m / 3..m / 2, m / 2..m];
            let mut parts = vec![0.0; n];
            for (i, span) in spans.iter().enumerate() {
                adc_scan_span(&table, &codes, m, span.clone(), &mut parts, i > 0);
            }
            for (i, code) in codes.chunks_exact(m).enumerate() {
                assert_eq!(
                    adc_score(&table, code).to_bits(),
                    full[i].to_bits(),
                    "m {m}"
                );
                assert_eq!(
                    adc_score_spans(&table, code, &spans).to_bits(),
                    parts[i].to_bits(),
                    "m {m}"
                );
            }
        }
    }
}
