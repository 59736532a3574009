//! The inputs as a level takes them: f32 as they are (x86), each block of 32 quantized to
//! i16 with its scale and sums (wasm, NEON), or to i8 (the q8 mode), and the mode's switch.

use super::*;

/// How a level's kernels take the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// As they are, in f32.
    F32,
    /// Each block of 32 as i16 codes `x̂` with one scale `s = max |x| / 32767` (`x ≈ s x̂`,
    /// rounded to nearest), beside the block's exact f32 sum (for the offsets `m`).
    I16,
    /// Each block of 32 as i8 codes with `s = max |x| / 127` (ggml's Q8_0 rounding), in
    /// element order, beside the codes' sums `s Σ x̂` (see `Code::EXACT_SUMS`): what
    /// [`Activations::Q8`] multiplies with 8-bit integer dot products.
    I8,
}

impl Inputs {
    /// The arithmetic `isa`'s kernels do on integer codes in the exact mode; the scalar level
    /// does every one (it is their reference).
    pub fn of(isa: Isa) -> Self {
        match isa {
            Isa::Simd128 | Isa::Neon | Isa::NeonDot => Inputs::I16,
            Isa::Scalar | Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => Inputs::F32,
        }
    }

    /// The arithmetic `isa`'s kernels do on a matrix of `format` in `mode`: float codes always
    /// meet f32 inputs (there is no integer code to take a dot product with), and q8 runs where
    /// a level has 8-bit kernels ([`Activations::runs_on`]).
    pub fn for_matrix(isa: Isa, format: QuantFormat, mode: Activations) -> Self {
        match (format.is_float(), mode.runs_on(isa)) {
            (true, _) => Inputs::F32,
            (false, Activations::Q8) => Inputs::I8,
            (false, Activations::F32) => Self::of(isa),
        }
    }
}

/// How the activations meet the packed weights on the CPU: the one switch between the exact
/// mode and 8-bit integer arithmetic, chosen at load (`--activations`, `activations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Activations {
    /// Each weight meets its input in f32 (on wasm and NEON, inputs within 1/65534 of their
    /// block's largest): the product differs from the dense f32 one only in rounding.
    #[default]
    F32,
    /// Each block of 32 inputs quantized to 8 bits once per matrix input and multiplied by the
    /// codes with integer dot products (VNNI, AVX2 `maddubs`, NEON `sdot` or `smull`), as
    /// llama.cpp does.
    Q8,
}

impl Activations {
    pub const NAMES: &str = "f32 or q8";
    pub const ALL: [Self; 2] = [Self::F32, Self::Q8];

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q8 => "q8",
        }
    }

    /// The mode that runs on `isa`: q8 where the level has 8-bit kernels (x86, NEON and the
    /// scalar reference; not simd128, which has no 8-bit dot product and stays on its i16
    /// inputs: see docs/cpu-kernels.md).
    pub fn runs_on(self, isa: Isa) -> Self {
        match (self, isa) {
            (Self::Q8, Isa::Simd128) => Self::F32,
            (mode, _) => mode,
        }
    }
}

impl std::str::FromStr for Activations {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "q8" => Ok(Self::Q8),
            other => {
                Err(crate::error::Error::BadOptions(format!("unknown activations {other:?}: expected {}", Self::NAMES)))
            }
        }
    }
}

/// An integer input code: its largest magnitude, where element `e` of a block sits, and
/// which sums the offsets meet.
pub(super) trait Code: Copy + Default + Into<i32> {
    const MAX: f32;
    /// Whether a block's sums are the inputs' exact ones (`Σ x`) or the codes' (`s Σ x̂`).
    /// With the codes' sums the offsets see the same rounding as the codes, so the error of
    /// `Σ (d q + m) x` is `Σ w e` (each input's rounding `e` times its weight) as in a product
    /// of signed codes; with exact sums it is `Σ (w - m) e`, larger wherever the offset moves
    /// the codes off zero (Q4_0's `-8 d`, Q6_K's `-32 d s`, every minimum). At 16 bits the
    /// difference is below f32's; at 8 bits it is not (measured: 1.2% perplexity on Qwen).
    const EXACT_SUMS: bool;
    fn from_rounded(v: f32) -> Self;
    fn position(e: usize) -> usize;
}

impl Code for i16 {
    const MAX: f32 = 32767.0;
    const EXACT_SUMS: bool = true;
    fn from_rounded(v: f32) -> Self {
        v as i16
    }
    fn position(e: usize) -> usize {
        i16_position(e)
    }
}

impl Code for i8 {
    const MAX: f32 = 127.0;
    const EXACT_SUMS: bool = false;
    fn from_rounded(v: f32) -> Self {
        v as i8
    }
    fn position(e: usize) -> usize {
        e
    }
}

/// Where element `e` of a block sits among a block's i16 input codes: the even elements of
/// each half of the block, then the odd ones (`0 2 .. 14, 16 18 .. 30, 1 3 .. 15, 17 .. 31`).
/// That is the order in which simd128 unpacks a block's weights from 16-bit lanes with shifts
/// and masks alone (a lane holds two bytes: elements `2i` and `2i + 1`, and for 4 bits also
/// `2i + 16` and `2i + 17`), so the inputs are permuted once instead of every weight block.
#[inline(always)]
pub(crate) const fn i16_position(e: usize) -> usize {
    (e & 1) * 16 + (e >> 4) * 8 + ((e & 15) >> 1)
}

/// `v` (|v| < 2^22) rounded to the nearest integer, ties to even: adding 1.5 · 2^23 leaves no
/// fraction bits, so the addition rounds as f32 does. `f32::round_ties_even` is a libm call
/// (`rintf`) on x86-64's baseline, one per input.
#[inline(always)]
pub(super) fn round_ties_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Inputs `[m, stride]` quantized per block to codes `C`: the codes (in [`Code::position`]
/// order), and per block the scale and the f32 sum, `[m, blocks]`.
pub(super) struct CodeBlocks<C> {
    pub(super) codes: Vec<C>,
    pub(super) scale: Vec<f32>,
    pub(super) sum: Vec<f32>,
    /// The sums of each block's halves (elements 0..16 and 16..32), `[m, 2 blocks]`: the
    /// offsets of K-quant blocks differ by half.
    pub(super) half_sum: Vec<f32>,
}

impl<C: Code> CodeBlocks<C> {
    const fn new() -> Self {
        Self { codes: Vec::new(), scale: Vec::new(), sum: Vec::new(), half_sum: Vec::new() }
    }

    /// Quantizes `x` into these buffers (reused: a decode step makes some 120 calls). Every
    /// level quantizes with this one loop, so that they all multiply the same codes.
    pub(super) fn quantize(&mut self, x: &[f32]) {
        let blocks = x.len() / BLOCK;
        for (v, n) in [(&mut self.scale, blocks), (&mut self.sum, blocks), (&mut self.half_sum, 2 * blocks)] {
            v.clear();
            v.resize(n, 0.0);
        }
        self.codes.clear();
        self.codes.resize(x.len(), C::default());
        for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
            // A comparison, not `f32::max` (a libm call in wasm); a NaN fails every comparison
            // and is caught by the sum below.
            let max = xb.iter().fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            self.sum[b] = xb.iter().sum();
            self.half_sum[2 * b] = xb[..16].iter().sum();
            self.half_sum[2 * b + 1] = xb[16..].iter().sum();
            if !(max.is_finite() && self.sum[b].is_finite()) {
                // A NaN or infinite input poisons the rows it meets, as in f32.
                self.scale[b] = f32::NAN;
            } else if max > 0.0 {
                let inv = C::MAX / max;
                let scale = max / C::MAX;
                self.scale[b] = scale;
                let codes = &mut self.codes[b * BLOCK..][..BLOCK];
                for (e, v) in xb.iter().enumerate() {
                    // Within ±MAX (the largest is `max · inv`, within an ulp of MAX).
                    codes[C::position(e)] = C::from_rounded(round_ties_even(v * inv));
                }
                if !C::EXACT_SUMS {
                    // Integer sums (exact: at most 32 · 32767), scaled once.
                    let half = |h: usize| (16 * h..16 * h + 16).map(|e| codes[C::position(e)].into()).sum::<i32>();
                    let (lo, hi) = (half(0), half(1));
                    self.sum[b] = (lo + hi) as f32 * scale;
                    self.half_sum[2 * b] = lo as f32 * scale;
                    self.half_sum[2 * b + 1] = hi as f32 * scale;
                }
            }
        }
    }

    /// One token tile's share: tokens `t0..t0 + t` of `stride` elements and `blocks` blocks.
    pub(super) fn tile(&self, t0: usize, t: usize, stride: usize, blocks: usize) -> Quantized<'_, C> {
        Quantized {
            codes: &self.codes[t0 * stride..(t0 + t) * stride],
            scale: &self.scale[t0 * blocks..(t0 + t) * blocks],
            sum: &self.sum[t0 * blocks..(t0 + t) * blocks],
            half_sum: &self.half_sum[2 * t0 * blocks..2 * (t0 + t) * blocks],
        }
    }
}

thread_local! {
    /// The calling thread's quantized inputs, which its tasks on the pool read.
    pub(super) static I16_INPUTS: std::cell::RefCell<CodeBlocks<i16>> = const { std::cell::RefCell::new(CodeBlocks::new()) };
    pub(super) static I8_INPUTS: std::cell::RefCell<CodeBlocks<i8>> = const { std::cell::RefCell::new(CodeBlocks::new()) };
}

/// A token tile's quantized inputs: codes `[t, stride]`, scales and sums `[t, blocks]`, half
/// sums `[t, 2 blocks]`.
#[derive(Clone, Copy)]
pub(super) struct Quantized<'a, C> {
    pub(super) codes: &'a [C],
    pub(super) scale: &'a [f32],
    pub(super) sum: &'a [f32],
    pub(super) half_sum: &'a [f32],
}

impl<'a, C> Quantized<'a, C> {
    /// These inputs, checked to hold what a kernel reads for `t` tokens and `group` of `w`:
    /// the SIMD kernels index by pointer after this.
    pub(super) fn checked(self, w: &QuantRows, group: usize, t: usize, stride: usize) -> Self {
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        let Self { codes, scale, sum, half_sum } = self;
        assert!(codes.len() >= t * stride && scale.len() >= t * blocks && sum.len() >= t * blocks);
        assert!(w.params.len() >= (group + 1) * blocks * GROUP && w.codes.len() >= (group + 1) * blocks * GROUP * wpb);
        assert!(w.supers.len() >= (group + 1) * w.supers_per_row() * GROUP && half_sum.len() >= 2 * t * blocks);
        self
    }
}

/// A whole matrix input as the tiles take it: f32, or quantized once for every tile.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    F32(&'a [f32]),
    I16(&'a CodeBlocks<i16>),
    I8(&'a CodeBlocks<i8>),
}

impl<'a> Source<'a> {
    /// Tokens `t0..t0 + t` of rows `stride` long (`blocks` blocks).
    pub(super) fn tile(self, t0: usize, t: usize, stride: usize, blocks: usize) -> TileInputs<'a> {
        match self {
            Source::F32(x) => TileInputs::F32(&x[t0 * stride..(t0 + t) * stride]),
            Source::I16(q) => TileInputs::I16(q.tile(t0, t, stride, blocks)),
            Source::I8(q) => TileInputs::I8(q.tile(t0, t, stride, blocks)),
        }
    }
}

/// One token tile's inputs, as its level takes them.
#[derive(Clone, Copy)]
pub(super) enum TileInputs<'a> {
    F32(&'a [f32]),
    I16(Quantized<'a, i16>),
    I8(Quantized<'a, i8>),
}

impl<'a> TileInputs<'a> {
    /// The i16 inputs, checked to hold what a kernel reads for `t` tokens and `group` of `w`:
    /// the SIMD kernels index by pointer after this.
    pub(super) fn i16_for(self, w: &QuantRows, group: usize, t: usize, stride: usize) -> Quantized<'a, i16> {
        let TileInputs::I16(q) = self else { unreachable!("a kernel of i16 inputs") };
        q.checked(w, group, t, stride)
    }

    /// The i8 inputs, checked as [`Self::i16_for`] checks.
    pub(super) fn i8_for(self, w: &QuantRows, group: usize, t: usize, stride: usize) -> Quantized<'a, i8> {
        let TileInputs::I8(q) = self else { unreachable!("a kernel of i8 inputs") };
        q.checked(w, group, t, stride)
    }
}
