//! Floats to K-quant super-blocks as ggml's reference quantizers (`quantize_row_q*_K_ref` in
//! `ggml-quants.c`) make them, without an importance matrix: the same searches for each
//! sub-block's scale and minimum, in the same f32 operations in the same order (ggml's base
//! library is built without FMA contraction), so that a float checkpoint quantized here holds
//! the bytes llama.cpp's `quantize` would write (the tests compare them on every type).

use half::f16;

use super::QK_K;
use super::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};

/// Below this a group is all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adding 1.5 · 2^23 leaves the value rounded half to even in the low
/// mantissa bits (exact for |v| < 2^22, and the same bits as ggml's beyond).
fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude, and that magnitude (`0` when every value is zero).
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// The best `(scale, min)` for codes `0..=nmax` of `x` under `weights` (`make_qkx2_quants`):
/// min-max first, then `nstep + 1` scales around it, each with its least-squares scale and
/// minimum, keeping the least weighted error (absolute with `mad`, squared otherwise). Writes
/// the codes to `l`; returns the scale and the minimum negated (ggml's `the_min`).
#[allow(clippy::too_many_arguments)]
fn scale_min_search(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let error = |d: f32| if mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        best_error += weights[i] * error(scale * l[i] as f32 + min - x[i]);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += weights[i] * error(this_scale * aux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l.copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The best signed scale for codes `-nmax..nmax` of `x` weighted by `x²` (`make_qx_quants`
/// with `rmse_type` 1): `-nmax / max` and 18 scales around it, by least squares. Writes
/// codes offset by `nmax` to `l`.
fn signed_scale_search(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let fill = |l: &mut [i8], iscale: f32| {
        for (l, &v) in l.iter_mut().zip(x) {
            *l = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    fill(l, iscale);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(l, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's sub-block scale (`make_q3_quants` with rmse): codes `-nmax..nmax` weighted by `x²`,
/// refined code by code for up to five passes. Writes codes offset by `nmax` to `l`.
fn q3_scale_search(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (l, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let mut slx = sumlx - w * v * *l as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * *l as f32 * *l as f32;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != *l as i32 {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in l.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Q3_K's and Q6_K's sixteen sub-block scales, each from `search` over its 16 values (codes
/// into `l`), and the one of largest magnitude with that magnitude.
fn signed_sub_scales(
    x: &[f32],
    l: &mut [i8; QK_K],
    search: impl Fn(&[f32], &mut [i8]) -> f32,
) -> ([f32; 16], f32, f32) {
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = search(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > max_abs {
            max_abs = scales[j].abs();
            max_scale = scales[j];
        }
    }
    (scales, max_scale, max_abs)
}

/// Q4_K's and Q5_K's eight (scale, min) pairs of 6 bits into their 12 bytes.
fn pack_scale_min(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            out[j] = ls[j];
            out[j + 4] = lm[j];
        } else {
            out[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            out[j - 4] |= (ls[j] >> 4) << 6;
            out[j] |= (lm[j] >> 4) << 6;
        }
    }
    out
}

/// The shared first half of Q4_K and Q5_K: per sub-block of 32 the best (scale, min) for codes
/// `0..=nmax`, weighted by `rms + |x|`, the eight pairs quantized to 6 bits against the largest,
/// then every code again against the quantized pair. Returns the packed scales, the f16 super
/// pair and the codes.
fn min_max_super_block(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; 12], f16, f16, [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            scale_min_search(xs, &weights, nmax, &mut l[32 * j..32 * j + 32], rmin, 0.1, nstep, false);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let (d, dmin) = (f16::from_f32(max_scale / 63.0), f16::from_f32(max_min / 63.0));
    for j in 0..8 {
        let dl = d.to_f32() * ls[j] as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * lm[j] as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    (pack_scale_min(&ls, &lm), d, dmin, l)
}

/// Codes in element order into four 2-bit planes per 32 bytes (element `128 h + 32 s + i`
/// is bits `2s..` of byte `32 h + i`).
fn two_bit_planes(l: &[u8; QK_K]) -> [u8; 64] {
    std::array::from_fn(|b| {
        let (h, i) = (b / 32, b % 32);
        (0..4).fold(0, |acc, s| acc | (l[128 * h + 32 * s + i] << (2 * s)))
    })
}

/// Codes in element order into two nibble planes per 32 bytes (element `64 c + 32 s + i` is
/// nibble `s` of byte `32 c + i`), keeping the low four bits.
fn nibble_planes(l: &[u8; QK_K]) -> [u8; 128] {
    std::array::from_fn(|b| {
        let (c, i) = (b / 32, b % 32);
        (l[64 * c + i] & 0x0f) | ((l[64 * c + 32 + i] & 0x0f) << 4)
    })
}

/// Bit `e / 32` of byte `e % 32` set where bit `bit` of code `e` is.
fn high_bits(l: &[u8; QK_K], bit: u32) -> [u8; 32] {
    std::array::from_fn(|i| (0..8).fold(0, |acc, s| acc | (((l[32 * s + i] >> bit) & 1) << s)))
}

impl BlockQ2K {
    /// `quantize_row_q2_K_ref` for 256 values.
    pub fn quantize(x: &[f32]) -> Self {
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            let weights: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
            (scales[j], mins[j]) = scale_min_search(xs, &weights, 3, &mut l[16 * j..16 * j + 16], -0.5, 0.1, 15, true);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut packed = [0u8; 16];
        let mut d = f16::ZERO;
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (p, &s) in packed.iter_mut().zip(&scales) {
                *p = nearest_int(iscale * s) as u8;
            }
            d = f16::from_f32(max_scale / 15.0);
        }
        let mut dmin = f16::ZERO;
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (p, &m) in packed.iter_mut().zip(&mins) {
                *p |= (nearest_int(iscale * m) << 4) as u8;
            }
            dmin = f16::from_f32(max_min / 15.0);
        }
        for (j, &p) in packed.iter().enumerate() {
            let dl = d.to_f32() * (p & 0x0f) as f32;
            if dl == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * (p >> 4) as f32;
            for i in 16 * j..16 * j + 16 {
                l[i] = nearest_int((x[i] + dm) / dl).clamp(0, 3) as u8;
            }
        }
        Self { scales: packed, qs: two_bit_planes(&l), d, dmin }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.scales[..], &self.qs, &self.d.to_le_bytes(), &self.dmin.to_le_bytes()].concat()
    }
}

impl BlockQ3K {
    /// `quantize_row_q3_K_ref` for 256 values.
    pub fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let (scales, max_scale, _) = signed_sub_scales(x, &mut l, |x, l| q3_scale_search(x, 4, l));
        let mut packed = [0u8; 12];
        let mut d = f16::ZERO;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // ggml keeps the rounded scale in an int8_t before clamping it.
                let q = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    packed[j] = q & 0x0f;
                } else {
                    packed[j - 8] |= (q & 0x0f) << 4;
                }
                packed[8 + j % 4] |= (q >> 4) << (2 * (j / 4));
            }
            d = f16::from_f32(1.0 / iscale);
        }
        let block = Self { hmask: [0; 32], qs: [0; 64], scales: packed, d };
        let mut codes = [0u8; QK_K];
        for j in 0..16 {
            let dl = d.to_f32() * block.scale(j) as f32;
            for i in 16 * j..16 * j + 16 {
                // A zero scale keeps the search's codes.
                codes[i] = if dl == 0.0 { l[i] as u8 } else { (nearest_int(x[i] / dl).clamp(-4, 3) + 4) as u8 };
            }
        }
        let hmask = high_bits(&codes, 2);
        let low = codes.map(|c| c & 3);
        Self { hmask, qs: two_bit_planes(&low), ..block }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.hmask[..], &self.qs, &self.scales, &self.d.to_le_bytes()].concat()
    }
}

impl BlockQ4K {
    /// `quantize_row_q4_K_ref` for 256 values.
    pub fn quantize(x: &[f32]) -> Self {
        let (scales, d, dmin, l) = min_max_super_block(x, 15, -1.0, 20);
        Self { d, dmin, scales, qs: nibble_planes(&l) }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.d.to_le_bytes()[..], &self.dmin.to_le_bytes(), &self.scales, &self.qs].concat()
    }
}

impl BlockQ5K {
    /// `quantize_row_q5_K_ref` for 256 values.
    pub fn quantize(x: &[f32]) -> Self {
        let (scales, d, dmin, l) = min_max_super_block(x, 31, -0.5, 15);
        Self { d, dmin, scales, qh: high_bits(&l, 4), qs: nibble_planes(&l) }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.d.to_le_bytes()[..], &self.dmin.to_le_bytes(), &self.scales, &self.qh, &self.qs].concat()
    }
}

impl BlockQ6K {
    /// `quantize_row_q6_K_ref` for 256 values.
    pub fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let (scales, max_scale, max_abs) = signed_sub_scales(x, &mut l, |x, l| signed_scale_search(x, 32, l));
        if max_abs < GROUP_MAX_EPS {
            return Self { ql: [0; 128], qh: [0; 64], scales: [0; 16], d: f16::ZERO };
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let packed: [i8; 16] = std::array::from_fn(|j| nearest_int(iscale * scales[j]).min(127) as i8);
        for (j, &p) in packed.iter().enumerate() {
            let dl = d.to_f32() * p as f32;
            if dl == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / dl).clamp(-32, 31) + 32) as i8;
            }
        }
        // Element `128 h + 32 s + i`: low nibble in `ql[64 h + 32 (s % 2) + i]` (high nibble for
        // s >= 2), top two bits at `2 s` of `qh[32 h + i]`.
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for h in 0..2 {
            for i in 0..32 {
                let q = |s: usize| l[128 * h + 32 * s + i] as u8;
                ql[64 * h + i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                ql[64 * h + 32 + i] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                qh[32 * h + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        Self { ql, qh, scales: packed, d }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.ql[..], &self.qh, &self.scales.map(|s| s as u8), &self.d.to_le_bytes()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0};

    /// Rows of random floats and the blocks ggml's reference quantizers make of them
    /// (`crate/tests/fixtures/make-quantizer-fixtures.py`, llama-cpp-python 0.3.16).
    const FIXTURE: &str = include_str!("../../tests/fixtures/ggml_quantizers.json");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    /// Every quantizer writes ggml's bytes exactly, on Gaussian, heavy-tailed, one-signed,
    /// outlier, constant, zero and tiny rows.
    #[test]
    fn every_quantizer_writes_ggmls_bytes() {
        let all: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let x: Vec<f32> = hex(all["floats_f32_le"].as_str().unwrap())
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        type Quantizer = fn(&[f32]) -> Vec<u8>;
        let cases: [(&str, usize, Quantizer); 8] = [
            ("q4_0", 32, |x| BlockQ4_0::quantize(x).to_bytes().to_vec()),
            ("q4_1", 32, |x| BlockQ4_1::quantize(x).to_bytes().to_vec()),
            ("q8_0", 32, |x| BlockQ8_0::quantize(x).to_bytes().to_vec()),
            ("q2_K", QK_K, |x| BlockQ2K::quantize(x).to_bytes()),
            ("q3_K", QK_K, |x| BlockQ3K::quantize(x).to_bytes()),
            ("q4_K", QK_K, |x| BlockQ4K::quantize(x).to_bytes()),
            ("q5_K", QK_K, |x| BlockQ5K::quantize(x).to_bytes()),
            ("q6_K", QK_K, |x| BlockQ6K::quantize(x).to_bytes()),
        ];
        for (name, elements, quantize) in cases {
            let want = hex(all["types"][name].as_str().unwrap());
            let got: Vec<u8> = x.chunks_exact(elements).flat_map(quantize).collect();
            assert_eq!(got.len(), want.len(), "{name}: bytes");
            let size = want.len() / (x.len() / elements);
            for (i, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
                assert_eq!(g, w, "{name} block {i} (row {})", i * elements / 256);
            }
        }
    }
}
