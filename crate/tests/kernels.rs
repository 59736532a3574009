//! Our kernels against a plain CPU dequantize-then-compute reference, on random shapes,
//! including ragged ones (rows not a multiple of a thread's rows, columns not a multiple of the
//! block or of the vector width) and every batch size from 1 to past one cube's tokens; every
//! stored format (legacy, K-quant, F16, BF16, F32).

mod common;

use burn::prelude::*;
use common::{Rng, random_k_blocks};
use hearth::DeviceKind;
use hearth::backend::kernels::qgather::qgather;
use hearth::backend::kernels::qmatmul::{QuantMatrix, qmatmul};
use hearth::format::gguf::GgmlType;
use hearth::quant::packed::{FloatQuant, PackedMatrix, QuantFormat};

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(1.0)).collect()
}

/// `(rows, cols)` of K-quant matrices (whole super-blocks), rows ragged against the threads.
const K_SHAPES: [(usize, usize); 4] = [(1, 256), (7, 512), (33, 768), (130, 1536)];

/// A `[rows, cols]` matrix of random GGUF `dtype` super-blocks, repacked.
fn k_matrix(rng: &mut Rng, dtype: GgmlType, rows: usize, cols: usize) -> PackedMatrix {
    PackedMatrix::from_gguf("t", dtype, &random_k_blocks(rng, dtype, rows * cols / 256), rows, cols).unwrap()
}

/// Every kind of matrix the kernels take: 4- and 8-bit legacy blocks quantized from random
/// floats on [`SHAPES`], and every K-quant on [`K_SHAPES`].
fn matrices(rng: &mut Rng) -> Vec<PackedMatrix> {
    let mut out = Vec::new();
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        for (rows, cols) in SHAPES {
            out.push(PackedMatrix::quantize(format, &random(rng, rows * cols), rows, cols));
        }
    }
    for dtype in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        for (rows, cols) in K_SHAPES {
            out.push(k_matrix(rng, dtype, rows, cols));
        }
    }
    // Floats quantized to K-quants on ragged rows (a partial last super-block).
    for kind in [FloatQuant::Q4_K, FloatQuant::Q6_K] {
        for (rows, cols) in [(7, 40), (13, 70), (33, 33), (64, 576)] {
            out.push(PackedMatrix::quantize_as(kind, &random(rng, rows * cols), rows, cols).unwrap());
        }
    }
    // F16, BF16 and F32 codes, ragged rows among them.
    for format in [QuantFormat::F16, QuantFormat::Bf16, QuantFormat::F32] {
        for (rows, cols) in [(7, 40), (13, 70), (33, 33), (130, 1000)] {
            out.push(float_matrix(rng, format, rows, cols, false));
        }
    }
    out
}

/// A `[rows, cols]` matrix of float codes (`format` F16, BF16 or F32): random weights with
/// subnormals (of f16; of f32 too for F32) and signed zeros among them, and with `special`
/// infinities too.
fn float_matrix(rng: &mut Rng, format: QuantFormat, rows: usize, cols: usize, special: bool) -> PackedMatrix {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| match i % 29 {
            0 => 3.1e-6,
            1 => -0.0,
            2 => -4.5e-7,
            3 if special => f32::INFINITY,
            4 if special => f32::NEG_INFINITY,
            5 if format == QuantFormat::F32 => -1.0e-40,
            _ => rng.uniform(1.0),
        })
        .collect();
    let bits = |to: fn(f32) -> u16| values.iter().map(|&v| to(v)).collect::<Vec<u16>>();
    match format {
        QuantFormat::F32 => PackedMatrix::from_f32(&values, rows, cols),
        QuantFormat::Bf16 => {
            PackedMatrix::from_halves(format, &bits(|v| half::bf16::from_f32(v).to_bits()), rows, cols)
        }
        _ => PackedMatrix::from_halves(format, &bits(|v| half::f16::from_f32(v).to_bits()), rows, cols),
    }
}

fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// `(rows, cols)`: small, ragged in every way, and model-sized.
const SHAPES: [(usize, usize); 7] = [(1, 32), (7, 40), (13, 70), (33, 33), (64, 576), (130, 1000), (576, 1536)];

fn qmatmul_matches_reference(device: DeviceKind) {
    let device = device.device().unwrap();
    let mut rng = Rng::new(17);
    for packed in matrices(&mut rng) {
        let (format, rows, cols) = (packed.format, packed.rows, packed.cols);
        let w = packed.dequantize();
        // Each weight's code part and offset: the kernel sums their products apart.
        let nb = packed.blocks_per_row();
        let terms: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let offset = packed.half_params(r * nb + c / 32, c % 32).1;
                (w[i] - offset).abs() + offset.abs()
            })
            .collect();
        let matrix = QuantMatrix::upload(&packed, &device);
        // Every batch for the legacy formats; for the K-quants (whose token loop is the same
        // code) one token, an odd tile, a full one and past it, to keep the shader count down.
        let batches: Vec<usize> = match packed.scales {
            _ if format.is_float() => vec![1, 3, 8, 13],
            hearth::quant::packed::Scales::Block => (1..=9).chain([13, 17]).collect(),
            hearth::quant::packed::Scales::Super => vec![1, 3, 8, 13],
        };
        for m in batches {
            let x = random(&mut rng, m * cols);
            let got = read(qmatmul(Tensor::from_data(TensorData::new(x.clone(), [m, cols]), &device), &matrix));
            for t in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum();
                    let g = got[t * rows + r];
                    let scale = (0..cols).map(|c| (x[t * cols + c] * terms[r * cols + c]).abs()).sum::<f32>() + 1.0;
                    assert!(
                        (g - want).abs() <= 1e-5 * scale,
                        "{format:?} {:?} {rows}x{cols} m={m} t={t} r={r}: {g} vs {want}",
                        packed.scales
                    );
                }
            }
        }
    }
}

each_device!(qmatmul_matches_dequantize_then_multiply, |device| qmatmul_matches_reference(device));

fn qgather_matches_reference(device: DeviceKind) {
    let device = device.device().unwrap();
    let mut rng = Rng::new(23);
    let mut all = matrices(&mut rng);
    // Infinities widen to infinities on every path.
    all.extend([QuantFormat::F16, QuantFormat::Bf16, QuantFormat::F32].map(|f| float_matrix(&mut rng, f, 9, 70, true)));
    for packed in all {
        let (rows, cols) = (packed.rows, packed.cols);
        let w = packed.dequantize();
        let ids: Vec<u32> = (0..5).map(|_| rng.below(rows as u64) as u32).collect();
        let got = read(qgather(&ids, &QuantMatrix::upload(&packed, &device), &device));
        let want: Vec<f32> = ids.iter().flat_map(|&i| w[i as usize * cols..(i as usize + 1) * cols].to_vec()).collect();
        assert_eq!(got, want, "{:?} {:?} {rows}x{cols}", packed.format, packed.scales);
    }
}

each_device!(qgather_matches_dequantized_rows, |device| qgather_matches_reference(device));

fn tensor2(data: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

/// RMSNorm and the matmul epilogues (residual add, SwiGLU over row pairs).
fn norm_and_epilogues_match_reference(device: DeviceKind) {
    use hearth::backend::kernels::norm::rms_norm;
    use hearth::backend::kernels::qmatmul::{Epilogue, qmatmul_with};
    use hearth::config::Activation;
    let device = device.device().unwrap();
    let mut rng = Rng::new(29);
    for (m, d) in [(1, 70), (3, 576), (9, 33)] {
        let x = random(&mut rng, m * d);
        let g = random(&mut rng, d);
        let got = read(rms_norm(
            tensor2(&x, [m, d], &device),
            &Tensor::from_data(TensorData::new(g.clone(), [d]), &device),
            1e-5,
        ));
        for t in 0..m {
            let row = &x[t * d..(t + 1) * d];
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + 1e-5).sqrt();
            for i in 0..d {
                assert!((got[t * d + i] - row[i] * inv * g[i]).abs() < 1e-5, "rms_norm {m}x{d}");
            }
        }
    }
    for (rows, cols, m) in [(8, 64, 1), (14, 70, 3), (96, 576, 9)] {
        let packed = PackedMatrix::quantize(QuantFormat::Q4, &random(&mut rng, rows * cols), rows, cols);
        let w = packed.dequantize();
        let matrix = QuantMatrix::upload(&packed, &device);
        let x = random(&mut rng, m * cols);
        let y: Vec<f32> = (0..m)
            .flat_map(|t| (0..rows).map(move |r| (t, r)))
            .map(|(t, r)| (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum())
            .collect();
        let residual = random(&mut rng, m * rows);
        let got = read(qmatmul_with(
            tensor2(&x, [m, cols], &device),
            &matrix,
            Epilogue::Residual(tensor2(&residual, [m, rows], &device)),
        ));
        for i in 0..m * rows {
            assert!((got[i] - (y[i] + residual[i])).abs() < 1e-4, "residual {rows}x{cols} m={m}");
        }
        // SwiGLU, and GeGLU with GELU in its paper's tanh form (in f64).
        let silu = |g: f64| g / (1.0 + (-g).exp());
        let gelu = |g: f64| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3))).tanh());
        for (act, f) in [(Activation::Silu, &silu as &dyn Fn(f64) -> f64), (Activation::GeluTanh, &gelu)] {
            let got = read(qmatmul_with(tensor2(&x, [m, cols], &device), &matrix, Epilogue::Glu(act)));
            for (i, pair) in y.chunks(2).enumerate() {
                let want = (f(pair[0] as f64) * pair[1] as f64) as f32;
                assert!(
                    (got[i] - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{act:?} {rows}x{cols} m={m}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
}

each_device!(norm_and_epilogues_match_reference);

/// RoPE with the cache write, then causal attention over everything cached, for a chunk that
/// starts after earlier tokens, against a plain computation. Head dimension 80 (not a multiple
/// of the cube's threads) and 300 cached slots (more than one chunk of keys); then with sliding
/// windows shorter than one chunk of keys and longer than one (a sliding-window layer).
fn rope_and_attention_match_reference(device: DeviceKind) {
    use hearth::backend::kernels::attention::attention;
    use hearth::backend::kernels::rope::{Slot, rope_store};
    use hearth::config::Heads;
    let device = device.device().unwrap();
    let mut rng = Rng::new(31);
    let heads = Heads { n_heads: 4, n_kv_heads: 2, head_dim: 80 };
    let (hd, capacity, slot, m) = (80, 320, 297, 3);
    let (d, kv) = (4 * hd, 2 * hd);
    let width = d + 2 * kv;
    // Rotation tables as KvCache builds them: cos repeated, (-sin, sin) per pair.
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..capacity {
        for i in 0..hd / 2 {
            let a = p as f64 * 10000f64.powf(-2.0 * i as f64 / hd as f64);
            cos.extend([a.cos() as f32; 2]);
            sin.extend([-(a.sin() as f32), a.sin() as f32]);
        }
    }
    let mut k_host = random(&mut rng, 2 * capacity * hd);
    let mut v_host = random(&mut rng, 2 * capacity * hd);
    let qkv = random(&mut rng, m * width);
    let mut k_cache = Tensor::<3>::from_data(TensorData::new(k_host.clone(), [2, capacity, hd]), &device);
    let mut v_cache = Tensor::<3>::from_data(TensorData::new(v_host.clone(), [2, capacity, hd]), &device);
    let q = rope_store(
        tensor2(&qkv, [m, width], &device),
        heads,
        &tensor2(&cos, [capacity, hd], &device),
        &tensor2(&sin, [capacity, hd], &device),
        Slot::at(slot),
        &mut k_cache,
        &mut v_cache,
    );
    let windows = [None, Some(5), Some(290)];
    let outs: Vec<Vec<f32>> =
        windows.iter().map(|&w| read(attention(q.clone(), &k_cache, &v_cache, heads, slot, w))).collect();
    let q = read(q);
    let k_got = k_cache.into_data().try_into_vec_as::<f32>().unwrap();
    let v_got = v_cache.into_data().try_into_vec_as::<f32>().unwrap();

    let rotate = |x: &[f32], p: usize| -> Vec<f32> {
        (0..hd)
            .map(|i| {
                let (a, b) = (x[i & !1], x[i | 1]);
                let (c, s) = (cos[p * hd + i], sin[p * hd + (i | 1)]);
                if i % 2 == 0 { a * c - b * s } else { a * s + b * c }
            })
            .collect()
    };
    let mut q_want = vec![0.0; m * d];
    for t in 0..m {
        let row = &qkv[t * width..(t + 1) * width];
        for h in 0..4 {
            q_want[t * d + h * hd..][..hd].copy_from_slice(&rotate(&row[h * hd..(h + 1) * hd], slot + t));
        }
        for h in 0..2 {
            let at = (h * capacity + slot + t) * hd;
            k_host[at..at + hd].copy_from_slice(&rotate(&row[d + h * hd..d + (h + 1) * hd], slot + t));
            v_host[at..at + hd].copy_from_slice(&row[d + kv + h * hd..d + kv + (h + 1) * hd]);
        }
    }
    for (g, w) in q.iter().zip(&q_want) {
        assert!((g - w).abs() < 1e-5, "rotated queries");
    }
    for (i, (g, w)) in k_got.iter().zip(&k_host).enumerate() {
        assert!((g - w).abs() < 1e-5, "key cache element {i}: {g} vs {w} (written slots rotated, others untouched)");
    }
    assert_eq!(v_got, v_host, "value cache: new slots written, others untouched");
    for (window, out) in windows.iter().zip(&outs) {
        for t in 0..m {
            let first = window.map_or(0, |w| (slot + t + 1).saturating_sub(w));
            for h in 0..4 {
                let kvh = h / 2;
                let qh = &q_want[t * d + h * hd..][..hd];
                let scores: Vec<f32> = (first..=slot + t)
                    .map(|s| {
                        qh.iter().zip(&k_host[(kvh * capacity + s) * hd..][..hd]).map(|(a, b)| a * b).sum::<f32>()
                            / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = scores.iter().map(|s| (s - max).exp()).sum();
                for i in 0..hd {
                    let want: f32 = scores
                        .iter()
                        .enumerate()
                        .map(|(s, sc)| (sc - max).exp() / sum * v_host[(kvh * capacity + first + s) * hd + i])
                        .sum();
                    let got = out[t * d + h * hd + i];
                    assert!((got - want).abs() < 1e-4, "attention {window:?} t={t} h={h} i={i}: {got} vs {want}");
                }
            }
        }
    }
}

each_device!(rope_and_attention_match_reference);

/// Element-wise kernels with more than 65,535 workgroups of work (WebGPU's limit per
/// dimension) spread them over two dimensions: every element is still computed, once.
/// RoPE over 70,000 tokens of a 288-wide projection (78,750 workgroups of 256) and an
/// embedding gather of 300,000 rows of 64 (75,000).
#[test]
fn elementwise_kernels_past_65535_workgroups() {
    use hearth::backend::kernels::rope::{Slot, rope_store};
    use hearth::config::Heads;
    let device = DeviceKind::Wgpu.device().unwrap();
    let heads = Heads { n_heads: 2, n_kv_heads: 1, head_dim: 72 };
    let (hd, m): (usize, usize) = (72, 70_000);
    let width = 4 * hd;
    assert!((m * width).div_ceil(256) > 65_535);
    // Identity rotation: cos 1, sin 0, so the queries and keys come out as they went in.
    let cos = vec![1.0f32; m * hd];
    let sin = vec![0.0f32; m * hd];
    let qkv: Vec<f32> = (0..m * width).map(|i| (i % 1009) as f32).collect();
    let mut k = Tensor::<3>::zeros([1, m, hd], &device);
    let mut v = Tensor::<3>::zeros([1, m, hd], &device);
    let q = rope_store(
        tensor2(&qkv, [m, width], &device),
        heads,
        &tensor2(&cos, [m, hd], &device),
        &tensor2(&sin, [m, hd], &device),
        Slot::at(0),
        &mut k,
        &mut v,
    );
    let (q, k, v) =
        (read(q), k.into_data().try_into_vec_as::<f32>().unwrap(), v.into_data().try_into_vec_as::<f32>().unwrap());
    for t in [0, 1, m / 2, m - 1] {
        let row = &qkv[t * width..(t + 1) * width];
        assert_eq!(&q[t * 2 * hd..(t + 1) * 2 * hd], &row[..2 * hd], "queries of token {t}");
        assert_eq!(&k[t * hd..(t + 1) * hd], &row[2 * hd..3 * hd], "key of token {t}");
        assert_eq!(&v[t * hd..(t + 1) * hd], &row[3 * hd..], "value of token {t}");
    }

    let mut rng = Rng::new(41);
    let (rows, cols) = (50, 64);
    let packed = PackedMatrix::quantize(QuantFormat::Q8, &random(&mut rng, rows * cols), rows, cols);
    let w = packed.dequantize();
    let ids: Vec<u32> = (0..300_000u32).map(|i| (i * 7) % rows as u32).collect();
    assert!((ids.len() * cols).div_ceil(256) > 65_535);
    let got = read(qgather(&ids, &QuantMatrix::upload(&packed, &device), &device));
    for t in [0, 1, 150_001, ids.len() - 1] {
        let r = ids[t] as usize;
        assert_eq!(&got[t * cols..(t + 1) * cols], &w[r * cols..(r + 1) * cols], "row {t}");
    }
}
