//! SmolLM2-135M-Instruct Q4_1 (fetched by `pkg-scripts/fetch-model.sh`) against the reference
//! data in `tests/reference/`, measured outside the project with llama.cpp and numpy.
//! Set `HEARTH_MODEL` to use a model file elsewhere.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use common::assert_top5_close;
use hearth::format::gguf::GgufFile;
use hearth::model::Logits;
use hearth::{Activations, DeviceKind, Engine, KvCache, KvOptions, TextStream, Tokenizer, WeightFormat};
use serde_json::Value;

fn model_path() -> PathBuf {
    let path = std::env::var_os("HEARTH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.exists(), "{} is missing: run pkg-scripts/fetch-model.sh", path.display());
    path
}

fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(model_path()).unwrap())
}

fn reference(name: &str) -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/smollm2-135m-instruct-q4_1").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn engine(device: DeviceKind, weights: WeightFormat) -> Arc<Engine> {
    Arc::new(Engine::from_gguf(model_bytes(), &device.device().unwrap(), weights).unwrap())
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::parse(model_bytes()).unwrap().metadata).unwrap()
}

#[test]
fn tokenizer_gives_llama_cpp_ids() {
    let tok = tokenizer();
    for case in reference("tokenizer.json")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&case["ids"]), "plain: {text:?}");
        assert_eq!(tok.encode(text, true).unwrap(), ids(&case["ids_parse_special"]), "special: {text:?}");
    }
}

#[test]
fn streaming_detokenization_never_splits_a_character() {
    let tok = tokenizer();
    let text = "Ünïcödé — café, naïve, 日本語のテキスト, emoji 🔥🚀.";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = TextStream::new();
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.push(&tok, id).unwrap());
    }
    pieces.push(stream.finish(&tok).unwrap());
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert!(pieces.iter().filter(|p| p.is_empty()).count() > 5, "multi-byte characters span tokens here");
    assert_eq!(pieces.concat(), text);
}

/// Top-5 logits at every position within `tolerance` of the exact f32 reference (1e-2 for f32
/// weights, 5e-2 for int4), the same ranking (up to reference logits within the tolerance of
/// each other), and for int4 the same top-1 id everywhere.
fn logits_match_f32_reference(device: DeviceKind, weights: WeightFormat) {
    let tolerance = if weights == WeightFormat::F32 { 1e-2 } else { 5e-2 };
    let engine = engine(device, weights);
    let mut session = engine.session(&KvOptions::with_capacity(64)).unwrap();
    let mut worst = 0.0f32;
    for case in reference("logits_f32.json")["cases"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let got = pollster::block_on(session.logits_all(&prompt)).unwrap();
        for (pos, logits) in got.iter().enumerate() {
            let want_ids = ids(&case["top5_ids"][pos]);
            let want: Vec<f32> =
                case["top5_logits"][pos].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let what = format!("{device:?} {weights:?} {} pos {pos}", case["prompt"]);
            if weights == WeightFormat::Int4 {
                assert_eq!(hearth::generate::sampler::argmax(logits), want_ids[0], "{what}: top-1");
            }
            worst = worst.max(assert_top5_close(logits, &want_ids, &want, tolerance, &what));
        }
    }
    eprintln!("{device:?} {weights:?}: largest top-5 logit difference {worst}");
}

each_device!(f32_logits_match_reference, |device| logits_match_f32_reference(device, WeightFormat::F32));

each_device!(int4_logits_match_reference, |device| logits_match_f32_reference(device, WeightFormat::Int4));

/// Greedy tokens equal llama.cpp's at least up to the first step where the engine's own top
/// two logits are within 0.5 (llama.cpp's 8-bit activations can flip such near-ties). Past
/// that step the engine is fed llama.cpp's tokens, and must still pick llama.cpp's token at
/// every step that is not a near-tie.
#[test]
fn greedy_agrees_with_llama_cpp_until_a_near_tie() {
    let engine = engine(DeviceKind::Cpu, WeightFormat::Int4);
    for case in reference("greedy_llamacpp.json")["cases"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let want = ids(&case["greedy_32"]);
        let mut cache = KvCache::new(engine.config(), &KvOptions::with_capacity(64), engine.device()).unwrap();
        let mut input = prompt.clone();
        let (mut first_near_tie, mut near_ties) = (None, 0);
        for (step, &expected) in want.iter().enumerate() {
            let logits = engine.model().forward(&input, &mut cache, Logits::Last).unwrap();
            let logits = logits.into_data().try_into_vec_as::<f32>().unwrap();
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let token = hearth::generate::sampler::argmax(&logits);
            if sorted[0] - sorted[1] < 0.5 {
                first_near_tie.get_or_insert(step);
                near_ties += 1;
            } else {
                assert_eq!(
                    token,
                    expected,
                    "{:?}: step {step} (gap {}) differs from llama.cpp",
                    case["prompt"],
                    sorted[0] - sorted[1]
                );
            }
            input = vec![expected];
        }
        eprintln!(
            "{:?}: free-running agreement for {} of {} tokens (first near-tie at step {first_near_tie:?}); {near_ties} near-ties in all",
            case["prompt"],
            first_near_tie.unwrap_or(want.len()),
            want.len()
        );
    }
}

/// The q8 mode (8-bit activations, integer dot products) keeps the exact mode's greedy token
/// wherever the exact mode's top two logits are more than 1 apart: on the reference prompts'
/// every position (the f32 reference's top-1 where its margin exceeds 1), and along the exact
/// mode's greedy continuation of each greedy prompt, both fed the exact mode's tokens.
#[test]
fn q8_keeps_the_exact_tokens_where_the_margin_exceeds_a_logit() {
    let exact = engine(DeviceKind::Cpu, WeightFormat::Int4);
    let mut q8 = Engine::from_gguf(model_bytes(), &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4).unwrap();
    q8.set_activations(Activations::Q8);
    let q8 = Arc::new(q8);
    let (mut compared, mut differing) = (0, 0);
    let mut session = q8.session(&KvOptions::with_capacity(64)).unwrap();
    for case in reference("logits_f32.json")["cases"].as_array().unwrap() {
        let got = pollster::block_on(session.logits_all(&ids(&case["ids"]))).unwrap();
        for (pos, logits) in got.iter().enumerate() {
            let want: Vec<f64> =
                case["top5_logits"][pos].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let token = hearth::generate::sampler::argmax(logits);
            if want[0] - want[1] > 1.0 {
                assert_eq!(token, ids(&case["top5_ids"][pos])[0], "{} pos {pos}", case["prompt"]);
                compared += 1;
            }
        }
    }
    for case in reference("greedy_llamacpp.json")["cases"].as_array().unwrap() {
        let config = exact.config();
        let mut caches =
            [&exact, &q8].map(|e| KvCache::new(config, &KvOptions::with_capacity(64), e.device()).unwrap());
        let mut input = ids(&case["ids"]);
        for step in 0..32 {
            let [a, b] = [0, 1].map(|i| {
                let model = if i == 0 { exact.model() } else { q8.model() };
                let logits = model.forward(&input, &mut caches[i], Logits::Last).unwrap();
                logits.into_data().try_into_vec_as::<f32>().unwrap()
            });
            let mut sorted = a.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            let (want, got) = (hearth::generate::sampler::argmax(&a), hearth::generate::sampler::argmax(&b));
            if sorted[0] - sorted[1] > 1.0 {
                assert_eq!(got, want, "{:?}: step {step} (margin {})", case["prompt"], sorted[0] - sorted[1]);
                compared += 1;
            } else if got != want {
                differing += 1;
            }
            input = vec![want];
        }
    }
    eprintln!("q8 kept the exact token at {compared} positions with a margin above 1; {differing} near-ties differ");
    assert!(compared >= 60, "only {compared} positions compared");
}

#[test]
fn cli_generate_says_paris() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["generate", "--model"])
        .arg(model_path())
        .args(["--prompt", "The capital of France is", "--max-tokens", "6", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["text"].as_str().unwrap().contains("Paris"), "{json}");
    assert_eq!(json["ids"][0], 7042, "llama.cpp's first greedy token");
    assert!(json["timings"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn cli_refuses_bad_input_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad_prompt = dir.path().join("prompt.txt");
    std::fs::write(&bad_prompt, b"caf\xc3 au lait").unwrap();
    let not_gguf = dir.path().join("model.gguf");
    std::fs::write(&not_gguf, b"this is not a model").unwrap();
    let cases: [(Vec<std::ffi::OsString>, &str); 3] = [
        (vec!["--model".into(), model_path().into(), "--prompt-file".into(), bad_prompt.into()], "not valid UTF-8"),
        (vec!["--model".into(), not_gguf.into(), "--prompt".into(), "hi".into()], "not a GGUF file"),
        (
            vec![
                "--model".into(),
                model_path().into(),
                "--prompt".into(),
                "hi".into(),
                "--device".into(),
                "tpu".into(),
            ],
            "unknown device",
        ),
    ];
    for (args, message) in cases {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_hearth")).arg("generate").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn cli_chat_answers_two_turns() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["chat", "--max-tokens", "16", "--model"])
        .arg(model_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd what is the capital of Japan?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replies: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(replies, ["The capital of France is Paris.", "The capital of Japan is Tokyo."]);
}

/// Prompt lookup and batched decoding on the real model give exactly plain greedy decoding's
/// tokens: a rewriting task (whose answer copies the prompt, so drafts are accepted and
/// rejected) and an open question, with and without speculation, and both decoded together.
fn faster_decoding_changes_nothing(device: DeviceKind, max_tokens: usize) {
    use hearth::{BatchRequest, Control, GenerateOptions, Listener, Message, SpeculativeOptions};
    struct Quiet;
    impl Listener for Quiet {
        fn on_text(&mut self, _: &str, _: u32) -> hearth::Result<Control> {
            Ok(Control::Continue)
        }
    }
    let engine = engine(device, WeightFormat::Int4);
    let kv = KvOptions::with_capacity(512);
    let prompts: Vec<Vec<u32>> = [
        "Rewrite the paragraph below exactly, changing only the word \"river\" to \"lake\".\n\nThe village sat \
         beside a quiet river. Every morning the fishermen pushed their boats into the river and returned at noon \
         with baskets of silver fish.",
        "What are three good habits for staying healthy?",
    ]
    .iter()
    .map(|text| engine.chat_prompt(&[Message::new("user", *text)], &[]).unwrap().tokens)
    .collect();
    let plain = GenerateOptions { max_tokens, ..GenerateOptions::default() };
    let fast = GenerateOptions { speculative: Some(SpeculativeOptions::default()), ..plain.clone() };
    let mut want = Vec::new();
    let mut accepted = 0;
    for prompt in &prompts {
        let mut session = engine.session(&kv).unwrap();
        let a = pollster::block_on(session.generate(prompt, &plain, |_, _| Control::Continue)).unwrap();
        session.reset();
        let b = pollster::block_on(session.generate(prompt, &fast, |_, _| Control::Continue)).unwrap();
        assert_eq!(b.tokens, a.tokens, "{device:?}: prompt lookup changed the answer");
        accepted += b.stats.accepted_tokens;
        want.push(a.tokens);
    }
    assert!(accepted > 0, "{device:?}: no draft was accepted");
    let mut sessions: Vec<_> = prompts.iter().map(|_| engine.session(&kv).unwrap()).collect();
    let mut listeners = [Quiet, Quiet];
    let mut requests: Vec<BatchRequest> = sessions
        .iter_mut()
        .zip(&mut listeners)
        .zip(&prompts)
        .map(|((session, listener), prompt)| BatchRequest { session, prompt, options: &plain, listener })
        .collect();
    let together = pollster::block_on(hearth::generate_batch(&mut requests)).unwrap();
    for (g, want) in together.iter().zip(&want) {
        assert_eq!(&g.tokens, want, "{device:?}: decoding together changed an answer");
    }
}

#[test]
fn faster_decoding_changes_nothing_on_cpu() {
    faster_decoding_changes_nothing(DeviceKind::Cpu, 96);
}

#[test]
fn faster_decoding_changes_nothing_on_wgpu() {
    faster_decoding_changes_nothing(DeviceKind::Wgpu, 16);
}
