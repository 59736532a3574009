use super::*;
use crate::format::gguf::GgmlType;
use crate::quant::packed::FloatQuant;
use crate::quant::packed::PackedMatrix;

/// Dequantize with the packed format's own `get`, then a plain f64 product: independent of
/// every kernel here.
fn reference(x: &[f32], m: usize, p: &PackedMatrix) -> (Vec<f64>, Vec<f64>) {
    let w = p.dequantize();
    let mut y = vec![0.0; m * p.rows];
    let mut mag = vec![0.0; m * p.rows];
    for t in 0..m {
        for r in 0..p.rows {
            for c in 0..p.cols {
                let term = x[t * p.cols + c] as f64 * w[r * p.cols + c] as f64;
                y[t * p.rows + r] += term;
                mag[t * p.rows + r] += term.abs();
            }
        }
    }
    (y, mag)
}

fn matrix(format: QuantFormat, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let data: Vec<f32> =
        (0..rows * cols).map(|i| (((i as u64 + seed) * 2_654_435_761) % 2001) as f32 / 1000.0 - 1.0).collect();
    PackedMatrix::quantize(format, &data, rows, cols)
}

/// A `[rows, cols]` matrix of random GGUF `dtype` super-blocks (codes and sub-block scales
/// random, super-scales of a weight's usual size), repacked.
fn k_matrix(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (bytes, d_at, has_min) = match dtype {
        GgmlType::Q2_K => (84, 80, true),
        GgmlType::Q3_K => (110, 108, false),
        GgmlType::Q4_K => (144, 0, true),
        GgmlType::Q5_K => (176, 0, true),
        _ => (210, 208, false),
    };
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let mut data = Vec::new();
    for _ in 0..rows * cols / 256 {
        let mut block: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
        let scale = |v: u32| half::f16::from_f32((v % 1000) as f32 * 4e-5 + 1e-3).to_le_bytes();
        block[d_at..d_at + 2].copy_from_slice(&scale(next()));
        if has_min {
            block[d_at + 2..d_at + 4].copy_from_slice(&scale(next()));
        }
        data.extend(block);
    }
    PackedMatrix::from_gguf("t", dtype, &data, rows, cols).expect("whole super-blocks")
}

/// A `[rows, cols]` matrix of random GGUF Q5_0 or Q5_1 blocks (codes random, scales of a
/// weight's usual size), repacked.
fn five_bit_matrix(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let bytes = if dtype == GgmlType::Q5_0 { 22 } else { 24 };
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(7);
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let mut data = Vec::new();
    for _ in 0..rows * cols / BLOCK {
        let mut block: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
        let scale = |v: u32| half::f16::from_f32((v % 1000) as f32 * 4e-5 + 1e-3).to_le_bytes();
        block[0..2].copy_from_slice(&scale(next()));
        if dtype == GgmlType::Q5_1 {
            block[2..4].copy_from_slice(&(-half::f16::from_le_bytes(scale(next()))).to_le_bytes());
        }
        data.extend(block);
    }
    PackedMatrix::from_gguf("t", dtype, &data, rows, cols).expect("whole blocks")
}

/// The row-tiled words of `p`, and a view of them.
fn tiled(p: &PackedMatrix) -> Tiled {
    tile_rows(p)
}

fn view<'a>(p: &PackedMatrix, words: &'a Tiled) -> QuantRows<'a> {
    QuantRows {
        format: p.format,
        scales: p.scales,
        rows: p.rows,
        cols: p.cols,
        codes: &words.codes,
        params: &words.params,
        supers: &words.supers,
        split_halves: p.split_halves(),
    }
}

const SHAPES: [(usize, usize); 7] = [(13, 70), (9, 64), (33, 96), (5, 33), (64, 576), (192, 1536), (6, 32)];

/// The formats the kernels take: 4-bit, 8-bit, and 4-bit codes widened to 8 bits (fused
/// matrices of mixed formats), whose blocks keep their offsets.
const FORMATS: [(QuantFormat, bool); 3] = [(QuantFormat::Q4, false), (QuantFormat::Q8, false), (QuantFormat::Q4, true)];

/// Shapes of K-quant matrices (rows of whole super-blocks), rows ragged against the tiles.
const K_SHAPES: [(usize, usize); 4] = [(5, 256), (13, 512), (33, 768), (64, 1536)];

/// The K-quants, and Q4_K widened to 8-bit codes (a fusion with Q6_K).
const K_FORMATS: [(GgmlType, bool); 6] = [
    (GgmlType::Q2_K, false),
    (GgmlType::Q3_K, false),
    (GgmlType::Q4_K, false),
    (GgmlType::Q5_K, false),
    (GgmlType::Q6_K, false),
    (GgmlType::Q4_K, true),
];

fn inputs(m: usize, cols: usize, i: usize) -> Vec<f32> {
    (0..m * cols).map(|j| ((j * 104_729 + i) % 997) as f32 / 498.0 - 1.0).collect()
}

/// Every (format, shape, batch) case: the matrix and inputs, batches 1..8 and a prefill size.
fn cases() -> impl Iterator<Item = (PackedMatrix, Vec<f32>, usize)> {
    let legacy = FORMATS.into_iter().flat_map(|(format, widened)| {
        SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
            (1..=8).chain([67]).map(move |m| {
                let p = matrix(format, rows, cols, i as u64);
                let p = if widened { p.to_q8() } else { p };
                (p, inputs(m, cols, i), m)
            })
        })
    });
    let k = K_FORMATS.into_iter().flat_map(|(dtype, widened)| {
        K_SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
            (1..=8).chain([67]).map(move |m| {
                let p = k_matrix(dtype, rows, cols, i as u64 + 11);
                let p = if widened { p.to_q8() } else { p };
                (p, inputs(m, cols, i), m)
            })
        })
    });
    // GGUF's 5-bit legacy blocks, kept at their width.
    let five = [GgmlType::Q5_0, GgmlType::Q5_1].into_iter().flat_map(|dtype| {
        SHAPES.into_iter().enumerate().filter(|(_, (_, cols))| cols.is_multiple_of(BLOCK)).flat_map(
            move |(i, (rows, cols))| {
                [1, 2, 3, 4, 5, 8, 67]
                    .into_iter()
                    .map(move |m| (five_bit_matrix(dtype, rows, cols, i as u64), inputs(m, cols, i), m))
            },
        )
    });
    // Floats quantized to K-quants: ragged rows, whose last super-block is partial.
    let k_floats = [FloatQuant::Q3_K, FloatQuant::Q4_K, FloatQuant::Q6_K].into_iter().flat_map(|kind| {
        SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
            [1, 3, 8, 67].into_iter().map(move |m| {
                let data: Vec<f32> = (0..rows * cols).map(|j| ((j * 7919 + i) % 2001) as f32 / 1000.0 - 1.0).collect();
                (PackedMatrix::quantize_as(kind, &data, rows, cols).unwrap(), inputs(m, cols, i), m)
            })
        })
    });
    // Float codes, ragged rows among them.
    let floats = [QuantFormat::F16, QuantFormat::Bf16, QuantFormat::F32].into_iter().flat_map(|format| {
        SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
            [1, 2, 3, 5, 8, 67].into_iter().map(move |m| (float_matrix(format, rows, cols, i), inputs(m, cols, i), m))
        })
    });
    legacy.chain(five).chain(k).chain(k_floats).chain(floats)
}

/// A `[rows, cols]` matrix of float codes (16-bit or f32): weights of the usual size, with
/// subnormal halves, zeros of both signs and a large value among them.
pub(crate) fn float_matrix(format: QuantFormat, rows: usize, cols: usize, seed: usize) -> PackedMatrix {
    let value = |j: usize| match (j * 7 + seed) % 23 {
        0 => 3.1e-6,
        1 => -0.0,
        2 => -2.9e-7,
        3 => 1500.0,
        _ => ((j * 7919 + seed) % 2001) as f32 / 1000.0 - 1.0,
    };
    if format == QuantFormat::F32 {
        return PackedMatrix::from_f32(&(0..rows * cols).map(value).collect::<Vec<_>>(), rows, cols);
    }
    let bits: Vec<u16> = (0..rows * cols)
        .map(|j| match format {
            QuantFormat::Bf16 => half::bf16::from_f32(value(j)).to_bits(),
            _ => half::f16::from_f32(value(j)).to_bits(),
        })
        .collect();
    PackedMatrix::from_halves(format, &bits, rows, cols)
}

/// `|got - want| <= bound` for element `j` of a case, saying which case it is when not.
fn assert_within(what: impl std::fmt::Debug, p: &PackedMatrix, m: usize, j: usize, got: f64, want: f64, bound: f64) {
    assert!(
        (got - want).abs() <= bound,
        "{what:?} {:?} {:?} {}x{} m={m} [{j}]: {got} vs {want} (bound {bound})",
        p.format,
        p.scales,
        p.rows,
        p.cols
    );
}

fn run(isa: Isa, inputs: Inputs, p: &PackedMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let mut got = vec![0.0; m * p.rows];
    // A level without narrow kernels takes 5- and 6-bit codes widened, as at upload.
    let widened;
    let p = match p.format.is_narrow() && !isa.has_narrow_kernels() {
        true => {
            widened = p.to_q8();
            &widened
        }
        false => p,
    };
    let words = tiled(p);
    qgemm_with(isa, inputs, x, m, &view(p, &words), SliceEpilogue::None, &mut got);
    got
}

/// With f32 inputs (float codes on every level), every level this machine has equals the
/// f64 product of the dequantized weights within 1e-5 of the terms' magnitude (the differences are f32 rounding in
/// another summation order).
#[test]
fn f32_inputs_give_the_dequantized_product() {
    for isa in Isa::available() {
        for (p, x, m) in cases().filter(|(p, ..)| Inputs::for_matrix(isa, p.format, Activations::F32) == Inputs::F32) {
            let got = run(isa, Inputs::F32, &p, &x, m);
            let (want, mag) = reference(&x, m, &p);
            for j in 0..m * p.rows {
                assert_within(isa, &p, m, j, got[j] as f64, want[j], 1e-5 * mag[j] + 1e-30);
            }
        }
    }
}

/// With i16 (i8) inputs the error is the inputs' rounding, at most half a step (`max / 65534`,
/// `max / 254`, of each block) times the block's `Σ |d q|` for i16, whose offsets meet exact
/// f32 sums, or `Σ |w|` for i8, whose offsets meet the codes' sums; plus f32 rounding: the bound
/// is computed here from the inputs, and the scalar level (the reference of that arithmetic)
/// stays inside it.
#[test]
fn integer_inputs_stay_within_their_rounding_of_the_product() {
    for (inputs, steps) in [(Inputs::I16, 65534.0), (Inputs::I8, 254.0)] {
        for (p, x, m) in cases().filter(|(p, ..)| !p.format.is_float()) {
            let got = run(Isa::Scalar, inputs, &p, &x, m);
            let (want, mag) = reference(&x, m, &p);
            let nb = p.blocks_per_row();
            let w: Vec<f32> = (0..p.rows * p.cols)
                .map(|i| {
                    let (r, c) = (i / p.cols, i % p.cols);
                    let offset = p.half_params(r * nb + c / BLOCK, c % BLOCK).1;
                    if inputs == Inputs::I16 { p.get(r, c) - offset } else { p.get(r, c) }
                })
                .collect();
            for t in 0..m {
                for r in 0..p.rows {
                    let bound: f64 = (0..p.cols)
                        .step_by(BLOCK)
                        .map(|c0| {
                            let c1 = (c0 + BLOCK).min(p.cols);
                            let max = x[t * p.cols + c0..t * p.cols + c1].iter().fold(0.0f32, |a, v| a.max(v.abs()));
                            let wsum: f64 = w[r * p.cols + c0..r * p.cols + c1].iter().map(|v| v.abs() as f64).sum();
                            max as f64 / steps * wsum
                        })
                        .sum();
                    let j = t * p.rows + r;
                    assert_within(inputs, &p, m, j, got[j] as f64, want[j], bound * 1.001 + 1e-5 * mag[j]);
                }
            }
        }
    }
}

/// `Σ |x| (|d q| + |m|)` per output: the size of the terms that i16 arithmetic sums (its
/// code products and offsets apart), which bounds its rounding.
fn term_magnitude(x: &[f32], m: usize, p: &PackedMatrix) -> Vec<f64> {
    let nb = p.blocks_per_row();
    let mut mag = vec![0.0; m * p.rows];
    for r in 0..p.rows {
        for c in 0..p.cols {
            let offset = p.half_params(r * nb + c / BLOCK, c % BLOCK).1;
            let term = (p.get(r, c) - offset).abs() as f64 + offset.abs() as f64;
            for t in 0..m {
                mag[t * p.rows + r] += term * x[t * p.cols + c].abs() as f64;
            }
        }
    }
    mag
}

/// The arithmetics a level does on a matrix of `format`: its exact mode's and its q8 mode's.
fn arithmetics(isa: Isa, format: QuantFormat) -> Vec<Inputs> {
    let mut all = [Activations::F32, Activations::Q8].map(|mode| Inputs::for_matrix(isa, format, mode)).to_vec();
    all.dedup();
    all
}

/// Every level this machine has equals the scalar reference of each of its arithmetics within
/// 1e-5 of the terms' magnitude (the browser tests do the same for simd128).
#[test]
fn every_level_equals_the_scalar_reference_of_its_arithmetic() {
    for isa in Isa::available() {
        for (p, x, m) in cases() {
            for inputs in arithmetics(isa, p.format) {
                let (got, want) = (run(isa, inputs, &p, &x, m), run(Isa::Scalar, inputs, &p, &x, m));
                let mag = term_magnitude(&x, m, &p);
                for j in 0..m * p.rows {
                    assert_within((isa, inputs), &p, m, j, got[j] as f64, want[j] as f64, 1e-5 * mag[j] + 1e-30);
                }
            }
        }
    }
}

/// `p` with scales every f32 step of the integer arithmetics keeps exact: block scales of
/// 2^-5 or 2^-6 with offsets of a few such steps, or super pairs of those with sub-block
/// scales in -4..=4 (halves alike when `split` is false).
fn exact_scales(mut p: PackedMatrix, seed: u32, split: bool) -> PackedMatrix {
    let f16 = |v: f32| half::f16::from_f32(v).to_bits() as u32;
    let mut n = seed;
    let mut next = move || {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        n >> 16
    };
    let step = |v: u32| if v.is_multiple_of(2) { 1.0 / 32.0 } else { 1.0 / 64.0 };
    match p.scales {
        Scales::Block => {
            for w in &mut p.params {
                let d = step(next());
                *w = f16(d) | f16((next() % 9) as f32 * d - 4.0 * d) << 16;
            }
        }
        Scales::Super => {
            for w in &mut p.supers {
                *w = f16(step(next())) | f16(step(next())) << 16;
            }
            for w in &mut p.params {
                let mut byte = || ((next() % 9) as i32 - 4) as i8 as u8;
                let (s, n) = (byte(), byte());
                let (s_hi, n_hi) = if split { (byte(), byte()) } else { (s, n) };
                *w = u32::from_le_bytes([s, n, s_hi, n_hi]);
            }
        }
    }
    p
}

/// Inputs that 8-bit codes hold exactly: integers in -2..=2, and 127 at each block's start
/// (so every block's scale is 1 and each code its input).
fn exact_inputs(m: usize, cols: usize, seed: usize) -> Vec<f32> {
    (0..m * cols)
        .map(|j| if (j % cols).is_multiple_of(BLOCK) { 127.0 } else { ((j * 7 + seed) % 5) as f32 - 2.0 })
        .collect()
}

/// Every 8-bit integer kernel (the q8 mode's) equals the scalar reference bit for bit where
/// every f32 step of the arithmetic is exact (scales of powers of two, inputs that 8 bits hold,
/// sums far below 2^24): then any order of additions gives the same bits, and a code, a sign, a
/// lane or a scale taken wrongly shows. Every format and shape of [`cases`], batches 1..8 and
/// 67. The i16 kernels (the exact mode of NEON and simd128) are not among them: an i16 block's
/// scale is a power of two only when its largest input is 32767 times one, and then its
/// products with 8-bit codes are too large for every f32 step to stay exact (under qemu a NEON
/// i16 tile differed from the reference in the last bit); they are held to the reference within
/// 1e-5 of the terms' magnitude above.
#[test]
fn integer_kernels_equal_the_scalar_reference_bit_for_bit() {
    let mut checked = 0;
    for (i, (p, _, m)) in cases().filter(|(p, ..)| !p.format.is_float()).enumerate() {
        for split in [true, false] {
            if !split && p.scales == Scales::Block {
                continue;
            }
            let p = exact_scales(p.clone(), i as u32, split);
            let x = exact_inputs(m, p.cols, i);
            for isa in Isa::available() {
                for inputs in arithmetics(isa, p.format).into_iter().filter(|&a| a == Inputs::I8) {
                    let (got, want) = (run(isa, inputs, &p, &x, m), run(Isa::Scalar, inputs, &p, &x, m));
                    for j in 0..m * p.rows {
                        assert_eq!(
                            got[j].to_bits(),
                            want[j].to_bits(),
                            "{isa:?} {inputs:?} {:?} {:?} split {split} {}x{} m={m} [{j}]: {} vs {}",
                            p.format,
                            p.scales,
                            p.rows,
                            p.cols,
                            got[j],
                            want[j]
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} cases ran");
}

/// The q8 arithmetic is the product of the codes' values and the inputs as 8 bits hold them:
/// on inputs they hold exactly, the scalar reference equals the f64 product of the
/// dequantized weights (within f32 rounding of the sums).
#[test]
fn i8_inputs_give_the_product_where_8_bits_hold_them() {
    for (i, (p, _, m)) in cases().filter(|(p, ..)| !p.format.is_float()).enumerate().step_by(3) {
        let p = exact_scales(p, i as u32, true);
        let x = exact_inputs(m, p.cols, i);
        let got = run(Isa::Scalar, Inputs::I8, &p, &x, m);
        let (want, mag) = reference(&x, m, &p);
        for j in 0..m * p.rows {
            assert_within(Inputs::I8, &p, m, j, got[j] as f64, want[j], 1e-6 * mag[j] + 1e-30);
        }
    }
}

/// A token's outputs do not depend on the tile it rides in: each of `m` tokens run together
/// gets the bits it gets alone, at every level, so that a pass checking a speculative
/// draft gives each position what a one-token step would.
#[test]
fn a_token_gets_the_same_bits_in_any_tile() {
    for isa in Isa::available() {
        for (p, x, m) in cases().filter(|c| c.2 > 1) {
            for inputs in arithmetics(isa, p.format) {
                let together = run(isa, inputs, &p, &x, m);
                for (t, token) in x.chunks_exact(p.cols).enumerate() {
                    let alone = run(isa, inputs, &p, token, 1);
                    let row = &together[t * p.rows..(t + 1) * p.rows];
                    assert!(
                        row.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} {inputs:?} {:?} {}x{}: token {t} of {m} differs from its one-token pass",
                        p.format,
                        p.rows,
                        p.cols
                    );
                }
            }
        }
    }
}

/// A NaN input poisons its rows under either arithmetic, as it would in f32.
#[test]
fn a_nan_input_poisons_its_token() {
    let p = matrix(QuantFormat::Q4, 8, 64, 3);
    let mut x = vec![0.5f32; 2 * 64];
    x[70] = f32::NAN;
    for inputs in [Inputs::F32, Inputs::I16, Inputs::I8] {
        let got = run(Isa::Scalar, inputs, &p, &x, 2);
        assert!(got[..8].iter().all(|v| v.is_finite()) && got[8..].iter().all(|v| v.is_nan()), "{inputs:?}: {got:?}");
    }
}

/// Every level agrees with the scalar level of its arithmetic on the same matrix, and the
/// epilogues do what they say: `residual + y`, and `silu(gate) * up` and `gelu(gate) * up`
/// (GELU's tanh form, as written in its paper, in f64) over row pairs.
#[test]
fn epilogues_apply_to_the_product() {
    let (rows, cols, m) = (18, 96, 5);
    let p = matrix(QuantFormat::Q4, rows, cols, 7);
    let x: Vec<f32> = (0..m * cols).map(|j| (j as f32 * 0.37).sin()).collect();
    let residual: Vec<f32> = (0..m * rows).map(|j| j as f32 * 0.01).collect();
    let words = tiled(&p);
    let w = view(&p, &words);
    for isa in Isa::available() {
        let mut plain = vec![0.0; m * rows];
        qgemm_with(Isa::Scalar, Inputs::of(isa), &x, m, &w, SliceEpilogue::None, &mut plain);
        let mut with_res = vec![0.0; m * rows];
        qgemm(isa, Activations::F32, &x, m, &w, SliceEpilogue::Residual(&residual), &mut with_res);
        for j in 0..m * rows {
            assert!((with_res[j] - (plain[j] + residual[j])).abs() < 1e-4, "{isa:?} residual [{j}]");
        }
        let silu = |g: f64| g / (1.0 + (-g).exp());
        let gelu = |g: f64| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3))).tanh());
        for (act, want) in [(Activation::Silu, &silu as &dyn Fn(f64) -> f64), (Activation::GeluTanh, &gelu)] {
            let mut glu = vec![0.0; m * rows / 2];
            qgemm(isa, Activations::F32, &x, m, &w, SliceEpilogue::Glu(act), &mut glu);
            for t in 0..m {
                for pair in 0..rows / 2 {
                    let (g, u) = (plain[t * rows + 2 * pair], plain[t * rows + 2 * pair + 1]);
                    let (got, want) = (glu[t * rows / 2 + pair], (want(g as f64) * u as f64) as f32);
                    assert!((got - want).abs() < 1e-4 * (1.0 + got.abs()), "{isa:?} {act:?} [{t}, {pair}]");
                }
            }
        }
    }
}

/// The inputs' rounding gives `f32::round_ties_even`'s integer for every value it meets
/// (|v| ≤ 32767; -0.5 becomes +0 rather than -0, the same code).
#[test]
fn inputs_round_to_nearest_even() {
    let halves = (-65536..=65536).map(|i| i as f32 / 2.0);
    let others = (0..100_000).map(|i| ((i as f32) * 0.618_034).sin() * 32767.0);
    for v in halves.chain(others) {
        assert_eq!(inputs::round_ties_even(v) as i32, v.round_ties_even() as i32, "{v}");
    }
}

/// Not a test: multiply-adds a second of each level and arithmetic on a prefill-sized
/// product (`cargo test --release -p hearth --lib qgemm::tests::time_levels -- --ignored
/// --nocapture`), for tuning the kernels; benchmarks proper are `hearth bench`.
#[test]
#[ignore]
fn time_levels() {
    let (rows, cols, m) = (2048, 1536, 64);
    for (name, p) in [
        ("q4_k", k_matrix(GgmlType::Q4_K, rows, cols, 1)),
        ("q6_k", k_matrix(GgmlType::Q6_K, rows, cols, 2)),
        ("q4_0", matrix(QuantFormat::Q4, rows, cols, 3)),
        ("q8_0", matrix(QuantFormat::Q8, rows, cols, 4)),
    ] {
        let x = inputs(m, cols, 5);
        for isa in Isa::available() {
            // Levels without narrow kernels take 5- and 6-bit codes widened, as at upload.
            let p = if p.format.is_narrow() && !isa.has_narrow_kernels() { p.to_q8() } else { p.clone() };
            let words = tiled(&p);
            let w = view(&p, &words);
            for inputs in arithmetics(isa, p.format) {
                for batch in [1, m] {
                    let mut out = vec![0.0; batch * rows];
                    let run = |out: &mut [f32]| {
                        qgemm_with(isa, inputs, &x[..batch * cols], batch, &w, SliceEpilogue::None, out)
                    };
                    run(&mut out);
                    let start = std::time::Instant::now();
                    let mut n = 0;
                    while start.elapsed().as_secs_f64() < 0.5 {
                        run(&mut out);
                        n += 1;
                    }
                    let s = start.elapsed().as_secs_f64() / n as f64;
                    let gmacs = (batch * rows * cols) as f64 / s / 1e9;
                    println!("{name} {isa:?} {inputs:?} batch {batch}: {gmacs:.1} GMAC/s ({:.0} us)", s * 1e6);
                }
            }
        }
    }
}

/// `HEARTH_REQUIRE_ISA` (a level's name) fails the tests where the machine (or emulator)
/// lacks that level, so that a script that means to test it (`test-aarch64.sh`: `neondot`)
/// cannot pass without having run its kernels.
#[test]
fn the_required_level_is_available() {
    if let Ok(name) = std::env::var("HEARTH_REQUIRE_ISA") {
        let levels = Isa::available();
        assert!(levels.iter().any(|l| l.name() == name), "{name} is not among {levels:?}");
    }
}
