//! Conversations decoded together, on tiny random models: each gets the tokens, text, finish
//! and cache it gets alone, conversations join a running batch between steps, and a batch of
//! sessions of different engines is refused.

mod common;

use std::sync::Arc;

use common::*;
use hearth::{
    BatchRequest, Control, DeviceKind, Error, EvictionPolicy, FinishReason, GenerateOptions, KvOptions, Listener,
    SamplerOptions, Session, WeightFormat, generate_batch,
};

/// Collects a conversation's text; aborts after `abort_after` pieces when given.
struct Collect {
    text: String,
    pieces: usize,
    abort_after: Option<usize>,
}

impl Listener for Collect {
    fn on_text(&mut self, text: &str, _: u32) -> hearth::Result<Control> {
        self.text.push_str(text);
        self.pieces += 1;
        Ok(Control::Continue)
    }

    fn aborted(&self) -> bool {
        self.abort_after.is_some_and(|n| self.pieces >= n)
    }
}

/// Six conversations decoded together, each with its own prompt, cache size, sampler and
/// length (one evicts, one runs its cache full, one aborts, one has a prompt of three prefill
/// passes that run between the others' decode steps), give each the tokens, text, finish and
/// cache it gets alone; on the CPU and on wgpu.
fn batch_equals_alone(device: DeviceKind) {
    let engine = engine(94, device, WeightFormat::Int4);
    let greedy = |n| GenerateOptions { max_tokens: n, ignore_eos: true, ..GenerateOptions::default() };
    let sampled = GenerateOptions {
        sampler: SamplerOptions { temperature: 0.8, top_k: 20, seed: Some(5), ..SamplerOptions::default() },
        ..greedy(30)
    };
    let cases: Vec<(Vec<u32>, KvOptions, GenerateOptions, Option<usize>)> = vec![
        (tokens(9, 31), KvOptions::with_capacity(64), greedy(25), None),
        (tokens(17, 32), KvOptions::with_capacity(64), sampled, None),
        // A cache that evicts, and one that fills up.
        (tokens(5, 33), KvOptions::with_capacity(24), greedy(40), None),
        (tokens(6, 34), KvOptions::with_capacity(20).policy(EvictionPolicy::None), greedy(40), None),
        // Aborted by its listener after 7 pieces.
        (tokens(11, 35), KvOptions::with_capacity(64), greedy(30), Some(7)),
        // Prefilled in three passes while the others decode.
        (tokens(150, 36), KvOptions::with_capacity(200), greedy(20), None),
    ];
    let listener = |abort_after| Collect { text: String::new(), pieces: 0, abort_after };
    let mut alone = Vec::new();
    for (prompt, kv, options, abort) in &cases {
        let mut session = engine.session(kv).unwrap();
        let mut l = listener(*abort);
        let g = pollster::block_on(session.generate_with(prompt, options, &mut l)).unwrap();
        let contents = pollster::block_on(session.kv_cache().contents()).unwrap();
        alone.push((g, l.text, contents, session.history().to_vec()));
    }
    let mut sessions: Vec<Session> = cases.iter().map(|(_, kv, _, _)| engine.session(kv).unwrap()).collect();
    let mut listeners: Vec<Collect> = cases.iter().map(|c| listener(c.3)).collect();
    let mut requests: Vec<BatchRequest> = sessions
        .iter_mut()
        .zip(&mut listeners)
        .zip(&cases)
        .map(|((session, listener), (prompt, _, options, _))| BatchRequest { session, prompt, options, listener })
        .collect();
    let together = pollster::block_on(generate_batch(&mut requests)).unwrap();
    drop(requests);
    for (i, ((g, text, contents, history), b)) in alone.iter().zip(&together).enumerate() {
        let what = format!("{device:?} conversation {i}");
        assert_eq!(b.tokens, g.tokens, "{what}");
        assert_eq!(b.finish_reason, g.finish_reason, "{what}");
        assert_eq!(b.text, g.text, "{what}");
        assert_eq!(&listeners[i].text, text, "{what}");
        assert_eq!(sessions[i].history(), history.as_slice(), "{what}");
        assert_eq!(&pollster::block_on(sessions[i].kv_cache().contents()).unwrap(), contents, "{what}");
    }
    let reasons: Vec<FinishReason> = together.iter().map(|g| g.finish_reason).collect();
    assert_eq!(
        reasons,
        [
            FinishReason::Length,
            FinishReason::Length,
            FinishReason::Length,
            FinishReason::ContextFull,
            FinishReason::Aborted,
            FinishReason::Length,
        ]
    );
    assert!(together[2].stats.evicted_tokens > 0);
}

/// A listener whose callback fails at its `n`-th piece.
struct FailsAt(usize);

impl Listener for FailsAt {
    fn on_text(&mut self, _: &str, _: u32) -> hearth::Result<Control> {
        self.0 -= 1;
        if self.0 == 0 { Err(Error::Callback("the page's code threw".into())) } else { Ok(Control::Continue) }
    }
}

/// Conversations join a running batch between steps (owned sessions, as the browser engine
/// holds them): one that joins late, while the first decodes, gets the tokens it gets alone;
/// one whose callback fails leaves with its error and the others go on undisturbed.
#[test]
fn conversations_join_a_running_batch() {
    let engine = engine(95, DeviceKind::Cpu, WeightFormat::Int4);
    let options = GenerateOptions { max_tokens: 24, ignore_eos: true, ..GenerateOptions::default() };
    let kv = KvOptions::with_capacity(64);
    let prompts = [tokens(9, 41), tokens(30, 42), tokens(7, 43)];
    let alone: Vec<Vec<u32>> =
        prompts.iter().map(|p| generate(&mut engine.session(&kv).unwrap(), p, &options).tokens).collect();

    let mut batch: hearth::Batch<'static, Session> = hearth::Batch::new(Arc::clone(&engine));
    let quiet = || Box::new(Collect { text: String::new(), pieces: 0, abort_after: None });
    let first = batch.join(engine.session(&kv).unwrap(), prompts[0].clone(), &options, quiet()).ok().unwrap();
    let mut done = Vec::new();
    for _ in 0..5 {
        done.extend(pollster::block_on(batch.step()));
    }
    let late = batch.join(engine.session(&kv).unwrap(), prompts[1].clone(), &options, quiet()).ok().unwrap();
    let failing =
        batch.join(engine.session(&kv).unwrap(), prompts[2].clone(), &options, Box::new(FailsAt(3))).ok().unwrap();
    assert_eq!(batch.len(), 3);
    while !batch.is_empty() {
        done.extend(pollster::block_on(batch.step()));
    }
    let result = |id| done.iter().find(|f| f.id == id).map(|f| f.result.as_ref()).unwrap();
    assert_eq!(result(first).unwrap().tokens, alone[0]);
    assert_eq!(result(late).unwrap().tokens, alone[1]);
    assert!(matches!(result(failing), Err(Error::Callback(_))), "the failing callback fails its own conversation");
    // A refused join gives the session back.
    let refused = batch.join(engine.session(&kv).unwrap(), Vec::new(), &options, quiet());
    assert!(matches!(refused, Err((_, Error::InvalidPrompt(_)))));
}

each_device!(conversations_decoded_together_equal_each_alone, |device| batch_equals_alone(device));

/// Sessions of different engines, or asking for speculation, are refused before anything runs.
#[test]
fn a_batch_of_other_engines_is_refused() {
    let (a, b) = (engine(95, DeviceKind::Cpu, WeightFormat::Int4), engine(96, DeviceKind::Cpu, WeightFormat::Int4));
    let (mut sa, mut sb) =
        (a.session(&KvOptions::with_capacity(32)).unwrap(), b.session(&KvOptions::with_capacity(32)).unwrap());
    let prompt = tokens(5, 1);
    let options = GenerateOptions { max_tokens: 4, ..GenerateOptions::default() };
    let (mut la, mut lb) = (
        Collect { text: String::new(), pieces: 0, abort_after: None },
        Collect { text: String::new(), pieces: 0, abort_after: None },
    );
    let mut requests = [
        BatchRequest { session: &mut sa, prompt: &prompt, options: &options, listener: &mut la },
        BatchRequest { session: &mut sb, prompt: &prompt, options: &options, listener: &mut lb },
    ];
    assert!(matches!(pollster::block_on(generate_batch(&mut requests)), Err(Error::BadOptions(_))));
    assert!(sa.history().is_empty() && sb.history().is_empty());
}
