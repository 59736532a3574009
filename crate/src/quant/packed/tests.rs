use super::*;

/// Whole blocks (whole super-blocks of a K-quant) keep their codes and scales; a cut that
/// splits blocks quantizes the kept values again into the same kind, each within half a
/// step of its value before.
#[test]
fn column_cuts_copy_whole_blocks_and_requantize_split_ones() {
    for (kind, cols, whole) in [
        (FloatQuant::Q4_1, 96, (0..32).chain(64..96).collect::<Vec<_>>()),
        (FloatQuant::Q8_0, 96, (32..96).collect()),
        (FloatQuant::Q4_K, 512, (256..512).collect()),
    ] {
        let data: Vec<f32> = (0..2 * cols).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.07).collect();
        let p = PackedMatrix::quantize_as(kind, &data, 2, cols).unwrap();
        let values = |keep: &[usize]| -> Vec<f32> {
            (0..2).flat_map(|r| keep.iter().map(move |&c| (r, c))).map(|(r, c)| p.get(r, c)).collect()
        };
        let w = p.select_cols(&whole).unwrap();
        assert_eq!((w.cols, w.dequantize()), (whole.len(), values(&whole)), "{kind:?}");
        assert_eq!(w.codes.len() * cols, p.codes.len() * whole.len(), "{kind:?}: codes copied, not grown");

        let split: Vec<usize> = (0..cols).filter(|c| c % 3 != 0).collect();
        let s = p.select_cols(&split).unwrap();
        let kept = values(&split);
        assert_eq!(s, PackedMatrix::quantize_as(kind, &kept, 2, split.len()).unwrap(), "{kind:?}");
        let range = kept.iter().fold(0.0f32, |m, v| m.max(v.abs())) * 2.0;
        let step = range / if kind.format() == QuantFormat::Q4 { 15.0 } else { 254.0 };
        for (a, b) in s.dequantize().iter().zip(&kept) {
            assert!((a - b).abs() <= step, "{kind:?}: {a} for {b}");
        }
    }
    let f = PackedMatrix::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
    assert_eq!(f.select_cols(&[0, 2]).unwrap().dequantize(), vec![1.0, 3.0, 4.0, 6.0]);
}

#[test]
fn gguf_blocks_repack_bit_exact() {
    let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.07).collect();
    for (dtype, bytes) in [
        (GgmlType::Q4_0, x.chunks(32).flat_map(|c| BlockQ4_0::quantize(c).to_bytes()).collect::<Vec<u8>>()),
        (GgmlType::Q4_1, x.chunks(32).flat_map(|c| BlockQ4_1::quantize(c).to_bytes()).collect()),
        (GgmlType::Q8_0, x.chunks(32).flat_map(|c| BlockQ8_0::quantize(c).to_bytes()).collect()),
    ] {
        let packed = PackedMatrix::from_gguf("t", dtype, &bytes, 2, 32).unwrap();
        let mut want = vec![0.0; 64];
        for (i, block) in want.chunks_mut(32).enumerate() {
            match dtype {
                GgmlType::Q4_0 => BlockQ4_0::from_bytes(&bytes[i * 18..]).dequantize(block),
                GgmlType::Q4_1 => BlockQ4_1::from_bytes(&bytes[i * 20..]).dequantize(block),
                _ => BlockQ8_0::from_bytes(&bytes[i * 34..]).dequantize(block),
            }
        }
        assert_eq!(packed.dequantize(), want, "{dtype:?}");
    }
}

/// The 5-bit formats, repacked at their width and widened to 8-bit codes, give the `gguf`
/// package's values exactly (a zero-scale block's zeros come out unsigned: `d q + m` adds
/// `m = ±0` to `+0`).
#[test]
fn five_bit_blocks_repack_to_the_gguf_packages_values() {
    for (dtype, name) in [(GgmlType::Q5_0, "Q5_0"), (GgmlType::Q5_1, "Q5_1")] {
        let (bytes, want) = crate::quant::tests::fixture(name);
        let packed = PackedMatrix::from_gguf("t", dtype, &bytes, 2, want.len() / 2).unwrap();
        assert_eq!(packed.format, QuantFormat::Q5);
        let got = packed.dequantize();
        assert_eq!(got, want, "{name}");
        assert_eq!(packed.to_q8().dequantize(), want, "{name} widened");
    }
}

/// Every K-quant, repacked, gives the `gguf` package's values exactly, and keeps them through
/// widening, fusing, interleaving and row moves.
#[test]
fn k_quants_repack_to_the_gguf_packages_values() {
    for (dtype, name) in [
        (GgmlType::Q2_K, "Q2_K"),
        (GgmlType::Q3_K, "Q3_K"),
        (GgmlType::Q4_K, "Q4_K"),
        (GgmlType::Q5_K, "Q5_K"),
        (GgmlType::Q6_K, "Q6_K"),
    ] {
        let (bytes, want) = crate::quant::tests::fixture(name);
        let packed = PackedMatrix::from_gguf("t", dtype, &bytes, 3, 256).unwrap();
        assert_eq!((packed.scales, packed.supers.len()), (Scales::Super, 3), "{name}");
        let got = packed.dequantize();
        assert_eq!(got, want, "{name}");
        assert_eq!(packed.to_q8().dequantize(), want, "{name} widened");
        let rows = |r: usize| want[r * 256..(r + 1) * 256].to_vec();
        let fused = PackedMatrix::concat_rows(&[&packed, &packed.row_range(1..2)]);
        assert_eq!(fused.dequantize(), [want.clone(), rows(1)].concat(), "{name} fused");
        let inter = PackedMatrix::interleave_rows(&packed, &packed.reorder_rows(|r| 2 - r));
        assert_eq!(inter.dequantize(), [rows(0), rows(2), rows(1), rows(1), rows(2), rows(0)].concat());
        assert!(PackedMatrix::from_gguf("t", dtype, &bytes[1..], 3, 256).is_err(), "{name}: short data");
        let legacy = PackedMatrix::quantize(QuantFormat::Q4, &want, 3, 256);
        assert!(!PackedMatrix::fusable(&[&packed, &legacy]));
    }
}

/// GGUF F16 and BF16 data keep every bit: each weight is `half`'s widening of its own bits
/// (subnormals, signed zeros, infinities), ragged rows padded, fusions of one format only.
#[test]
fn f16_and_bf16_matrices_keep_every_value() {
    let (rows, cols) = (3, 45);
    let bits: Vec<u16> = (0..rows * cols).map(|i| (i as u16).wrapping_mul(40_503) ^ 0x5a5a).collect();
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    for (dtype, widen) in [
        (GgmlType::F16, (|b| f16::from_bits(b).to_f32()) as fn(u16) -> f32),
        (GgmlType::BF16, |b| half::bf16::from_bits(b).to_f32()),
    ] {
        let p = PackedMatrix::from_gguf("t", dtype, &bytes, rows, cols).unwrap();
        assert!(p.format.is_float() && p.params.is_empty() && p.codes.len() == rows * 2 * 16);
        // A NaN stays a NaN (its quiet bit aside: the `gguf` package's BF16 is a plain shift).
        let key = |v: f32| if v.is_nan() { u32::MAX } else { v.to_bits() };
        let want: Vec<u32> = bits.iter().map(|&b| key(widen(b))).collect();
        let got: Vec<u32> = p.dequantize().into_iter().map(key).collect();
        assert_eq!(got, want, "{dtype:?}");
        let fused = PackedMatrix::concat_rows(&[&p, &p.row_range(1..2)]);
        assert_eq!(fused.dequantize()[rows * cols..].len(), cols);
        assert_eq!(fused.get(3, 7).to_bits(), p.get(1, 7).to_bits());
        let inter = PackedMatrix::interleave_rows(&p, &p.reorder_rows(|r| 2 - r));
        assert_eq!(inter.get(1, 44).to_bits(), p.get(2, 44).to_bits());
        let q8 = PackedMatrix::quantize(QuantFormat::Q8, &p.dequantize(), rows, cols);
        assert!(!PackedMatrix::fusable(&[&p, &q8]) && !PackedMatrix::fusable(&[&q8, &p]));
        assert!(PackedMatrix::from_gguf("t", dtype, &bytes[2..], rows, cols).is_err(), "short data");
    }
    let (a, b) = (
        PackedMatrix::from_halves(QuantFormat::F16, &bits, rows, cols),
        PackedMatrix::from_halves(QuantFormat::Bf16, &bits, rows, cols),
    );
    assert!(!PackedMatrix::fusable(&[&a, &b]));
}

/// GGUF F32 matrices keep every bit (NaN payloads, subnormals, signed zeros), one code a
/// word, ragged rows padded; they fuse only with F32.
#[test]
fn f32_matrices_keep_every_bit() {
    let (rows, cols) = (3, 45);
    let bits: Vec<u32> = (0..(rows * cols) as u32).map(|i| i.wrapping_mul(2_654_435_761) ^ 0x7fc0_0001).collect();
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let p = PackedMatrix::from_gguf("t", GgmlType::F32, &bytes, rows, cols).unwrap();
    assert_eq!(
        (p.format, p.codes.len(), p.params.len(), p.device_bytes()),
        (QuantFormat::F32, rows * 64, 0, rows * 256)
    );
    let got: Vec<u32> = p.dequantize().iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, bits);
    let fused = PackedMatrix::concat_rows(&[&p, &p.row_range(2..3)]);
    assert_eq!(fused.get(3, 44).to_bits(), bits[2 * cols + 44]);
    let half = PackedMatrix::from_halves(QuantFormat::F16, &vec![0; rows * cols], rows, cols);
    let q8 = PackedMatrix::quantize(QuantFormat::Q8, &vec![0.5; rows * cols], rows, cols);
    assert!(!PackedMatrix::fusable(&[&p, &half]) && !PackedMatrix::fusable(&[&q8, &p]));
    assert!(PackedMatrix::from_gguf("t", GgmlType::F32, &bytes[4..], rows, cols).is_err(), "short data");
}

#[test]
fn promotion_concatenation_and_interleaving_keep_every_value() {
    let x: Vec<f32> = (0..3 * 40).map(|i| (i as f32 * 0.37).cos()).collect();
    let a = PackedMatrix::quantize(QuantFormat::Q4, &x, 3, 40);
    let b = PackedMatrix::quantize(QuantFormat::Q8, &x, 3, 40);
    assert_eq!(a.to_q8().dequantize(), a.dequantize());
    let (da, db) = (a.dequantize(), b.dequantize());
    assert_eq!(PackedMatrix::concat_rows(&[&a, &b]).dequantize(), [da.clone(), db.clone()].concat());
    let inter = PackedMatrix::interleave_rows(&a, &b).dequantize();
    for r in 0..3 {
        assert_eq!(inter[2 * r * 40..(2 * r + 1) * 40], da[r * 40..(r + 1) * 40]);
        assert_eq!(inter[(2 * r + 1) * 40..(2 * r + 2) * 40], db[r * 40..(r + 1) * 40]);
    }
}

#[test]
fn quantizing_a_ragged_row_stays_within_a_step() {
    let cols = 45;
    let x: Vec<f32> = (0..2 * cols).map(|i| (i as f32 * 0.61).sin()).collect();
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        let p = PackedMatrix::quantize(format, &x, 2, cols);
        assert_eq!(p.params.len(), 4);
        let step = if format == QuantFormat::Q4 { 2.0 / 15.0 } else { 1.0 / 127.0 };
        for (a, b) in x.iter().zip(p.dequantize()) {
            assert!((a - b).abs() <= step * 0.51 + 1e-3, "{format:?}: {a} vs {b}");
        }
    }
}

/// A Q6_K matrix whose offset `-32 d` would overflow f16 stays signed 8-bit codes, with every
/// value the block's own; its usual scales give 6-bit codes.
#[test]
fn q6_k_past_the_offsets_range_stays_8_bit() {
    let (mut bytes, want) = crate::quant::tests::fixture("Q6_K");
    assert_eq!(PackedMatrix::from_gguf("t", GgmlType::Q6_K, &bytes, 3, 256).unwrap().format, QuantFormat::Q6);
    let d = half::f16::from_f32(4096.0).to_le_bytes();
    bytes[208 + 210..210 + 210].copy_from_slice(&d);
    let packed = PackedMatrix::from_gguf("t", GgmlType::Q6_K, &bytes, 3, 256).unwrap();
    assert_eq!(packed.format, QuantFormat::Q8);
    let mut block = vec![0.0f32; 256];
    crate::quant::BlockQ6K::from_bytes(&bytes[210..420]).dequantize(&mut block);
    let got = packed.dequantize();
    assert_eq!(&got[256..512], &block[..]);
    assert_eq!(&got[..256], &want[..256]);
}
