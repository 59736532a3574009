use super::*;
use crate::config::RopeScaling;

/// A byte budget counts sliding-window layers at the rows they keep: Gemma 3 270M's shapes
/// (18 layers, one KV head of 256, a 512-token window in 15 of them) fit 2,309 slots in
/// 36 MiB (3 x 2,309 + 15 x 767 rows of 2 KiB), where a row per slot in every layer would
/// give 1,024; a plain model and a policy that cannot window keep the plain division.
#[test]
fn a_byte_budget_counts_windowed_layers_at_their_rows() {
    let gemma = ModelConfig {
        arch: crate::config::Architecture::GEMMA3,
        vocab: 262_144,
        d_model: 640,
        n_layers: 18,
        n_heads: 4,
        n_kv_heads: 1,
        head_dim: 256,
        d_ff: 2048,
        rope_theta: 1e6,
        rope_scaling: RopeScaling::None,
        rms_eps: 1e-6,
        context_length: 32_768,
        sliding_window: Some(512),
        rope_theta_local: 1e4,
        global_layers: None,
    };
    let budget = KvOptions { capacity_bytes: Some(36 << 20), ..KvOptions::default() };
    let capacity = budget.resolve_capacity(&gemma).unwrap();
    assert_eq!(capacity, 2309);
    let rows = |c: usize| 3 * c + 15 * window_rows(&gemma, c, EvictionPolicy::SinksWindow, 4, 0).unwrap();
    assert!(rows(capacity) * 2048 <= 36 << 20 && rows(capacity + 1) * 2048 > 36 << 20);
    // Heavy hitters with a recent span shorter than the window keep a row per slot.
    let short = KvOptions { policy: EvictionPolicy::HeavyHitters, recent: Some(100), ..budget.clone() };
    assert_eq!(short.resolve_capacity(&gemma).unwrap(), (36 << 20) / KvCache::bytes_per_token(&gemma));
    // Absurd budgets and counts are refused, not wrapped.
    for policy in [EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters] {
        let huge = KvOptions {
            capacity: None,
            capacity_bytes: Some(usize::MAX),
            policy,
            sinks: usize::MAX,
            recent: Some(usize::MAX),
        };
        assert!(matches!(huge.resolve_capacity(&gemma), Err(Error::BadOptions(_))));
    }
    let plain = ModelConfig { arch: crate::config::Architecture::LLAMA, sliding_window: None, ..gemma };
    assert_eq!(budget.resolve_capacity(&plain).unwrap(), (36 << 20) / KvCache::bytes_per_token(&plain));
}

/// The attention each slot receives, summed over heads and queries, is the same however the
/// queries are blocked, and equals a plain causal softmax computed on the host.
#[test]
fn observed_attention_is_blocked_exactly() {
    let device = Device::flex();
    let c = ModelConfig {
        arch: crate::config::Architecture::LLAMA,
        vocab: 16,
        d_model: 32,
        n_layers: 1,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        d_ff: 8,
        rope_theta: 1e4,
        rope_scaling: RopeScaling::None,
        rms_eps: 1e-5,
        context_length: 64,
        sliding_window: None,
        rope_theta_local: 1e4,
        global_layers: None,
    };
    let heads = Heads { n_heads: 4, n_kv_heads: 2, head_dim: 8 };
    let kv = KvOptions { capacity: Some(40), policy: EvictionPolicy::HeavyHitters, ..KvOptions::default() };
    let (slot, m, seen) = (14, 6, 20);
    let mut x = 0.37f32;
    let mut next = move || {
        x = (x * 9301.0 + 49297.0) % 233280.0;
        x / 233280.0 - 0.5
    };
    let keys: Vec<f32> = (0..2 * 40 * 8).map(|_| next()).collect();
    let queries: Vec<f32> = (0..m * 32).map(|_| next()).collect();
    let q = Tensor::<2>::from_data(TensorData::new(queries.clone(), [m, 32]), &device);

    let mut want = vec![0.0f32; seen];
    for t in 0..m {
        for h in 0..4 {
            let kvh = h / 2;
            let qh = &queries[t * 32 + h * 8..][..8];
            let logits: Vec<f32> = (0..=slot + t)
                .map(|s| {
                    qh.iter().zip(&keys[(kvh * 40 + s) * 8..][..8]).map(|(a, b)| a * b).sum::<f32>() / 8f32.sqrt()
                })
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            for (s, l) in logits.iter().enumerate() {
                want[s] += (l - max).exp() / sum;
            }
        }
    }
    for block in [SCORE_ELEMENTS, 4 * seen * 2, 1] {
        let mut cache = KvCache::new(&c, &kv, &device).unwrap();
        cache.layers[0].k = Tensor::from_data(TensorData::new(keys.clone(), [2, 40, 8]), &device);
        cache.observe_attention_in_blocks(0, &q, heads, slot, block);
        let got = cache.scores.clone().unwrap().into_data().try_into_vec_as::<f32>().unwrap();
        for s in 0..40 {
            let w = if s < seen { want[s] } else { 0.0 };
            assert!((got[s] - w).abs() < 1e-5, "block {block}, slot {s}: {} vs {w}", got[s]);
        }
    }
}
