use super::*;

fn smollm2() -> RawConfig {
    RawConfig {
        vocab_size: Some(49152),
        hidden_size: Some(576),
        num_hidden_layers: Some(30),
        num_attention_heads: Some(9),
        num_key_value_heads: Some(3),
        intermediate_size: Some(1536),
        rope_theta: Some(100000.0),
        rms_norm_eps: Some(1e-5),
        max_position_embeddings: Some(8192),
        ..Default::default()
    }
}

/// `layer_types` states each layer's attention: a Gemma 3 keeps the kinds it is told (and
/// writes them back), a model without windows may list every layer as full, a wrong count
/// or a window on a family without one is refused.
#[test]
fn layer_types_state_each_layers_attention() {
    let types = |kinds: &[&str]| Some(kinds.iter().map(|k| k.to_string()).collect());
    let gemma = RawConfig {
        model_type: Some("gemma3_text".into()),
        num_hidden_layers: Some(3),
        sliding_window: Some(16),
        layer_types: types(&["sliding_attention", "full_attention", "sliding_attention"]),
        ..smollm2()
    };
    let c = gemma.resolve().unwrap();
    assert_eq!(c.global_layers, Some(vec![1]));
    assert_eq!([0, 1, 2].map(|l| c.layer_attention(l).window), [Some(16), None, Some(16)]);
    let back = RawConfig::from_hf_json(c.to_hf_json(true).to_string().as_bytes()).unwrap().resolve().unwrap();
    assert_eq!(back, c);
    let by_index = RawConfig { layer_types: None, ..gemma.clone() }.resolve().unwrap();
    assert_eq!([0, 1, 2].map(|l| by_index.layer_attention(l).window), [Some(16); 3]);
    let plain = RawConfig { num_hidden_layers: Some(2), layer_types: types(&["full_attention"; 2]), ..smollm2() };
    assert_eq!(plain.resolve().unwrap().global_layers, None);
    for bad in [
        RawConfig { layer_types: types(&["full_attention"]), ..gemma.clone() },
        RawConfig { num_hidden_layers: Some(1), layer_types: types(&["sliding_attention"]), ..smollm2() },
    ] {
        assert!(bad.resolve().is_err(), "{:?}", bad.layer_types);
    }
}

#[test]
fn smollm2_resolves_with_derived_dims() {
    let c = smollm2().resolve().unwrap();
    assert_eq!((c.head_dim(), c.group_size(), c.kv_dim()), (64, 3, 192));
}

/// Phi-3.5-mini's `config.json` form of LongRoPE (factors in `rope_scaling`, the original
/// context beside it): the short factors within 4096 positions, the long ones past them, the
/// attention factor `sqrt(1 + ln 32 / ln 4096)`; and the record's own form reads back equal.
#[test]
fn longrope_reads_phi3s_config_and_chooses_by_context() {
    let (short, long): (Vec<f32>, Vec<f32>) = ((0..48).map(|i| 1.0 + i as f32 * 0.01).collect(), vec![5.0; 48]);
    let raw = RawConfig {
        hidden_size: Some(3072),
        num_attention_heads: Some(32),
        num_key_value_heads: Some(32),
        max_position_embeddings: Some(131_072),
        original_max_position_embeddings: Some(4096),
        rope_theta: Some(10000.0),
        rope_scaling: Some(serde_json::json!({"type": "longrope", "short_factor": short, "long_factor": long})),
        ..smollm2()
    };
    let c = raw.resolve().unwrap();
    let RopeScaling::LongRope { attn_factor, original_context, .. } = &c.rope_scaling else {
        panic!("{:?}", c.rope_scaling)
    };
    assert_eq!(*original_context, 4096);
    assert!((*attn_factor as f64 - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-6, "{attn_factor}");
    let base = |i: usize| 10000f64.powf(-2.0 * i as f64 / 96.0);
    let (within, past) = (c.rope_frequencies(false, 4096), c.rope_frequencies(false, 4097));
    assert_eq!(within[3], base(3) / short[3] as f64);
    assert_eq!(past[3], base(3) / 5.0);
    let back = RopeScaling::from_hf_json(&c.rope_scaling.to_hf_json(), None, None).unwrap();
    assert_eq!(back, c.rope_scaling);
    // Factors of the wrong length are refused.
    let bad = RawConfig {
        rope_scaling: Some(serde_json::json!({"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]})),
        ..raw
    };
    assert!(bad.resolve().is_err());
}

/// Llama 3.1's published scaling (factor 8, low 1, high 4, original context 8192) keeps the
/// fastest frequencies, divides the slowest by 8 and blends in between, as Meta's
/// reference `apply_scaling` does.
#[test]
fn llama3_scaling_matches_the_reference_formula() {
    let raw = RawConfig {
        hidden_size: Some(4096),
        num_attention_heads: Some(32),
        num_key_value_heads: Some(8),
        rope_theta: Some(500000.0),
        rope_scaling: Some(serde_json::json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192
        })),
        ..smollm2()
    };
    let c = raw.resolve().unwrap();
    let f = c.rope_frequencies(false, 2048);
    let base = |i: usize| 500000f64.powf(-2.0 * i as f64 / 128.0);
    assert_eq!(f[0], base(0));
    assert!((f[63] - base(63) / 8.0).abs() < 1e-18);
    // A frequency in the blend: wavelength between 8192/4 and 8192.
    let i = (0..64).find(|&i| (2048.0..8192.0).contains(&(2.0 * std::f64::consts::PI / base(i)))).unwrap();
    let smooth = (8192.0 / (2.0 * std::f64::consts::PI / base(i)) - 1.0) / 3.0;
    assert!((f[i] - base(i) * ((1.0 - smooth) / 8.0 + smooth)).abs() < 1e-15);
    // It survives the trip through config.json (what .bpk records store).
    let back = RawConfig::from_hf_json(c.to_hf_json(true).to_string().as_bytes()).unwrap().resolve().unwrap();
    assert_eq!(back, c);
}

#[test]
fn a_stated_head_dim_sets_the_query_width() {
    let c = RawConfig { head_dim: Some(128), ..smollm2() }.resolve().unwrap();
    assert_eq!((c.head_dim(), c.q_dim(), c.kv_dim(), c.d_model), (128, 9 * 128, 3 * 128, 576));
}

#[test]
fn impossible_values_are_refused() {
    let cases = [
        RawConfig { hidden_size: Some(0), ..smollm2() },
        RawConfig { hidden_size: Some(u64::MAX), ..smollm2() },
        RawConfig { num_attention_heads: Some(7), ..smollm2() },
        RawConfig { num_key_value_heads: Some(2), ..smollm2() },
        RawConfig { vocab_size: None, ..smollm2() },
        RawConfig { rope_theta: Some(f64::NAN), ..smollm2() },
        RawConfig { rms_norm_eps: Some(-1.0), ..smollm2() },
        RawConfig { head_dim: Some(63), ..smollm2() },
        RawConfig { head_dim: Some(0), ..smollm2() },
        RawConfig { rope_dims: Some(48), ..smollm2() },
        RawConfig { partial_rotary_factor: Some(0.75), ..smollm2() },
        RawConfig { hidden_size: Some(577), ..smollm2() },
        RawConfig { rope_scaling: Some(serde_json::json!({"type": "yarn"})), ..smollm2() },
        RawConfig { rope_scaling: Some(serde_json::json!({"rope_type": "dynamic", "factor": 2.0})), ..smollm2() },
        RawConfig { rope_scaling: Some(serde_json::json!({"rope_type": "linear"})), ..smollm2() },
        RawConfig {
            rope_scaling: Some(serde_json::json!({"rope_type": "hearth-factors", "factors": [1.0]})),
            ..smollm2()
        },
    ];
    for raw in cases {
        assert!(matches!(raw.resolve(), Err(Error::Config(_))), "{raw:?}");
    }
}
