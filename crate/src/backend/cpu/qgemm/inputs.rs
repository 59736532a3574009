//! The inputs as a level takes them: f32 as they are (x86), or each block of 32 quantized to
//! i16 with its scale and sums (wasm, NEON, and their scalar reference).

use super::*;

/// How a level's kernels take the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// As they are, in f32.
    F32,
    /// Each block of 32 as i16 codes `x̂` with one scale `s = max |x| / 32767` (`x ≈ s x̂`,
    /// rounded to nearest), beside the block's exact f32 sum (for the offsets `m`).
    I16,
}

impl Inputs {
    /// The arithmetic `isa`'s kernels do on integer codes; the scalar level does either (it is
    /// both references).
    pub fn of(isa: Isa) -> Self {
        match isa {
            Isa::Simd128 | Isa::Neon => Inputs::I16,
            Isa::Scalar | Isa::Avx2 | Isa::Avx512 => Inputs::F32,
        }
    }

    /// The arithmetic `isa`'s kernels do on a matrix of `format`: float codes always meet f32
    /// inputs (there is no integer code to take a dot product with).
    pub fn for_matrix(isa: Isa, format: QuantFormat) -> Self {
        if format.is_float() { Inputs::F32 } else { Self::of(isa) }
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

/// Inputs `[m, stride]` quantized per block for [`Inputs::I16`]: the codes (in
/// [`i16_position`] order), and per block the scale and the f32 sum, `[m, blocks]`.
pub(super) struct I16Blocks {
    pub(super) codes: Vec<i16>,
    pub(super) scale: Vec<f32>,
    pub(super) sum: Vec<f32>,
    /// The sums of each block's halves (elements 0..16 and 16..32), `[m, 2 blocks]`: the
    /// offsets of K-quant blocks differ by half.
    pub(super) half_sum: Vec<f32>,
}

impl I16Blocks {
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
        self.codes.resize(x.len(), 0);
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
                let inv = 32767.0 / max;
                self.scale[b] = max / 32767.0;
                let codes = &mut self.codes[b * BLOCK..][..BLOCK];
                for (e, v) in xb.iter().enumerate() {
                    // Within ±32767 (the largest is `max · inv`, within an ulp of 32767).
                    codes[i16_position(e)] = (v * inv).round_ties_even() as i16;
                }
            }
        }
    }
}

thread_local! {
    /// The calling thread's quantized inputs, which its tasks on the pool read.
    pub(super) static I16_INPUTS: std::cell::RefCell<I16Blocks> = const { std::cell::RefCell::new(I16Blocks::new()) };
}

/// One token tile's inputs, as its level takes them.
#[derive(Clone, Copy)]
pub(super) enum TileInputs<'a> {
    F32(&'a [f32]),
    /// Codes `[t, stride]`, scales and sums `[t, blocks]`, half sums `[t, 2 blocks]`.
    I16 {
        codes: &'a [i16],
        scale: &'a [f32],
        sum: &'a [f32],
        half_sum: &'a [f32],
    },
}

impl<'a> TileInputs<'a> {
    /// The codes, scales and sums of i16 inputs, checked to hold what a kernel reads for
    /// `t` tokens and `group` of `w`: the SIMD kernels index by pointer after this.
    #[allow(clippy::type_complexity)]
    pub(super) fn i16_for(
        self,
        w: &QuantRows,
        group: usize,
        t: usize,
        stride: usize,
    ) -> (&'a [i16], &'a [f32], &'a [f32], &'a [f32]) {
        let TileInputs::I16 { codes, scale, sum, half_sum } = self else { unreachable!("a kernel of i16 inputs") };
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        assert!(codes.len() >= t * stride && scale.len() >= t * blocks && sum.len() >= t * blocks);
        assert!(w.params.len() >= (group + 1) * blocks * GROUP && w.codes.len() >= (group + 1) * blocks * GROUP * wpb);
        assert!(w.supers.len() >= (group + 1) * w.supers_per_row() * GROUP && half_sum.len() >= 2 * t * blocks);
        (codes, scale, sum, half_sum)
    }
}
