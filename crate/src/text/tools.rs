//! Tool calls, as OpenAI's API shapes them: the functions a reply may call, the choice of
//! whether it must, the grammar that holds a call to a function's parameter schema, and the
//! scan that finds the calls in streamed text.
//!
//! One wire format for every model: Hermes's, which Qwen 2.5/3 and the Hermes models were
//! trained on. A call is `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, calls
//! follow each other on new lines, and free text may only come before the first. A template
//! that renders tools in this format gets them itself ([`crate::text::template`]); any other
//! gets them in the system prompt ([`hermes_system_prompt`]).
//!
//! The grammar is llguidance's Lark: under `auto` a lazy lexeme lets free text run until the
//! model writes `<tool_call>`, after which the name must be one of the tools and the arguments
//! must follow its schema; `required` and a named function start with the call.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::grammar::{Grammar, MAX_SCHEMA_DEPTH, bounded_whitespace, json_depth};
use crate::error::{Error, Result};

/// The tag before a call's JSON, and after it.
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";
/// The fence before a call written as a JSON code block.
const FENCE: &str = "```json\n";

/// Most tools one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// A function the model may call (OpenAI's `{type: "function", function: {...}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Tool {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// A function's name, what it does, and the JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS), ts(optional_fields))]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of an object; `None`: any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "unknown"))]
    pub parameters: Option<Value>,
    /// Accepted for OpenAI's shape; the arguments always follow the schema here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl Tool {
    pub fn function(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        let function = FunctionDef {
            name: name.into(),
            description: Some(description.into()),
            parameters: Some(parameters),
            strict: None,
        };
        Self { kind: "function".into(), function }
    }

    fn parameters(&self) -> Value {
        self.function.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))
    }
}

/// Whether and which tool the reply calls (OpenAI's `tool_choice`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[cfg_attr(
    not(target_arch = "wasm32"),
    ts(type = "\"none\" | \"auto\" | \"required\" | { type: \"function\", function: { name: string } }")
)]
pub enum ToolChoice {
    /// No call: the tools are not shown to the model.
    None,
    /// Free text, or calls once the model starts one.
    #[default]
    Auto,
    /// At least one call, and nothing else.
    Required,
    /// Calls of this function, and nothing else.
    Function(String),
}

impl ToolChoice {
    /// Parses `"none" | "auto" | "required"` or a function's name (the CLI's form).
    pub fn parse(text: &str) -> Self {
        match text {
            "none" => Self::None,
            "auto" => Self::Auto,
            "required" => Self::Required,
            name => Self::Function(name.to_string()),
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::None => s.serialize_str("none"),
            Self::Auto => s.serialize_str("auto"),
            Self::Required => s.serialize_str("required"),
            Self::Function(name) => json!({"type": "function", "function": {"name": name}}).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bad = || {
            de::Error::custom(
                r#"tool_choice must be "none", "auto", "required" or {type: "function", function: {name}}"#,
            )
        };
        match Value::deserialize(d)? {
            Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(Self::parse(&s)),
            Value::Object(o) => {
                let name = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
                match (o.get("type").and_then(Value::as_str), name, o.len()) {
                    (Some("function"), Some(name), 2) => Ok(Self::Function(name.to_string())),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

/// A call the model made (OpenAI's `tool_calls[i]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct ToolCall {
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

/// The function called and its arguments, a JSON text as the model wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// The tools of one request, checked.
pub struct ToolSet<'a> {
    tools: &'a [Tool],
    choice: &'a ToolChoice,
    parallel: bool,
}

impl<'a> ToolSet<'a> {
    /// `bad_options` naming the problem: a bad name, a name twice, a parameter schema that is
    /// not an object or nests too deep, a choice naming no tool.
    pub fn new(tools: &'a [Tool], choice: &'a ToolChoice, parallel: bool) -> Result<Self> {
        if tools.len() > MAX_TOOLS {
            return Err(Error::BadOptions(format!("{} tools, more than the {MAX_TOOLS} accepted", tools.len())));
        }
        for (i, tool) in tools.iter().enumerate() {
            let name = &tool.function.name;
            if tool.kind != "function" {
                return Err(Error::BadOptions(format!("tools[{i}].type must be \"function\"")));
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
            if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
                return Err(Error::BadOptions(format!(
                    "tools[{i}]: the name {name:?} must be 1 to 64 letters, digits, '_', '-' or '.'"
                )));
            }
            if tools[..i].iter().any(|t| &t.function.name == name) {
                return Err(Error::BadOptions(format!("tools[{i}]: the name {name:?} is used twice")));
            }
            if let Some(p) = &tool.function.parameters {
                if !p.is_object() {
                    return Err(Error::BadOptions(format!("tools[{i}].parameters must be a JSON schema object")));
                }
                if json_depth(p) > MAX_SCHEMA_DEPTH {
                    return Err(Error::BadOptions(format!(
                        "tools[{i}].parameters nests more than {MAX_SCHEMA_DEPTH} levels deep"
                    )));
                }
            }
        }
        match choice {
            ToolChoice::Required if tools.is_empty() => {
                return Err(Error::BadOptions("tool_choice \"required\" needs tools".into()));
            }
            ToolChoice::Function(name) if !tools.iter().any(|t| &t.function.name == name) => {
                return Err(Error::BadOptions(format!("tool_choice names {name:?}, which is not among the tools")));
            }
            _ => {}
        }
        Ok(Self { tools, choice, parallel })
    }

    /// Whether the reply may call a tool (tools are offered and the choice is not `none`).
    pub fn active(&self) -> bool {
        !self.tools.is_empty() && *self.choice != ToolChoice::None
    }

    /// The grammar the reply follows: under `auto` free text or calls after it, under
    /// `required` or a named function calls only; `None` when no call may be made.
    pub fn grammar(&self) -> Option<Grammar> {
        if !self.active() {
            return None;
        }
        let offered: Vec<&Tool> = match self.choice {
            ToolChoice::Function(name) => self.tools.iter().filter(|t| &t.function.name == name).collect(),
            _ => self.tools.iter().collect(),
        };
        let bodies: Vec<Value> = offered
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.function.name}, "arguments": t.parameters()},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let body = if bodies.len() == 1 { bodies[0].clone() } else { json!({ "anyOf": bodies }) };
        // Whitespace as models write calls, compact or indented, and no more.
        let body = bounded_whitespace(body);
        let more = if self.parallel { " (\"\\n\" call)*" } else { "" };
        // Under `auto`, a reply that opens with a JSON object (bare, or in a ```json fence, as
        // Qwen's coder models write calls) is a call too: free text may not begin that way.
        let start = match self.choice {
            ToolChoice::Auto => format!(
                "start: FREE | lead \"\\n\" body \"\\n{CALL_CLOSE}\"{more} | body | \"```json\\n\" body \"\\n```\"\n\
                 lead[lazy]: FREE \"{CALL_OPEN}\"\n\
                 FREE: /(?s:.*)/ & ~/(```json\\n)?\\{{(?s:.*)/\n"
            ),
            _ => format!("start: call{more}\n"),
        };
        let grammar = format!("{start}call: \"{CALL_OPEN}\\n\" body \"\\n{CALL_CLOSE}\"\nbody: %json {body}\n");
        Some(Grammar::Lark { grammar })
    }
}

/// The system prompt's addition that teaches a model without tools in its template the Hermes
/// format (the text Qwen 2.5's own template writes, so one format serves every model).
pub fn hermes_system_prompt(tools: &[Tool]) -> String {
    let mut text = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for tool in tools {
        text.push('\n');
        text.push_str(&serde_json::to_string(tool).unwrap_or_default());
    }
    text.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within \
         <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    text
}

/// A call as the Hermes format writes it, for a template without tools to render an earlier
/// assistant turn.
pub fn hermes_call_text(call: &ToolCall) -> String {
    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()).to_string());
    format!(
        "{CALL_OPEN}\n{{\"name\": {}, \"arguments\": {arguments}}}\n{CALL_CLOSE}",
        Value::String(call.function.name.clone())
    )
}

/// What streamed text is, once tool calls are looked for.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

/// Finds tool calls in streamed text: text before the first call passes through (less a tail
/// that could begin the tag, held back until ruled out); a call comes out whole, parsed, once
/// its closing tag arrives. A reply that opens with a JSON object, bare or in a ```json fence,
/// is held to its end and is one call if it parses as one.
pub struct ToolCallScan {
    /// Text not yet passed on: a possible start of the tag, or a call being written.
    held: String,
    form: Form,
    calls: Vec<ToolCall>,
    /// Hashes what was written, for call ids that differ between calls and turns.
    seed: u64,
}

/// What the reply is, as far as its text shows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// Nothing but what could begin a JSON object or its fence yet.
    Opening,
    /// Text, then tagged calls.
    Tagged { in_call: bool },
    /// One JSON object (after `fence`, when it is fenced), held to the end.
    Whole { fenced: bool },
}

impl ToolCallScan {
    /// `seed` makes the call ids of this reply (its prompt, say) differ from other replies'.
    pub fn new(seed: u64) -> Self {
        Self { held: String::new(), form: Form::Opening, calls: Vec::new(), seed }
    }

    /// Adds `text`; returns what it completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        self.seed = fnv(self.seed, text.as_bytes());
        if self.form == Form::Opening {
            self.form = if self.held.starts_with('{') {
                Form::Whole { fenced: false }
            } else if self.held.starts_with(&FENCE[..FENCE.len().min(self.held.len())])
                && self.held.len() <= FENCE.len()
            {
                return Vec::new();
            } else if self.held.starts_with(FENCE) && self.held[FENCE.len()..].starts_with('{') {
                Form::Whole { fenced: true }
            } else {
                Form::Tagged { in_call: false }
            };
        }
        let mut out = Vec::new();
        while let Form::Tagged { in_call } = self.form {
            if in_call {
                let Some(end) = self.held.find(CALL_CLOSE) else { break };
                let body = self.held[..end].to_string();
                self.held.drain(..end + CALL_CLOSE.len());
                self.form = Form::Tagged { in_call: false };
                match self.parse(&body) {
                    Some(call) => {
                        self.calls.push(call.clone());
                        out.push(Piece::Call(call));
                    }
                    // Not a call after all: the text as written.
                    None => out.push(Piece::Text(format!("{CALL_OPEN}{body}{CALL_CLOSE}"))),
                }
                continue;
            }
            let before: String = match self.held.find(CALL_OPEN) {
                Some(at) => {
                    self.form = Form::Tagged { in_call: true };
                    let before: String = self.held.drain(..at + CALL_OPEN.len()).collect();
                    before[..at].to_string()
                }
                None => {
                    let keep = longest_tag_prefix(&self.held);
                    self.held.drain(..self.held.len() - keep).collect()
                }
            };
            // Between calls only whitespace is expected: dropped.
            let before = if self.calls.is_empty() { before } else { before.trim().to_string() };
            if !before.is_empty() {
                out.push(Piece::Text(before));
            }
            if self.form == (Form::Tagged { in_call: false }) {
                break;
            }
        }
        out
    }

    /// Ends the text: a reply that was one JSON object becomes its call; what was held back
    /// comes out as text (a call cut off before its end is text with the tag, never a
    /// half-parsed call), with the reason when one was cut or did not parse.
    pub fn finish(&mut self) -> (Vec<Piece>, Option<String>) {
        let held = std::mem::take(&mut self.held);
        let form = std::mem::replace(&mut self.form, Form::Tagged { in_call: false });
        let text = |t: String| if t.is_empty() { Vec::new() } else { vec![Piece::Text(t)] };
        match form {
            Form::Tagged { in_call: true } => {
                (text(format!("{CALL_OPEN}{held}")), Some("the reply ended inside a tool call".into()))
            }
            Form::Whole { fenced } => {
                let body =
                    if fenced { held[FENCE.len()..].trim_end().strip_suffix("```") } else { Some(held.as_str()) };
                match body.and_then(|b| self.parse(b)) {
                    Some(call) => {
                        self.calls.push(call.clone());
                        (vec![Piece::Call(call)], None)
                    }
                    None => (text(held), Some("the reply is not a complete tool call".into())),
                }
            }
            _ => (text(held), None),
        }
    }

    /// The calls found so far.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    fn parse(&self, body: &str) -> Option<ToolCall> {
        #[derive(Deserialize)]
        struct Body<'a> {
            name: String,
            #[serde(borrow)]
            arguments: &'a serde_json::value::RawValue,
        }
        let parsed: Body = serde_json::from_str(body.trim()).ok()?;
        let arguments = parsed.arguments.get();
        if !arguments.trim_start().starts_with('{') {
            return None;
        }
        let id = format!("call_{:016x}", fnv(self.seed, &(self.calls.len() as u64).to_le_bytes()));
        let function = FunctionCall { name: parsed.name, arguments: arguments.to_string() };
        Some(ToolCall { id, kind: function_kind(), function })
    }
}

/// Length of the longest suffix of `text` that begins the opening tag.
fn longest_tag_prefix(text: &str) -> usize {
    (1..CALL_OPEN.len()).rev().find(|&n| text.ends_with(&CALL_OPEN[..n])).unwrap_or(0)
}

/// FNV-1a, continuing from `hash`.
pub fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool::function(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
    }

    fn scan_all(pieces: &[&str]) -> (Vec<Piece>, Option<String>) {
        let mut scan = ToolCallScan::new(1);
        let mut out: Vec<Piece> = pieces.iter().flat_map(|p| scan.push(p)).collect();
        let (rest, why) = scan.finish();
        out.extend(rest);
        // Adjacent texts merged, for comparison.
        out.dedup_by(|b, a| match (a, b) {
            (Piece::Text(a), Piece::Text(b)) => {
                a.push_str(b);
                true
            }
            _ => false,
        });
        (out, why)
    }

    #[test]
    fn calls_split_across_pieces_are_found_whole() {
        let text = "Let me look.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        for size in [1, 2, 3, 5, 11, 64] {
            let chars: Vec<char> = text.chars().collect();
            let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (out, rest) = scan_all(&refs);
            assert_eq!(out.len(), 3, "{size}: {out:?}");
            assert_eq!(out[0], Piece::Text("Let me look.".into()));
            let Piece::Call(call) = &out[2] else { panic!("{out:?}") };
            assert_eq!(call.function.name, "get_weather");
            assert_eq!(call.function.arguments, "{\"city\": \"Oslo\"}");
            assert_eq!(rest, None);
            let (Piece::Call(a), Piece::Call(b)) = (&out[1], &out[2]) else { panic!() };
            assert_ne!(a.id, b.id);
        }
    }

    #[test]
    fn a_cut_call_and_a_bad_body_stay_text() {
        let (out, why) = scan_all(&["Hi <tool", "_call>\n{\"name\": \"x\""]);
        assert_eq!(out, vec![Piece::Text("Hi <tool_call>\n{\"name\": \"x\"".into())]);
        assert!(why.is_some());
        let (out, _) = scan_all(&["<tool_call>not json</tool_call>"]);
        assert_eq!(out, vec![Piece::Text("<tool_call>not json</tool_call>".into())]);
        let (out, why) = scan_all(&["a <tool", " b"]);
        assert_eq!((out, why), (vec![Piece::Text("a <tool b".into())], None));
        let (out, why) = scan_all(&["{\"name\": \"f\", \"argu"]);
        assert_eq!(out, vec![Piece::Text("{\"name\": \"f\", \"argu".into())]);
        assert!(why.is_some());
        let (out, why) = scan_all(&["``", "`python\nx = 1\n```"]);
        assert_eq!((out, why), (vec![Piece::Text("```python\nx = 1\n```".into())], None));
    }

    #[test]
    fn a_reply_that_is_one_json_call_is_a_call() {
        for pieces in [
            vec!["{\"name\": \"f\", ", "\"arguments\": {\"x\": 1}}"],
            vec!["``", "`json\n", "{\n  \"name\": \"f\",\n  \"arguments\": {\"x\": 1}\n}\n", "```"],
        ] {
            let (out, why) = scan_all(&pieces);
            let [Piece::Call(call)] = &out[..] else { panic!("{out:?}") };
            assert_eq!((call.function.name.as_str(), call.function.arguments.as_str(), why), ("f", "{\"x\": 1}", None));
        }
    }

    #[test]
    fn tool_sets_are_checked() {
        let tools = vec![weather()];
        assert!(ToolSet::new(&tools, &ToolChoice::Auto, true).unwrap().active());
        assert!(!ToolSet::new(&tools, &ToolChoice::None, true).unwrap().active());
        assert!(ToolSet::new(&tools, &ToolChoice::Function("nope".into()), true).is_err());
        assert!(ToolSet::new(&[], &ToolChoice::Required, true).is_err());
        let twice = vec![weather(), weather()];
        assert!(ToolSet::new(&twice, &ToolChoice::Auto, true).is_err());
        let mut bad = weather();
        bad.function.name = "a b".into();
        assert!(ToolSet::new(&[bad], &ToolChoice::Auto, true).is_err());
        let mut bad = weather();
        bad.function.parameters = Some(json!("string"));
        assert!(ToolSet::new(&[bad], &ToolChoice::Auto, true).is_err());
    }

    #[test]
    fn tool_choice_reads_openai_shapes() {
        for (text, choice) in [
            ("\"none\"", ToolChoice::None),
            ("\"auto\"", ToolChoice::Auto),
            ("\"required\"", ToolChoice::Required),
            (r#"{"type": "function", "function": {"name": "f"}}"#, ToolChoice::Function("f".into())),
        ] {
            let parsed: ToolChoice = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, choice);
            assert_eq!(serde_json::from_str::<ToolChoice>(&serde_json::to_string(&choice).unwrap()).unwrap(), choice);
        }
        for bad in ["\"always\"", "3", r#"{"type": "function"}"#, r#"{"type": "x", "function": {"name": "f"}}"#] {
            assert!(serde_json::from_str::<ToolChoice>(bad).is_err(), "{bad}");
        }
    }
}
