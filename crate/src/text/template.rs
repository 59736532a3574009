//! The model's own Jinja chat template, rendered with minijinja.

use std::ops::Range;

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::tools::{CALL_OPEN, Tool, ToolCall, hermes_call_text, hermes_system_prompt};
use crate::error::{Error, Result};

/// Templates are untrusted input: bound the work one render may do.
const RENDER_FUEL: u64 = 5_000_000;

/// One chat message, as OpenAI's API and Hugging Face templates shape it: an assistant turn
/// may carry the tool calls it made, a `tool` turn the result of one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// Required; `null` reads as empty (OpenAI's assistant turns that only call tools).
    #[serde(deserialize_with = "null_as_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: None, tool_call_id: None, name: None }
    }

    fn with_content(&self, content: String) -> Self {
        Self { content, ..self.clone() }
    }

    fn uses_tools(&self) -> bool {
        self.role == "tool" || self.tool_calls.is_some()
    }

    /// The message as a template reads it: a call's arguments as the object they spell (Hugging
    /// Face templates write them with `tojson`), not OpenAI's JSON text.
    fn for_template(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(calls) = value.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
            for call in calls {
                let arguments = &mut call["function"]["arguments"];
                if let Some(parsed) = arguments.as_str().and_then(|a| serde_json::from_str(a).ok()) {
                    *arguments = parsed;
                }
            }
        }
        value
    }
}

/// How a template takes tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolStyle {
    /// It renders `tools` and the calls of earlier turns in the Hermes format itself.
    Template,
    /// It does not (or in another format): the tools go into the system prompt, earlier calls
    /// and results into plain turns, all in the Hermes format.
    SystemPrompt,
}

/// A compiled chat template with the special-token texts it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    tool_style: ToolStyle,
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported here, not at the first render.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string()).map_err(|e| Error::Template(format!("{e:#}")))?;
        let mut template = Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            tool_style: ToolStyle::SystemPrompt,
        };
        template.tool_style = template.probe_tools();
        Ok(template)
    }

    /// Whether the template writes a probe tool and the Hermes call tag when given tools.
    fn probe_tools(&self) -> ToolStyle {
        let probe = Tool::function("hearth_probe_tool", "probe", serde_json::json!({"type": "object"}));
        let messages = [Message::new("user", "probe")];
        match self.render_raw(&messages, std::slice::from_ref(&probe), true) {
            Ok(text) if text.contains("hearth_probe_tool") && text.contains(CALL_OPEN) => ToolStyle::Template,
            _ => ToolStyle::SystemPrompt,
        }
    }

    pub fn tool_style(&self) -> ToolStyle {
        self.tool_style
    }

    /// Renders the conversation and finds where each message's content landed in the text.
    ///
    /// The template is run a second time with every content wrapped in marker characters
    /// that occur nowhere else; when removing the markers gives back exactly the first
    /// rendering, the markers are the true spans. A template that trims contents is tried
    /// with trimmed contents too. A content whose place cannot be proven this way (the
    /// template dropped it, repeated it, or changed it depending on its value) has no span.
    pub fn render_with_spans(
        &self,
        messages: &[Message],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        let text = self.render(messages, tools, add_generation_prompt)?;
        let mut unused =
            ('\u{E000}'..='\u{F8FF}').filter(|&c| !text.contains(c) && !messages.iter().any(|m| m.content.contains(c)));
        let (Some(open), Some(close)) = (unused.next(), unused.next()) else {
            return Ok(Rendered { spans: vec![None; messages.len()], text });
        };
        for trimmed in [false, true] {
            let marked: Vec<Message> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    // An empty content has no place to find (and a template may test it).
                    if m.content.is_empty() {
                        return m.clone();
                    }
                    let content = if trimmed { m.content.trim() } else { &m.content };
                    m.with_content(format!("{open}{i}{close}{content}{open}{close}"))
                })
                .collect();
            // A template may refuse marked contents (raise_exception on a pattern): no spans.
            let Ok(marked) = self.render(&marked, tools, add_generation_prompt) else { break };
            if let Some(spans) = unmark(&marked, open, close, messages.len())
                && spans.0 == text
            {
                return Ok(Rendered { text, spans: spans.1 });
            }
        }
        Ok(Rendered { spans: vec![None; messages.len()], text })
    }

    /// Renders the conversation with the tools offered (none: `&[]`); with
    /// `add_generation_prompt` the text ends where the assistant's reply begins.
    pub fn render(&self, messages: &[Message], tools: &[Tool], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidPrompt("no messages".into()));
        }
        let uses_tools = !tools.is_empty() || messages.iter().any(Message::uses_tools);
        if self.tool_style == ToolStyle::SystemPrompt && uses_tools {
            return self.render_raw(&hermes_messages(messages, tools), &[], add_generation_prompt);
        }
        self.render_raw(messages, tools, add_generation_prompt)
    }

    fn render_raw(&self, messages: &[Message], tools: &[Tool], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        let messages: Vec<serde_json::Value> = messages.iter().map(Message::for_template).collect();
        let tools = (!tools.is_empty()).then_some(tools);
        template
            .render(context! {
                messages => minijinja::value::Serde(messages),
                tools => minijinja::value::Serde(tools),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| Error::Template(format!("{e:#}")))
    }
}

/// The conversation in plain turns for a template without tools: the tools appended to the
/// system prompt (one is added when there is none), earlier calls written into the assistant's
/// text, and each run of tool results one user turn of `<tool_response>` blocks.
fn hermes_messages(messages: &[Message], tools: &[Tool]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let prompt = hermes_system_prompt(tools);
        match messages.first() {
            Some(m) if m.role == "system" => {}
            _ => out.push(Message::new("system", prompt.clone())),
        }
    }
    for (i, m) in messages.iter().enumerate() {
        if i == 0 && m.role == "system" && !tools.is_empty() {
            out.push(Message::new("system", format!("{}\n\n{}", m.content, hermes_system_prompt(tools))));
            continue;
        }
        if m.role == "tool" {
            let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
            match out.last_mut() {
                Some(last) if last.role == "user" && i > 0 && messages[i - 1].role == "tool" => {
                    last.content = format!("{}\n{block}", last.content);
                }
                _ => out.push(Message::new("user", block)),
            }
            continue;
        }
        let mut text = m.content.clone();
        for call in m.tool_calls.iter().flatten() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&hermes_call_text(call));
        }
        out.push(Message::new(m.role.clone(), text));
    }
    out
}

/// A rendered conversation with the byte range of each message's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// One per message: where the template put its content, when that is known exactly.
    pub spans: Vec<Option<Range<usize>>>,
}

/// Removes `{open}{i}{close}` .. `{open}{close}` markers from `marked`, returning the text
/// without them and where each message's content sits in it. `None` if the markers are not
/// well nested (the template cut into a content). A content rendered more than once gets no
/// span: which copy is "the" content is not for us to guess.
fn unmark(marked: &str, open: char, close: char, n: usize) -> Option<(String, Vec<Option<Range<usize>>>)> {
    let mut text = String::with_capacity(marked.len());
    let mut spans: Vec<Option<Range<usize>>> = vec![None; n];
    let mut copies = vec![0usize; n];
    let mut inside: Option<(usize, usize)> = None;
    let mut rest = marked;
    while let Some(at) = rest.find(open) {
        text.push_str(&rest[..at]);
        rest = &rest[at + open.len_utf8()..];
        let end = rest.find(close)?;
        let tag = &rest[..end];
        rest = &rest[end + close.len_utf8()..];
        match (tag, inside) {
            ("", Some((i, start))) => {
                spans[i] = Some(start..text.len());
                inside = None;
            }
            (digits, None) => {
                let i: usize = digits.parse().ok().filter(|&i| i < n)?;
                copies[i] += 1;
                inside = Some((i, text.len()));
            }
            _ => return None,
        }
    }
    if inside.is_some() || rest.contains(close) {
        return None;
    }
    text.push_str(rest);
    for (span, &count) in spans.iter_mut().zip(&copies) {
        if count != 1 {
            *span = None;
        }
    }
    Some((text, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_adds_default_system_and_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let text = t.render(&[Message::new("user", "Hi")], &[], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system =
            t.render(&[Message::new("system", "Be brief."), Message::new("user", "Hi")], &[], false).unwrap();
        assert_eq!(with_system, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn spans_are_where_the_contents_are() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let messages = [Message::new("user", "Hi <|im_end|> there"), Message::new("assistant", " ok ")];
        let r = t.render_with_spans(&messages, &[], true).unwrap();
        assert_eq!(r.text, t.render(&messages, &[], true).unwrap());
        for (m, span) in messages.iter().zip(&r.spans) {
            assert_eq!(&r.text[span.clone().unwrap()], m.content);
        }
        // The span of the first message is the second occurrence of "Hi": the default
        // system prompt comes first.
        assert!(r.spans[0].as_ref().unwrap().start > r.text.find("SmolLM").unwrap());
    }

    #[test]
    fn trimmed_contents_have_spans_and_dropped_ones_have_none() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role != 'system' %}[{{ m.content | trim }}]{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let messages = [Message::new("system", "sys"), Message::new("user", "  a b  "), Message::new("user", "c")];
        let r = t.render_with_spans(&messages, &[], false).unwrap();
        assert_eq!(r.text, "[a b][c]");
        assert_eq!(r.spans, vec![None, Some(1..4), Some(6..7)]);
        // Contents the template tests by value cannot be placed.
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.content == 'x' %}X{% else %}{{ m.content }}{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let r = t.render_with_spans(&[Message::new("user", "x")], &[], false).unwrap();
        assert_eq!((r.text.as_str(), r.spans), ("X", vec![None]));
        // Repeated contents are not placed either.
        let t = ChatTemplate::new("{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}", "", "").unwrap();
        let r = t.render_with_spans(&[Message::new("user", "ab")], &[], false).unwrap();
        assert_eq!((r.text.as_str(), r.spans), ("abab", vec![None]));
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{{ messages[0].content.strip() }}{% if messages|length > 1 %}{{ raise_exception('one only') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[Message::new("user", "  x  ")], &[], false).unwrap(), "x");
        let err = t.render(&[Message::new("user", "a"), Message::new("user", "b")], &[], false).unwrap_err();
        assert!(err.to_string().contains("one only"), "{err}");
    }

    #[test]
    fn endless_template_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t.render(&[Message::new("user", "a")], &[], false), Err(Error::Template(_))));
    }

    /// A call of `f` with `{"x": 1}`.
    fn call_f() -> crate::text::tools::ToolCall {
        crate::text::tools::ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: crate::text::tools::FunctionCall { name: "f".into(), arguments: "{\"x\": 1}".into() },
        }
    }

    #[test]
    fn a_template_without_tools_gets_them_in_the_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(t.tool_style(), ToolStyle::SystemPrompt);
        let tool = Tool::function("f", "does f", serde_json::json!({"type": "object"}));
        let call = call_f();
        let mut asked = Message::new("assistant", "");
        asked.tool_calls = Some(vec![call]);
        let messages = [Message::new("user", "q"), asked, Message::new("tool", "r1"), Message::new("tool", "r2")];
        let r = t.render_with_spans(&messages, std::slice::from_ref(&tool), true).unwrap();
        let system = format!("<|im_start|>system\n{}<|im_end|>\n", hermes_system_prompt(&[tool]));
        assert_eq!(
            r.text,
            format!(
                "{system}<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{{\"name\": \"f\", \"arguments\": {{\"x\":1}}}}\n</tool_call><|im_end|>\n\
                 <|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
            )
        );
        for (m, span) in messages.iter().zip(&r.spans) {
            if let Some(span) = span {
                assert_eq!(r.text[span.clone()], m.content);
            }
        }
        assert!(r.spans[0].is_some() && r.spans[2].is_some() && r.spans[3].is_some(), "{:?}", r.spans);
    }

    #[test]
    fn a_template_that_writes_tool_calls_takes_the_tools() {
        let source = "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %} Reply with <tool_call>.{% endif %}{% for m in messages %}[{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %}]{% endfor %}";
        let t = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(t.tool_style(), ToolStyle::Template);
        let call = call_f();
        let mut asked = Message::new("assistant", "");
        asked.tool_calls = Some(vec![call]);
        // The arguments reach the template as an object, not as OpenAI's JSON text.
        assert_eq!(t.render(&[asked], &[], false).unwrap(), "[assistant:{\"x\": 1}]");
        assert!(ChatTemplate::new(SMOLLM2, "", "").unwrap().tool_style() == ToolStyle::SystemPrompt);
    }

    #[test]
    fn syntax_error_is_reported_at_compile_time() {
        assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(Error::Template(_))));
    }
}
