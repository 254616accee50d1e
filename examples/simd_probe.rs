//! Interleaved min-of-N timing of every f32 table (`l2_sq`, `dot`) with controlled buffer
//! alignment; complements the criterion benches, whose means are noisy on a shared machine.
//! Supports `docs/decisions/0001-simd-kernels.md`.
//!
//! Run: `cargo run --release --example simd_probe`. Output: best ns per call; `off_a`/`off_b`
//! are the f32 offsets of the inputs from a 64-byte boundary.
use std::hint::black_box;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use m3::simd::available_tables;

#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Line([f32; 16]);

fn buf(d: usize, m: usize) -> Vec<Line> {
    let mut v = vec![Line([0.0; 16]); d / 16 + 2];
    for (k, x) in bytemuck::cast_slice_mut::<Line, f32>(&mut v)
        .iter_mut()
        .enumerate()
    {
        *x = (k % m) as f32 * 0.1 - 0.3;
    }
    v
}

fn main() {
    let tables = available_tables();
    for (oa, ob) in [(0usize, 0usize), (4, 4), (1, 6), (0, 3)] {
        for d in [50usize, 128, 200, 384, 512, 960] {
            let (ba, bb) = (buf(d, 13), buf(d, 7));
            let x = &bytemuck::cast_slice::<Line, f32>(&ba)[oa..oa + d];
            let y = &bytemuck::cast_slice::<Line, f32>(&bb)[ob..ob + d];
            let mut best = [[f64::MAX; 2]; 3];
            for _round in 0..300 {
                for (ti, t) in tables.iter().enumerate() {
                    for (ki, f) in [t.l2_sq_f32, t.dot_f32].into_iter().enumerate() {
                        let st = Instant::now();
                        for _ in 0..200 {
                            black_box(f(black_box(x), black_box(y)));
                        }
                        let ns = st.elapsed().as_nanos() as f64 / 200.0;
                        best[ti][ki] = best[ti][ki].min(ns);
                    }
                }
            }
            let s: Vec<String> = tables
                .iter()
                .enumerate()
                .map(|(ti, t)| format!("{} l2 {:.1} dot {:.1}", t.isa, best[ti][0], best[ti][1]))
                .collect();
            println!("off_a={oa} off_b={ob} dim={d}: {}", s.join(" | "));
        }
    }
}
