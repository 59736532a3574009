//! Constrained output (JSON schemas, Lark grammars, regular expressions), logit bias and
//! log-probabilities, on tiny random models (every byte is a token of their vocabulary, so any
//! grammar can be written) and on SmolLM2 and Qwen2.5-Coder-0.5B.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use hearth::{
    Control, DeviceKind, Engine, Error, FinishReason, GenerateOptions, Generation, Grammar, KvOptions, SamplerOptions,
    Session, SpeculativeOptions, WeightFormat, generate_batch,
};
use serde_json::{Value, json};

/// Hears nothing, never aborts.
struct Quiet;

impl hearth::Listener for Quiet {
    fn on_text(&mut self, _: &str, _: u32) -> hearth::Result<Control> {
        Ok(Control::Continue)
    }
}

fn sampled(seed: u64, grammar: Grammar) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 48,
        sampler: SamplerOptions { temperature: 1.0, seed: Some(seed), ..SamplerOptions::default() },
        grammar: Some(grammar),
        ..GenerateOptions::default()
    }
}

fn session(engine: &Arc<Engine>) -> Session {
    engine.session(&KvOptions::default()).unwrap()
}

/// `[0-9]{2,4}-(yes|no)`, checked by hand.
fn matches_code(text: &str) -> bool {
    let Some((digits, word)) = text.split_once('-') else { return false };
    (2..=4).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && (word == "yes" || word == "no")
}

#[test]
fn sampled_replies_match_a_regex() {
    let engine = engine(3, DeviceKind::Cpu, WeightFormat::F32);
    let prompt = tokens(8, 1);
    for seed in 0..6 {
        let mut s = session(&engine);
        let g = generate(&mut s, &prompt, &sampled(seed, Grammar::Regex { regex: "[0-9]{2,4}-(yes|no)".into() }));
        assert_eq!(g.finish_reason, FinishReason::Stop, "seed {seed}: {g:?}");
        assert!(matches_code(&g.text), "seed {seed}: {:?}", g.text);
    }
}

/// A small schema validator for the keywords these tests use.
fn valid(v: &Value, schema: &Value) -> bool {
    if let Some(options) = schema["anyOf"].as_array() {
        return options.iter().any(|s| valid(v, s));
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.contains(v);
    }
    let number_ok =
        |x: f64| schema["minimum"].as_f64().is_none_or(|m| x >= m) && schema["maximum"].as_f64().is_none_or(|m| x <= m);
    match schema["type"].as_str() {
        Some("object") => {
            let Some(o) = v.as_object() else { return false };
            let props = schema["properties"].as_object().cloned().unwrap_or_default();
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            required.iter().all(|k| o.contains_key(k.as_str().unwrap()))
                && o.iter().all(|(k, x)| match props.get(k) {
                    Some(s) => valid(x, s),
                    None => schema["additionalProperties"] != json!(false),
                })
        }
        Some("array") => {
            let Some(a) = v.as_array() else { return false };
            schema["minItems"].as_u64().is_none_or(|n| a.len() as u64 >= n)
                && schema["maxItems"].as_u64().is_none_or(|n| a.len() as u64 <= n)
                && a.iter().all(|x| valid(x, &schema["items"]))
        }
        // JSON Schema's integers are numbers without a fraction: 1.0 and -0.0 are integers too.
        Some("integer") => v.as_f64().is_some_and(|x| x.fract() == 0.0 && number_ok(x)),
        Some("number") => v.as_f64().is_some_and(number_ok),
        Some("boolean") => v.is_boolean(),
        Some("string") => v.as_str().is_some_and(|s| {
            let n = s.chars().count() as u64;
            schema["minLength"].as_u64().is_none_or(|m| n >= m)
                && schema["maxLength"].as_u64().is_none_or(|m| n <= m)
                && match schema["pattern"].as_str() {
                    // The one pattern used here: lowercase letters.
                    Some("^[a-z]+$") => !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()),
                    Some(p) => panic!("pattern {p} is not checked here"),
                    None => true,
                }
        }),
        _ => true,
    }
}

fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 1, "maxItems": 3}}, "required": ["xs"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}}, "required": ["inner"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"word": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}}, "required": ["word"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"v": {"anyOf": [{"type": "integer", "minimum": 10, "maximum": 20}, {"type": "boolean"}]}}, "required": ["v"], "additionalProperties": false}),
    ]
}

/// Every schema's replies parse and validate, sampled at temperature 1 from a random model
/// (whatever the model prefers, the mask keeps it inside the schema).
#[test]
fn sampled_replies_validate_against_json_schemas() {
    let engine = engine(5, DeviceKind::Cpu, WeightFormat::F32);
    let prompt = tokens(6, 2);
    for (i, schema) in schemas().into_iter().enumerate() {
        for seed in 0..3 {
            let mut options = sampled(seed, Grammar::JsonSchema { schema: schema.clone() });
            options.max_tokens = 120;
            let g = generate(&mut session(&engine), &prompt, &options);
            if g.finish_reason == FinishReason::Length {
                // Cut short: never presented as complete JSON (a random model may ramble in
                // a string up to the limit).
                assert!(serde_json::from_str::<Value>(&g.text).is_err(), "schema {i}: {:?}", g.text);
                continue;
            }
            assert_eq!(g.finish_reason, FinishReason::Stop, "schema {i} seed {seed}");
            let v: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("schema {i}: {e}: {:?}", g.text));
            assert!(valid(&v, &schema), "schema {i} seed {seed}: {v} does not validate");
        }
    }
}

#[test]
fn a_lark_grammar_is_followed() {
    let engine = engine(7, DeviceKind::Cpu, WeightFormat::F32);
    let grammar = "start: greeting \" \" name\ngreeting: \"hi\" | \"hello\"\nname: /[A-Z][a-z]{1,5}/\n";
    for seed in 0..4 {
        let g =
            generate(&mut session(&engine), &tokens(5, 9), &sampled(seed, Grammar::Lark { grammar: grammar.into() }));
        assert_eq!(g.finish_reason, FinishReason::Stop);
        let (greeting, name) = g.text.split_once(' ').unwrap();
        assert!(["hi", "hello"].contains(&greeting), "{:?}", g.text);
        assert!(
            name.len() >= 2 && name.len() <= 6 && name.chars().next().unwrap().is_ascii_uppercase(),
            "{:?}",
            g.text
        );
    }
}

/// Grammars that cannot compile are refused before any token, and the conversation stays.
#[test]
fn bad_grammars_are_refused_and_change_nothing() {
    let engine = engine(3, DeviceKind::Cpu, WeightFormat::F32);
    let mut s = session(&engine);
    let prompt = tokens(6, 4);
    let first = generate(&mut s, &prompt, &GenerateOptions { max_tokens: 3, ..GenerateOptions::default() });
    let len = s.kv_cache().len();
    for grammar in [
        Grammar::Regex { regex: "(unclosed".into() },
        Grammar::Lark { grammar: "start: missing_rule\n".into() },
        Grammar::JsonSchema { schema: json!({"type": 5}) },
        Grammar::JsonSchema { schema: json!([1, 2]) },
        Grammar::JsonSchema { schema: json!({"$ref": "#/definitions/nowhere"}) },
        Grammar::JsonSchema { schema: nested(1000) },
        Grammar::Regex { regex: "a".repeat(2 << 20) },
    ] {
        let options = GenerateOptions { grammar: Some(grammar.clone()), ..GenerateOptions::default() };
        let e = pollster::block_on(s.generate(&prompt, &options, |_, _| Control::Continue)).unwrap_err();
        assert!(matches!(e, Error::BadOptions(_)), "{grammar:?}: {e}");
        assert_eq!(s.kv_cache().len(), len, "{grammar:?} changed the cache");
    }
    let speculative = GenerateOptions {
        grammar: Some(Grammar::JsonObject),
        speculative: Some(SpeculativeOptions::default()),
        ..GenerateOptions::default()
    };
    assert!(matches!(speculative.validate(), Err(Error::BadOptions(_))));
    let again = generate(&mut s, &prompt, &GenerateOptions { max_tokens: 3, ..GenerateOptions::default() });
    assert_eq!(again.tokens, first.tokens);
}

/// An object schema nested `depth` levels deep.
fn nested(depth: usize) -> Value {
    let mut schema = json!({"type": "integer"});
    for _ in 0..depth {
        schema = json!({"type": "object", "properties": {"a": schema}, "required": ["a"]});
    }
    schema
}

#[test]
fn schemas_up_to_the_depth_limit_compile() {
    let engine = engine(3, DeviceKind::Cpu, WeightFormat::F32);
    let grammars = engine.grammars().unwrap();
    // `nested(n)` nests 2n + 1 levels (each object and its properties map).
    assert!(grammars.compile(&Grammar::JsonSchema { schema: nested(20) }).is_ok());
    let e = grammars.compile(&Grammar::JsonSchema { schema: nested(40) }).err().unwrap();
    assert!(e.to_string().contains("levels deep"), "{e}");
}

/// Requests of one batch each follow their own grammar.
#[test]
fn each_conversation_of_a_batch_has_its_own_grammar() {
    let engine = engine(3, DeviceKind::Cpu, WeightFormat::F32);
    let (mut a, mut b, mut c) = (session(&engine), session(&engine), session(&engine));
    let (pa, pb, pc) = (tokens(5, 1), tokens(9, 2), tokens(7, 3));
    let oa = sampled(1, Grammar::Regex { regex: "[0-9]{2,4}-(yes|no)".into() });
    let ob = sampled(2, Grammar::Regex { regex: "[a-z]{3}!".into() });
    let oc = GenerateOptions { max_tokens: 6, ..GenerateOptions::default() };
    let free = generate(&mut session(&engine), &pc, &oc);
    let (mut la, mut lb, mut lc) = (Quiet, Quiet, Quiet);
    let mut requests = vec![
        hearth::BatchRequest { session: &mut a, prompt: &pa, options: &oa, listener: &mut la },
        hearth::BatchRequest { session: &mut b, prompt: &pb, options: &ob, listener: &mut lb },
        hearth::BatchRequest { session: &mut c, prompt: &pc, options: &oc, listener: &mut lc },
    ];
    let got = pollster::block_on(generate_batch(&mut requests)).unwrap();
    assert!(matches_code(&got[0].text), "{:?}", got[0].text);
    let t = &got[1].text;
    assert!(t.len() == 4 && t.ends_with('!') && t[..3].bytes().all(|x| x.is_ascii_lowercase()), "{t:?}");
    assert_eq!(got[2].tokens, free.tokens, "the unconstrained one is as alone");
}

/// The recorded log-probabilities are the model's own: equal to teacher-forced scoring of the
/// same tokens; the greedy choice is the likeliest; recording changes no token.
#[test]
fn logprobs_equal_scoring_and_change_nothing() {
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = engine(3, device, WeightFormat::F32);
        let prompt = tokens(10, 6);
        let plain = GenerateOptions { max_tokens: 12, ignore_eos: true, ..GenerateOptions::default() };
        let recorded = GenerateOptions { logprobs: Some(5), ..plain.clone() };
        let a = generate(&mut session(&engine), &prompt, &plain);
        let b = generate(&mut session(&engine), &prompt, &recorded);
        assert_eq!(a.tokens, b.tokens, "{device:?}");
        assert!(a.logprobs.is_none());
        let lps = b.logprobs.unwrap();
        assert_eq!(lps.len(), b.tokens.len());
        let all: Vec<u32> = prompt.iter().chain(&b.tokens).copied().collect();
        let surprisal = pollster::block_on(session(&engine).surprisal(&all)).unwrap();
        for (j, lp) in lps.iter().enumerate() {
            assert_eq!(lp.token, b.tokens[j]);
            assert_eq!(lp.top_logprobs.len(), 5);
            assert_eq!(lp.top_logprobs[0].token, lp.token, "greedy takes the likeliest");
            assert!(lp.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            let want = -surprisal[prompt.len() + j];
            assert!((lp.logprob - want).abs() < 1e-4, "{device:?} token {j}: {} vs {want}", lp.logprob);
        }
    }
}

#[test]
fn logit_bias_bans_and_forces() {
    let engine = engine(3, DeviceKind::Cpu, WeightFormat::F32);
    let prompt = tokens(10, 6);
    let plain = GenerateOptions { max_tokens: 10, ignore_eos: true, ..GenerateOptions::default() };
    let a = generate(&mut session(&engine), &prompt, &plain);
    let banned = a.tokens[0];
    let mut ban = plain.clone();
    ban.sampler.logit_bias.insert(banned, -100.0);
    let b = generate(&mut session(&engine), &prompt, &ban);
    assert!(!b.tokens.contains(&banned), "{banned} in {:?}", b.tokens);
    let mut force = plain.clone();
    force.sampler.logit_bias.insert(200, 100.0);
    assert!(generate(&mut session(&engine), &prompt, &force).tokens.iter().all(|&t| t == 200));
    let mut bad = plain.clone();
    bad.sampler.logit_bias.insert(1, 101.0);
    assert!(matches!(bad.validate(), Err(Error::BadOptions(_))));
    let mut outside = plain;
    outside.sampler.logit_bias.insert(1_000_000, 1.0);
    let e = pollster::block_on(session(&engine).generate(&prompt, &outside, |_, _| Control::Continue)).unwrap_err();
    assert!(matches!(e, Error::BadOptions(_)), "{e}");
}

/// A real model from `models/`, fetched by `pkg-scripts/fetch-model.sh [name]`.
fn real(file: &str, fetch: &str) -> Arc<Engine> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(file);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run pkg-scripts/fetch-model.sh {fetch}", path.display()));
    Arc::new(Engine::from_gguf(&bytes, &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4).unwrap())
}

fn chat(engine: &Arc<Engine>, question: &str, options: &GenerateOptions) -> Generation {
    let ids = engine.encode_chat(&[hearth::Message::new("user", question)]).unwrap();
    generate(&mut session(engine), &ids, options)
}

/// On SmolLM2 and Qwen2.5-Coder-0.5B: every schema's greedy and sampled chat replies parse
/// and validate, and any-JSON-object replies are objects.
#[test]
fn real_models_reply_valid_json_under_each_schema() {
    let models =
        [("SmolLM2-135M-Instruct.Q4_1.gguf", ""), ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-0.5b")];
    for (file, fetch) in models {
        let engine = real(file, fetch);
        for (i, schema) in schemas().into_iter().enumerate() {
            for seed in [None, Some(1)] {
                let sampler = match seed {
                    None => SamplerOptions::default(),
                    Some(seed) => SamplerOptions { temperature: 0.8, seed: Some(seed), ..SamplerOptions::default() },
                };
                let options = GenerateOptions {
                    max_tokens: 80,
                    sampler,
                    grammar: Some(Grammar::JsonSchema { schema: schema.clone() }),
                    ..GenerateOptions::default()
                };
                let g = chat(&engine, "Describe a person, a color, a few small numbers or a word, as JSON.", &options);
                assert_eq!(g.finish_reason, FinishReason::Stop, "{file} schema {i}: {:?}", g.text);
                let v: Value =
                    serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("{file} schema {i}: {e}: {:?}", g.text));
                assert!(valid(&v, &schema), "{file} schema {i}: {v}");
            }
        }
        let object =
            GenerateOptions { max_tokens: 80, grammar: Some(Grammar::JsonObject), ..GenerateOptions::default() };
        let g = chat(&engine, "What is the capital of France? Answer in JSON.", &object);
        assert!(serde_json::from_str::<Value>(&g.text).unwrap().is_object(), "{file}: {:?}", g.text);
    }
}

/// What a grammar forces goes in with the token before it, in one pass: the reply still
/// follows the grammar, each forced token's log-probability is the one a step would give
/// (teacher-forced scoring of the whole reply), and the cache ends as steps would leave it,
/// also when a stop string lands among forced tokens (the next turn reuses it and matches a
/// fresh session).
#[test]
fn forced_tokens_go_in_one_pass_and_leave_the_cache_as_steps_would() {
    let regex = r#"\{"answer": "[a-z]{2,4}", "done": (true|false)\}"#;
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = engine(3, device, WeightFormat::F32);
        let prompt = tokens(9, 4);
        for stop in [vec![], vec!["done".to_string()]] {
            let mut options = sampled(5, Grammar::Regex { regex: regex.into() });
            options.logprobs = Some(3);
            options.stop = stop.clone();
            let mut s = session(&engine);
            let g = generate(&mut s, &prompt, &options);
            assert_eq!(g.finish_reason, FinishReason::Stop, "{device:?}: {:?}", g.text);
            let body = g.text.strip_prefix(r#"{"answer": ""#).unwrap_or_else(|| panic!("{:?}", g.text));
            let (word, rest) = body.split_once('"').unwrap();
            assert!((2..=4).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase()), "{:?}", g.text);
            if stop.is_empty() {
                assert!(rest == r#", "done": true}"# || rest == r#", "done": false}"#, "{:?}", g.text);
            } else {
                assert_eq!(rest, ", \"", "cut before the stop string");
            }
            // `{` is chosen, `"answer": "` and `", "done": ` are forced.
            assert!(g.stats.forced_tokens >= 8, "{device:?}: {} forced of {}", g.stats.forced_tokens, g.tokens.len());
            let all: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
            let surprisal = pollster::block_on(session(&engine).surprisal(&all)).unwrap();
            let lps = g.logprobs.as_ref().unwrap();
            assert_eq!(lps.len(), g.tokens.len());
            for (j, lp) in lps.iter().enumerate() {
                let want = -surprisal[prompt.len() + j];
                assert!((lp.logprob - want).abs() < 1e-4, "{device:?} token {j}: {} vs {want}", lp.logprob);
            }
            let next: Vec<u32> = all.iter().copied().chain(tokens(4, 9)).collect();
            let plain = GenerateOptions { max_tokens: 6, ignore_eos: true, ..GenerateOptions::default() };
            let again = generate(&mut s, &next, &plain);
            // As after steps: every token kept was fed, but one that completed a stop string.
            let fed = all.len() - usize::from(!stop.is_empty());
            assert_eq!(again.stats.reused_tokens, fed, "{device:?}");
            assert_eq!(again.tokens, generate(&mut session(&engine), &next, &plain).tokens, "{device:?} stop {stop:?}");
        }
    }
}

/// On a GPU a greedy constrained step masks on the device and reads one id back: it chooses
/// the tokens the host's mask does (the host masks when log-probabilities are recorded).
#[test]
fn the_device_mask_chooses_as_the_host_mask() {
    let engine = engine(3, DeviceKind::Wgpu, WeightFormat::F32);
    let prompt = tokens(9, 4);
    let grammars = [
        Grammar::Regex { regex: "[0-9]{2,4}-(yes|no)".into() },
        Grammar::JsonSchema { schema: schemas()[0].clone() },
        Grammar::JsonSchema { schema: schemas()[5].clone() },
    ];
    for grammar in grammars {
        let options = GenerateOptions { max_tokens: 40, grammar: Some(grammar), ..GenerateOptions::default() };
        let on_device = generate(&mut session(&engine), &prompt, &options);
        let on_host = generate(&mut session(&engine), &prompt, &GenerateOptions { logprobs: Some(0), ..options });
        assert_eq!(on_device.tokens, on_host.tokens, "{:?}", on_host.text);
        assert_eq!(on_device.finish_reason, on_host.finish_reason);
    }
}
