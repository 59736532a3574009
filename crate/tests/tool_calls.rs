//! Tool calls: the grammar that holds a call to its function's schema (on a tiny random model
//! whose every byte is a token), and real calls by Qwen2.5-Coder-0.5B-Instruct (fetched by
//! `pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b`), whose template takes tools.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use hearth::{
    Control, DeviceKind, Engine, Error, FinishReason, GenerateOptions, Generation, Grammar, KvOptions, Message,
    PromptPruneOptions, Tool, ToolCall, ToolChoice, WeightFormat,
};
use serde_json::{Value, json};

fn weather() -> Tool {
    Tool::function(
        "get_weather",
        "Get the current weather in a city",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["city"]
        }),
    )
}

fn add() -> Tool {
    Tool::function(
        "add",
        "Add two numbers",
        json!({
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"]
        }),
    )
}

/// Whether `call` names one of the two tools and its arguments follow that tool's schema.
fn valid_call(call: &ToolCall) -> bool {
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(&call.function.arguments) else { return false };
    call.kind == "function"
        && call.id.starts_with("call_")
        && match call.function.name.as_str() {
            "get_weather" => {
                args["city"].is_string()
                    && args.get("unit").is_none_or(|u| u == "celsius" || u == "fahrenheit")
                    && args.keys().all(|k| k == "city" || k == "unit")
            }
            "add" => args["a"].is_number() && args["b"].is_number() && args.len() == 2,
            _ => false,
        }
}

/// What a listener heard: the text and the calls, in order.
#[derive(Default)]
struct Heard {
    text: String,
    calls: Vec<ToolCall>,
}

impl hearth::Listener for Heard {
    fn on_text(&mut self, text: &str, _: u32) -> hearth::Result<Control> {
        self.text.push_str(text);
        Ok(Control::Continue)
    }

    fn on_tool_call(&mut self, call: &ToolCall) -> hearth::Result<Control> {
        self.calls.push(call.clone());
        Ok(Control::Continue)
    }
}

fn qwen() -> Arc<Engine> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b", path.display()));
    Arc::new(Engine::from_gguf(&bytes, &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4).unwrap())
}

/// A chat reply, and what was streamed: the streamed text and calls are the result's.
fn chat(engine: &Arc<Engine>, messages: &[Message], options: &GenerateOptions) -> Generation {
    let mut session = engine.session(&KvOptions::default()).unwrap();
    let mut heard = Heard::default();
    let g =
        pollster::block_on(session.chat_with(messages, options, &PromptPruneOptions::default(), &mut heard)).unwrap();
    assert_eq!(heard.text, g.text);
    assert_eq!(heard.calls, g.tool_calls.clone().unwrap_or_default());
    g
}

fn with_tools(choice: ToolChoice) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 120,
        tools: vec![weather(), add()],
        tool_choice: choice,
        ..GenerateOptions::default()
    }
}

fn weather_question() -> Vec<Message> {
    vec![Message::new("user", "What is the weather in Paris and in Oslo?")]
}

/// `required`: Qwen's reply is calls only, each naming a tool with arguments that follow its
/// schema, streamed as they are returned.
#[test]
fn qwen_required_calls_follow_the_schemas() {
    let engine = qwen();
    let g = chat(&engine, &weather_question(), &with_tools(ToolChoice::Required));
    assert_eq!(g.finish_reason, FinishReason::ToolCalls, "{g:?}");
    assert_eq!(g.text, "");
    let calls = g.tool_calls.unwrap();
    assert!(calls.iter().all(valid_call), "{calls:?}");
    let cities: Vec<Value> =
        calls.iter().map(|c| serde_json::from_str::<Value>(&c.function.arguments).unwrap()["city"].clone()).collect();
    assert_eq!(cities, [json!("Paris"), json!("Oslo")]);
    assert_ne!(calls[0].id, calls[1].id);
}

/// A named choice calls that function even where another fits the question; without parallel
/// calls there is one.
#[test]
fn qwen_named_choice_and_single_call() {
    let engine = qwen();
    let mut options = with_tools(ToolChoice::Function("add".into()));
    let g = chat(&engine, &[Message::new("user", "What is 17 plus 25?")], &options);
    let calls = g.tool_calls.unwrap();
    assert!(calls.iter().all(|c| c.function.name == "add" && valid_call(c)), "{calls:?}");
    assert_eq!(serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(), json!({"a": 17, "b": 25}));
    options.tool_choice = ToolChoice::Required;
    options.parallel_tool_calls = false;
    let g = chat(&engine, &weather_question(), &options);
    assert_eq!((g.finish_reason, g.tool_calls.unwrap().len()), (FinishReason::ToolCalls, 1));
}

/// `none`: the model is not shown the tools (the prompt is the one without them) and its
/// reply is text.
#[test]
fn qwen_none_is_text_without_tools_in_the_prompt() {
    let engine = qwen();
    let options = with_tools(ToolChoice::None);
    assert_eq!(
        engine.encode_chat_with_tools(&weather_question(), options.offered_tools()).unwrap(),
        engine.encode_chat(&weather_question()).unwrap()
    );
    let g = chat(&engine, &weather_question(), &options);
    let plain = chat(&engine, &weather_question(), &GenerateOptions { max_tokens: 120, ..GenerateOptions::default() });
    assert_eq!((g.tokens, g.text, g.tool_calls), (plain.tokens, plain.text, None));
}

/// `auto`: text where the model writes text; a call where it writes one. This model writes
/// its calls as JSON in a ```json fence, not in the tags its template asks for: that form is a
/// call too, held to the schema like a tagged one.
#[test]
fn qwen_auto_is_text_or_calls() {
    let engine = qwen();
    let g = chat(&engine, &[Message::new("user", "Write a haiku about the sea.")], &with_tools(ToolChoice::Auto));
    assert_eq!((g.finish_reason, &g.tool_calls), (FinishReason::Stop, &None));
    assert!(!g.text.is_empty() && !g.text.contains("<tool_call>"), "{:?}", g.text);
    let g = chat(&engine, &weather_question(), &with_tools(ToolChoice::Auto));
    assert_eq!((g.finish_reason, g.text.as_str()), (FinishReason::ToolCalls, ""), "{g:?}");
    let calls = g.tool_calls.unwrap();
    assert!(calls.iter().all(valid_call), "{calls:?}");
    assert_eq!(serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap()["city"], "Paris");
}

/// A call cut off by `max_tokens` is text with the reason, never a half-parsed call.
#[test]
fn qwen_cut_call_is_text() {
    let engine = qwen();
    let mut options = with_tools(ToolChoice::Required);
    options.max_tokens = 8;
    let g = chat(&engine, &weather_question(), &options);
    assert_eq!((g.finish_reason, &g.tool_calls), (FinishReason::Length, &None));
    assert!(g.text.starts_with("<tool_call>\n{"), "{:?}", g.text);
    assert!(g.tool_call_error.is_some());
}

/// An earlier call and its result, given back in OpenAI's shape, are rendered by the template
/// as it writes them (the call's arguments as an object, the result in a user turn).
#[test]
fn qwen_renders_calls_and_results() {
    let engine = qwen();
    let call = ToolCall {
        id: "call_1".into(),
        kind: "function".into(),
        function: hearth::FunctionCall { name: "get_weather".into(), arguments: r#"{"city": "Paris"}"#.into() },
    };
    let mut assistant = Message::new("assistant", "");
    assistant.tool_calls = Some(vec![call]);
    let mut result = Message::new("tool", r#"{"temperature": 18}"#);
    result.tool_call_id = Some("call_1".into());
    let messages = vec![Message::new("user", "Weather in Paris?"), assistant, result];
    let ids = engine.encode_chat_with_tools(&messages, &[weather()]).unwrap();
    let text = engine.tokenizer().decode(&ids, false).unwrap();
    assert!(
        text.contains(
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temperature\": 18}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        ),
        "{text}"
    );
    assert!(text.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""), "{text}");
}

/// Sampled from a random model, every call under `required` and a named choice follows its
/// schema (or is cut short by the limit and stays text).
#[test]
fn sampled_calls_follow_the_schemas() {
    let engine = engine(5, DeviceKind::Cpu, WeightFormat::F32);
    let prompt = tokens(6, 3);
    for (choice, seed) in
        [(ToolChoice::Required, 0), (ToolChoice::Required, 1), (ToolChoice::Function("add".into()), 2)]
    {
        let mut options = with_tools(choice.clone());
        options.max_tokens = 200;
        options.sampler = hearth::SamplerOptions { temperature: 1.0, seed: Some(seed), ..Default::default() };
        let mut session = engine.session(&KvOptions::default()).unwrap();
        let g = pollster::block_on(session.generate_with(&prompt, &options, Heard::default())).unwrap();
        match g.finish_reason {
            FinishReason::Length => assert!(g.tool_call_error.is_some() || g.tool_calls.is_some(), "{g:?}"),
            reason => assert_eq!(reason, FinishReason::ToolCalls, "{g:?}"),
        }
        for call in g.tool_calls.iter().flatten() {
            assert!(valid_call(call), "{call:?}");
            if let ToolChoice::Function(name) = &choice {
                assert_eq!(&call.function.name, name);
            }
        }
    }
}

/// Under `auto` any text may come first; once the tag is written only a call's JSON may follow,
/// naming one of the tools.
#[test]
fn auto_grammar_holds_text_after_the_tag() {
    let engine = engine(5, DeviceKind::Cpu, WeightFormat::F32);
    let options = with_tools(ToolChoice::Auto);
    let Some(Grammar::Lark { grammar }) = options.tool_set().unwrap().grammar() else { panic!() };
    let mut constraint = engine.grammars().unwrap().compile(&Grammar::Lark { grammar }).unwrap();
    let tokenizer = engine.tokenizer();
    let vocab = engine.config().vocab;
    let allowed = |constraint: &mut hearth::text::grammar::TokenConstraint| -> Vec<u32> {
        let mut logits = vec![0.0f32; vocab];
        constraint.mask(&mut logits).unwrap();
        (0..vocab as u32).filter(|&i| logits[i as usize].is_finite()).collect()
    };
    let id = |text: &str| -> u32 {
        let ids = tokenizer.encode(text, false).unwrap();
        assert_eq!(ids.len(), 1, "{text:?}");
        ids[0]
    };
    // Free text at first: any letter.
    let free = allowed(&mut constraint);
    assert!(["S", "x", "{", "<"].iter().all(|t| free.contains(&id(t))));
    for token in tokenizer.encode("Sure. <tool_call>\n{\"name\": \"", false).unwrap() {
        assert!(allowed(&mut constraint).contains(&token));
        constraint.consume(token).unwrap();
    }
    // The name must be one of the tools'.
    let next = allowed(&mut constraint);
    assert!(next.contains(&id("a")) && next.contains(&id("g")), "{next:?}");
    assert!(!next.contains(&id("x")) && !next.contains(&id("S")));
}

/// Tools that cannot be served are refused before any work, naming the problem.
#[test]
fn bad_tools_are_refused() {
    let engine = engine(5, DeviceKind::Cpu, WeightFormat::F32);
    let prompt = tokens(4, 1);
    let mut cases: Vec<GenerateOptions> = Vec::new();
    let mut o = with_tools(ToolChoice::Function("nope".into()));
    cases.push(o.clone());
    o.tool_choice = ToolChoice::Auto;
    o.grammar = Some(Grammar::JsonObject);
    cases.push(o.clone());
    o.grammar = None;
    o.tools.push(add());
    cases.push(o.clone());
    o.tools = vec![Tool::function("bad name", "", json!({"type": "object"}))];
    cases.push(o.clone());
    o.tools = vec![Tool::function("f", "", json!({"type": "object", "properties": {"x": {"type": "nonsense"}}}))];
    cases.push(o.clone());
    let mut deep = json!({"type": "object"});
    for _ in 0..100 {
        deep = json!({"type": "object", "properties": {"x": deep}});
    }
    o.tools = vec![Tool::function("f", "", deep)];
    cases.push(o.clone());
    o.tools = vec![weather()];
    o.speculative = Some(hearth::SpeculativeOptions::default());
    cases.push(o);
    for (i, options) in cases.iter().enumerate() {
        let mut session = engine.session(&KvOptions::default()).unwrap();
        let e = pollster::block_on(session.generate(&prompt, options, |_, _| Control::Continue)).unwrap_err();
        assert!(matches!(e, Error::BadOptions(_)), "case {i}: {e}");
    }
}
