//! `y = x Wᵀ` with `W` kept packed ([`crate::quant::packed`]): codes are unpacked in registers
//! and never written out as floats.
//!
//! On cubecl devices the matrix is stored block-interleaved: block `b` of every row comes
//! before block `b + 1` of any row, so that when each thread computes one output row, adjacent
//! threads read adjacent words. A thread unpacks each block once and applies it to up to
//! [`MAX_TOKENS`] tokens; there is no shared memory and no barrier, which keeps the kernel cheap
//! on CPU-backed adapters (lavapipe, SwiftShader) and coalesced on GPUs. On the CPU (Flex) the
//! matrix is row-tiled for [`crate::backend::cpu::qgemm`].

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::{CubeCount, CubeDim};

#[cfg(feature = "gpu")]
use super::cube_float;
use super::{Prim, flex_f32, flex_float, flex_words};
use crate::backend::cpu::Isa;
use crate::backend::cpu::qgemm::{self as cpu, Activations, QuantRows, qgemm};
use crate::config::Activation;
use crate::quant::packed::{PackedMatrix, QuantFormat, Scales};
#[cfg(feature = "gpu")]
pub use cube::{f16_to_f32, float_code};

/// Output rows one thread computes.
pub const ROWS_PER_THREAD: u32 = 4;
/// Threads per cube.
pub const THREADS_PER_CUBE: u32 = 64;
/// Tokens one thread carries; more tokens take more cubes.
pub const MAX_TOKENS: usize = 8;

/// How a packed matrix's blocks are ordered on its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Groups of four rows side by side, block by block, rows padded to a multiple of four
    /// ([`crate::backend::cpu::qgemm::tile_rows`]): the CPU kernels' order.
    RowTiled,
    /// `[block][row]`: block `b` of all rows, then block `b + 1` (cubecl devices).
    BlockInterleaved,
}

/// A packed matrix on a device.
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    pub scales: Scales,
    /// [`PackedMatrix::split_halves`].
    pub split_halves: bool,
    pub rows: usize,
    pub cols: usize,
    pub layout: Layout,
    /// How inputs meet the codes on the CPU ([`Activations::F32`] at upload; a model sets its
    /// mode on every matrix).
    pub activations: Activations,
    /// Code words, bit patterns stored in an int tensor.
    codes: Tensor<1, Int>,
    /// Parameter words: f16 `d` | f16 `m` << 16, or a K-quant block's four i8.
    params: Tensor<1, Int>,
    /// A K-quant's super words, f16 `d` | f16 `dmin` << 16, in the order of its blocks (one
    /// placeholder word for other matrices: every binding needs a buffer).
    supers: Tensor<1, Int>,
}

fn words_tensor(words: impl Iterator<Item = u32>, device: &Device) -> Tensor<1, Int> {
    let bits: Vec<i32> = words.map(|w| w as i32).collect();
    let n = bits.len();
    Tensor::from_data(TensorData::new(bits, [n]), device)
}

impl QuantMatrix {
    pub fn upload(p: &PackedMatrix, device: &Device) -> Self {
        let layout = if crate::backend::device::is_cube(device) { Layout::BlockInterleaved } else { Layout::RowTiled };
        // 5- and 6-bit codes at their width where kernels read them; widened elsewhere.
        let widened;
        let p = match p.format.is_narrow() && !(layout == Layout::RowTiled && Isa::best().has_narrow_kernels()) {
            true => {
                widened = p.to_q8();
                &widened
            }
            false => p,
        };
        let (codes, params, supers) = match layout {
            Layout::RowTiled => {
                let t = crate::backend::cpu::qgemm::tile_rows(p);
                (t.codes, t.params, t.supers)
            }
            Layout::BlockInterleaved => {
                let (nb, wpb, ns) = (p.blocks_per_row(), p.format.words_per_block(), p.supers_per_row());
                let np = nb * p.format.params_per_block();
                let order = |nb: usize| (0..nb).flat_map(move |b| (0..p.rows).map(move |r| r * nb + b));
                (
                    order(nb).flat_map(|i| p.codes[i * wpb..(i + 1) * wpb].iter().copied()).collect(),
                    order(np).map(|i| p.params[i]).collect(),
                    order(ns).map(|i| p.supers[i]).collect::<Vec<_>>(),
                )
            }
        };
        // Every binding needs a buffer: float codes have no parameter words, most matrices no
        // super words.
        let params = if params.is_empty() { vec![0] } else { params };
        let supers = if supers.is_empty() { vec![0] } else { supers };
        Self {
            format: p.format,
            scales: p.scales,
            split_halves: p.split_halves(),
            rows: p.rows,
            cols: p.cols,
            layout,
            activations: Activations::F32,
            codes: words_tensor(codes.into_iter(), device),
            params: words_tensor(params.into_iter(), device),
            supers: words_tensor(supers.into_iter(), device),
        }
    }

    pub fn device_bytes(&self) -> usize {
        let supers = if self.scales == Scales::Super { self.supers.dims()[0] } else { 0 };
        let params = if self.format.is_float() { 0 } else { self.params.dims()[0] };
        (self.codes.dims()[0] + params + supers) * 4
    }

    /// [`QuantRows`] over this matrix's words on the CPU (Flex) device.
    pub(crate) fn rows_view<'a>(&self, codes: &'a [u32], params: &'a [u32], supers: &'a [u32]) -> QuantRows<'a> {
        let supers = if self.scales == Scales::Super { supers } else { &[] };
        let params = if self.format.is_float() { &[] } else { params };
        QuantRows {
            format: self.format,
            scales: self.scales,
            rows: self.rows,
            cols: self.cols,
            codes,
            params,
            supers,
            split_halves: self.split_halves,
        }
    }

    pub(crate) fn codes(&self) -> &Tensor<1, Int> {
        &self.codes
    }

    pub(crate) fn params(&self) -> &Tensor<1, Int> {
        &self.params
    }

    pub(crate) fn supers(&self) -> &Tensor<1, Int> {
        &self.supers
    }
}

/// What the matmul does with its result before writing it.
#[allow(clippy::large_enum_variant)] // one per call
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// `y`
    None,
    /// `residual + y`, `residual: [m, rows]`: the residual connection after a projection.
    Residual(Tensor<2>),
    /// Rows come in (gate, up) pairs; writes `act(gate) * up`, `[m, rows / 2]`: SwiGLU or
    /// GeGLU.
    Glu(Activation),
}

impl Epilogue {
    fn code(&self) -> u32 {
        match self {
            Epilogue::None => 0,
            Epilogue::Residual(_) => 1,
            Epilogue::Glu(Activation::Silu) => 2,
            Epilogue::Glu(Activation::GeluTanh) => 3,
        }
    }
}

/// `x: [m, cols]` → `[m, rows]`, `y[t, r] = Σ_c x[t, c] W[r, c]`.
pub fn qmatmul(x: Tensor<2>, w: &QuantMatrix) -> Tensor<2> {
    qmatmul_with(x, w, Epilogue::None)
}

/// [`qmatmul`] followed by `epilogue`, in the same dispatch.
pub fn qmatmul_with(x: Tensor<2>, w: &QuantMatrix, epilogue: Epilogue) -> Tensor<2> {
    let [m, cols] = x.dims();
    assert_eq!(cols, w.cols, "qmatmul: x has {cols} columns, the matrix {}", w.cols);
    let out_cols = match epilogue {
        Epilogue::Glu(_) => {
            assert!(w.rows.is_multiple_of(2), "qmatmul: a gated epilogue needs (gate, up) row pairs");
            w.rows / 2
        }
        Epilogue::Residual(ref r) => {
            assert_eq!(r.dims(), [m, w.rows], "qmatmul: residual shape");
            w.rows
        }
        Epilogue::None => w.rows,
    };
    let code = epilogue.code();
    let residual = match epilogue {
        Epilogue::Residual(r) => Some(super::float(r)),
        _ => None,
    };
    match (super::float(x), super::int(w.codes.clone()), super::int(w.params.clone()), super::int(w.supers.clone())) {
        #[cfg(feature = "gpu")]
        (Prim::Cube(x), Prim::Cube(codes), Prim::Cube(params), Prim::Cube(supers)) => {
            let x = burn_cubecl::kernel::into_contiguous(x);
            let client = x.client.clone();
            let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), [m, out_cols].into(), x.dtype);
            let residual = match residual {
                #[cfg(feature = "gpu")]
                Some(Prim::Cube(r)) => burn_cubecl::kernel::into_contiguous(r),
                // Unused by the kernel, but every binding needs a buffer.
                _ => empty_device_contiguous_dtype(client.clone(), x.device.clone(), [1].into(), x.dtype),
            };
            let tokens = m.min(MAX_TOKENS);
            // x is read 4 floats at a time when rows (and so every block's start) allow it.
            let vector = if cols % 4 == 0 { 4 } else { 1 };
            // Safety: every index the kernel forms is below the length of the tensor it reads:
            // rows and tokens are checked against `rows` and `m`, columns against `cols`, and
            // the packed tensors hold exactly `rows * blocks` blocks.
            unsafe {
                cube::qmatmul_kernel::launch_unchecked(
                    &client,
                    CubeCount::Static(
                        (w.rows as u32).div_ceil(ROWS_PER_THREAD * THREADS_PER_CUBE),
                        m.div_ceil(tokens) as u32,
                        1,
                    ),
                    CubeDim::new_1d(THREADS_PER_CUBE),
                    x.into_tensor_arg(),
                    codes.into_tensor_arg(),
                    params.into_tensor_arg(),
                    supers.into_tensor_arg(),
                    residual.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    m as u32,
                    w.rows as u32,
                    cols as u32,
                    w.format == QuantFormat::Q8,
                    float_kind(w.format),
                    w.scales == Scales::Super,
                    w.split_halves,
                    tokens as u32,
                    code,
                    vector,
                )
            };
            cube_float(out)
        }
        (Prim::Flex(x), Prim::Flex(codes), Prim::Flex(params), Prim::Flex(supers)) => {
            let rows = w.rows_view(flex_words(&codes), flex_words(&params), flex_words(&supers));
            let residual = residual.map(|r| match r {
                Prim::Flex(r) => r,
                #[cfg(feature = "gpu")]
                Prim::Cube(_) => panic!("qmatmul: residual on another device"),
            });
            let mut y = crate::backend::cpu::scratch::take(m * out_cols);
            {
                let residual = residual.as_ref().map(flex_f32);
                let epilogue = match (code, &residual) {
                    (1, Some(r)) => cpu::SliceEpilogue::Residual(r),
                    (2, _) => cpu::SliceEpilogue::Glu(Activation::Silu),
                    (3, _) => cpu::SliceEpilogue::Glu(Activation::GeluTanh),
                    _ => cpu::SliceEpilogue::None,
                };
                qgemm(Isa::best(), w.activations, &flex_f32(&x), m, &rows, epilogue, &mut y);
            }
            crate::backend::cpu::scratch::give(x);
            if let Some(r) = residual {
                crate::backend::cpu::scratch::give(r);
            }
            flex_float(FlexTensor::from_data(TensorData::new(y, [m, out_cols])))
        }
        #[cfg(feature = "gpu")]
        _ => panic!("qmatmul: activations and weights on different devices"),
    }
}

#[cfg(feature = "gpu")]
/// The kernels' name for a matrix's float codes: 0 none (integer codes), 1 IEEE half, 2
/// bfloat16, 3 f32 (one a word).
pub(crate) fn float_kind(format: QuantFormat) -> u32 {
    match format {
        QuantFormat::F16 => 1,
        QuantFormat::Bf16 => 2,
        QuantFormat::F32 => 3,
        QuantFormat::Q4 | QuantFormat::Q5 | QuantFormat::Q6 | QuantFormat::Q8 => 0,
    }
}

/// The cubecl kernels, apart from burn's names (both have `Tensor`).
#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    /// f16 bits (low half of `h`) to f32, without needing shader-f16: exact for every value.
    #[cube]
    pub fn f16_to_f32(h: u32) -> f32 {
        let exp = (h >> 10) & 31;
        let mant = h & 1023;
        let sign = ((h >> 15) & 1) << 31;
        // Infinities and NaNs keep f32's all-ones exponent.
        let exp32 = select(exp == 31, 255u32, exp + 112);
        let normal = f32::reinterpret(sign | (exp32 << 23) | (mant << 13));
        // Zero and subnormals: mant * 2^-24.
        let small = f32::cast_from(mant) * 5.960_464_5e-8;
        let small = select(sign != 0, -small, small);
        select(exp == 0, small, normal)
    }

    /// 16-bit float code `e` of a block's words from `base`, as f32: the low half of word
    /// `e / 2` for even `e`; `float` 1 for IEEE half, 2 for bfloat16 (the high half of an f32).
    #[cube]
    pub fn float_code(word: u32, #[comptime] high: bool, #[comptime] float: u32) -> f32 {
        let bits = if high { word >> 16 } else { word & 65535 };
        if comptime!(float == 2) { f32::reinterpret(bits << 16) } else { f16_to_f32(bits) }
    }

    /// Code `i` (0..4) of the 4 inputs `4v..4v + 4` of a block, as a float. `words` are the
    /// block's 4 (Q4), 8 (Q8), 16 (16-bit float) or 32 (f32) code words.
    #[cube]
    fn code(
        words: &Array<i32>,
        #[comptime] base: usize,
        #[comptime] v: usize,
        #[comptime] i: usize,
        #[comptime] q8: bool,
        #[comptime] float: u32,
    ) -> f32 {
        if comptime!(float == 3) {
            f32::reinterpret(words[base + 4 * v + i])
        } else if comptime!(float > 0) {
            float_code(u32::reinterpret(words[base + 2 * v + i / 2]), comptime!(i % 2 == 1), float)
        } else if q8 {
            // Shift the byte to the top, then arithmetic-shift back: sign extension.
            f32::cast_from((words[base + v] << comptime!((24 - 8 * i) as i32)) >> 24)
        } else {
            // Inputs 0..16 are low nibbles of words 0..4, inputs 16..32 high nibbles.
            let word = u32::reinterpret(words[base + comptime!(v % 4)]);
            let shift = comptime!((8 * i + 4 * (v / 4)) as u32);
            f32::cast_from((word >> shift) & 15)
        }
    }

    /// Each thread computes [`super::ROWS_PER_THREAD`] consecutive output rows of a
    /// block-interleaved matrix for up to `tokens` tokens, so that every vector of inputs it
    /// loads serves several rows. `x` is read `N` floats at a time (4 where rows allow it).
    #[cube(launch_unchecked)]
    pub(super) fn qmatmul_kernel<N: Size>(
        x: &Tensor<Vector<f32, N>>,
        codes: &Tensor<Vector<i32, Const<4>>>,
        params: &Tensor<i32>,
        supers: &Tensor<i32>,
        residual: &Tensor<f32>,
        out: &mut Tensor<f32>,
        m: u32,
        rows: u32,
        cols: u32,
        #[comptime] q8: bool,
        #[comptime] float: u32,
        #[comptime] k: bool,
        #[comptime] split: bool,
        #[comptime] tokens: u32,
        #[comptime] epilogue: u32,
        #[define(N)] _vector: usize,
    ) {
        let rpt = comptime!(crate::backend::kernels::qmatmul::ROWS_PER_THREAD as usize);
        let row0 = ABSOLUTE_POS_X as usize * rpt;
        let (m, rows, cols) = (m as usize, rows as usize, cols as usize);
        if row0 >= rows {
            terminate!();
        }
        let first_token = (CUBE_POS_Y * tokens) as usize;
        let tokens_here = comptime!(tokens as usize);
        let vectors_per_block = comptime!(if float == 3 {
            8usize
        } else if float > 0 {
            4usize
        } else if q8 {
            2usize
        } else {
            1usize
        });
        let words_per_block = comptime!(vectors_per_block * 4);
        let n = x.vector_size().comptime();
        let blocks = cols.div_ceil(32);

        // acc[t * rpt + r]
        let mut acc = Array::<f32>::new(comptime!(tokens_here * rpt));
        #[unroll]
        for i in 0..comptime!(tokens_here * rpt) {
            acc[i] = 0.0;
        }
        let mut words = Array::<i32>::new(comptime!(rpt * words_per_block));
        // Per row: (d, m) of the block's first half, and of its second (K-quants only).
        let mut d = Array::<f32>::new(rpt);
        let mut mn = Array::<f32>::new(rpt);
        let mut d_hi = Array::<f32>::new(rpt);
        let mut mn_hi = Array::<f32>::new(rpt);
        let mut sum_qx = Array::<f32>::new(rpt);
        for b in 0..blocks {
            #[unroll]
            for r in 0..rpt {
                // Rows past the end read row `row0` again; their results are not written.
                let row = select(row0 + r < rows, row0 + r, row0);
                let at = b * rows + row;
                if comptime!(float > 0) {
                    // The codes are the weights.
                    d[r] = 1.0;
                    mn[r] = 0.0;
                } else if k {
                    // (d · s, dmin · n) per half: the super word's f16 pair times the block
                    // word's i8 pairs.
                    let sp = u32::reinterpret(supers[(b / 8) * rows + row]);
                    let (sd, smin) = (f16_to_f32(sp & 65535), f16_to_f32(sp >> 16));
                    let p = params[at];
                    d[r] = sd * f32::cast_from((p << 24) >> 24);
                    mn[r] = smin * f32::cast_from((p << 16) >> 24);
                    d_hi[r] = sd * f32::cast_from((p << 8) >> 24);
                    mn_hi[r] = smin * f32::cast_from(p >> 24);
                } else {
                    let p = u32::reinterpret(params[at]);
                    d[r] = f16_to_f32(p & 65535);
                    mn[r] = f16_to_f32(p >> 16);
                }
                #[unroll]
                for v in 0..vectors_per_block {
                    let four = codes[at * vectors_per_block + v];
                    #[unroll]
                    for k in 0..4usize {
                        words[r * words_per_block + v * 4 + k] = four.extract(k);
                    }
                }
            }
            let col0 = b * 32;
            let width = select(cols - col0 < 32, cols - col0, 32usize);
            #[unroll]
            for t in 0..tokens_here {
                let token = first_token + t;
                if token < m {
                    let base = (token * cols + col0) / n;
                    let mut sum_x = 0.0f32;
                    #[unroll]
                    for r in 0..rpt {
                        sum_qx[r] = 0.0;
                    }
                    if width == 32 {
                        #[unroll]
                        for v in 0..comptime!(32 / n) {
                            let xv = x[base + v];
                            #[unroll]
                            for i in 0..n {
                                let xi = xv.extract(i);
                                let e = comptime!(v * n + i);
                                sum_x += xi;
                                #[unroll]
                                for r in 0..rpt {
                                    sum_qx[r] += code(
                                        &words,
                                        comptime!(r * words_per_block),
                                        comptime!(e / 4),
                                        comptime!(e % 4),
                                        q8,
                                        float,
                                    ) * xi;
                                }
                                // A K-quant block's halves have their own scales: the first
                                // half is folded in here, the sums go on with the second.
                                if comptime!(k && split && e == 15) {
                                    #[unroll]
                                    for r in 0..rpt {
                                        acc[t * rpt + r] += d[r] * sum_qx[r] + mn[r] * sum_x;
                                        sum_qx[r] = 0.0;
                                    }
                                    sum_x = 0.0;
                                }
                            }
                        }
                    } else {
                        // A ragged last block: element by element.
                        for e in 0..width {
                            if k && split && e == 16 {
                                #[unroll]
                                for r in 0..rpt {
                                    acc[t * rpt + r] += d[r] * sum_qx[r] + mn[r] * sum_x;
                                    sum_qx[r] = 0.0;
                                }
                                sum_x = 0.0;
                            }
                            let xi = x[(token * cols + col0 + e) / n].extract_dynamic((token * cols + col0 + e) % n);
                            sum_x += xi;
                            #[unroll]
                            for r in 0..rpt {
                                sum_qx[r] += code_dynamic(&words, r * words_per_block, e, q8, float) * xi;
                            }
                        }
                    }
                    // What the sums hold now: a K-quant block's second half, unless it is a
                    // ragged block that ends within its first.
                    let second = k && split && width > 16;
                    #[unroll]
                    for r in 0..rpt {
                        let (dr, mr) = if second { (d_hi[r], mn_hi[r]) } else { (d[r], mn[r]) };
                        acc[t * rpt + r] += dr * sum_qx[r] + mr * sum_x;
                    }
                }
            }
        }
        #[unroll]
        for t in 0..tokens_here {
            let token = first_token + t;
            if comptime!(epilogue >= 2) {
                // (gate, up) pairs: rows_per_thread is even, so pairs never straddle threads.
                #[unroll]
                for r in 0..comptime!(rpt / 2) {
                    let row = row0 + 2 * r;
                    if token < m && row + 1 < rows {
                        let g = acc[t * rpt + 2 * r];
                        // SiLU is g sigmoid(g); GELU (tanh form) is g sigmoid(2z), as
                        // `Activation::apply` writes it.
                        let mut z = g;
                        if comptime!(epilogue == 3) {
                            z = 1.595_769_2 * (g + 0.044_715 * g * g * g);
                        }
                        out[token * (rows / 2) + row / 2] = g / (1.0 + f32::exp(-z)) * acc[t * rpt + 2 * r + 1];
                    }
                }
            } else {
                #[unroll]
                for r in 0..rpt {
                    if token < m && row0 + r < rows {
                        let at = token * rows + row0 + r;
                        if comptime!(epilogue == 1) {
                            out[at] = acc[t * rpt + r] + residual[at];
                        } else {
                            out[at] = acc[t * rpt + r];
                        }
                    }
                }
            }
        }
    }

    /// [`code`] for an input index known only at run time (ragged blocks).
    #[cube]
    fn code_dynamic(words: &Array<i32>, base: usize, e: usize, #[comptime] q8: bool, #[comptime] float: u32) -> f32 {
        if comptime!(float == 3) {
            f32::reinterpret(words[base + e])
        } else if comptime!(float > 0) {
            // The low half of the word shifted down: element e's code.
            let word = u32::reinterpret(words[base + e / 2]);
            float_code(word >> u32::cast_from(16 * (e % 2)), false, float)
        } else if q8 {
            let shift = i32::cast_from(24 - 8 * (e % 4));
            f32::cast_from((words[base + e / 4] << shift) >> 24)
        } else {
            let word = u32::reinterpret(words[base + (e % 16) / 4]);
            let shift = u32::cast_from(8 * (e % 4) + 4 * (e / 16));
            f32::cast_from((word >> shift) & 15)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain dequantize-then-multiply.
    fn reference(x: &[f32], m: usize, p: &PackedMatrix) -> Vec<f32> {
        let w = p.dequantize();
        let mut y = vec![0.0; m * p.rows];
        for t in 0..m {
            for r in 0..p.rows {
                y[t * p.rows + r] = (0..p.cols).map(|c| x[t * p.cols + c] * w[r * p.cols + c]).sum();
            }
        }
        y
    }

    #[test]
    fn the_flex_path_matches_dequantize_then_multiply_on_ragged_shapes() {
        for (format, rows, cols, m) in [
            (QuantFormat::Q4, 13, 70, 1),
            (QuantFormat::Q8, 9, 64, 3),
            (QuantFormat::Q4, 33, 96, 8),
            (QuantFormat::Q8, 5, 33, 11),
        ] {
            let wdata: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let p = PackedMatrix::quantize(format, &wdata, rows, cols);
            let x: Vec<f32> = (0..m * cols).map(|i| ((i * 104_729) % 997) as f32 / 498.0 - 1.0).collect();
            let device = Device::flex();
            let w = QuantMatrix::upload(&p, &device);
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, cols]), &device);
            let got = qmatmul(xt, &w).into_data().try_into_vec_as::<f32>().unwrap();
            let want = reference(&x, m, &p);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() < 1e-3 * (1.0 + r.abs()), "{format:?} {rows}x{cols} m={m}: {g} vs {r}");
            }
        }
    }
}
