//! What a chosen token becomes: streamed text (whole UTF-8 characters, stop strings held back
//! until they are ruled out, tool calls taken out whole), and whether the generation ends with
//! it. Shared by a session's own loop and by conversations decoded together
//! ([`crate::generate::batch`]).

use crate::error::Result;
use crate::generate::logprobs::TokenLogprob;
use crate::generate::types::{Control, FinishReason, GenerateOptions, Generation, GenerationStats, Listener};
use crate::text::tokenizer::{TextStream, Tokenizer};
use crate::text::tools::{Piece, ToolCall, ToolCallScan, fnv};

/// What a generation wrote, once it ended.
pub(crate) struct Emitted {
    /// The text (without tool calls, when tools were offered).
    pub text: String,
    /// `Stop` becomes `ToolCalls` when the reply called tools.
    pub finish_reason: FinishReason,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_error: Option<String>,
}

impl Emitted {
    /// The generation this output ends: one place for a session's loop and a batch's.
    pub fn into_generation(
        self,
        tokens: Vec<u32>,
        stats: GenerationStats,
        logprobs: Option<Vec<TokenLogprob>>,
    ) -> Generation {
        Generation {
            tokens,
            text: self.text,
            finish_reason: self.finish_reason,
            stats,
            pruned: None,
            logprobs,
            tool_calls: self.tool_calls,
            tool_call_error: self.tool_call_error,
        }
    }
}

/// One generation's output so far.
pub(crate) struct Emitter {
    ignore_eos: bool,
    max_tokens: usize,
    /// The prompt, then every token taken.
    pub history: Vec<u32>,
    pub generated: Vec<u32>,
    stream: TextStream,
    stops: StopScan,
    /// With tools offered: the calls found in the text, and the text passed on.
    tools: Option<(ToolCallScan, String)>,
}

impl Emitter {
    pub fn new(prompt: &[u32], options: &GenerateOptions) -> Self {
        Self {
            ignore_eos: options.ignore_eos,
            max_tokens: options.max_tokens,
            history: prompt.to_vec(),
            generated: Vec::new(),
            stream: TextStream::new(),
            stops: StopScan::new(options.stop.clone()),
            tools: options.tool_set().is_ok_and(|t| t.active()).then(|| {
                let seed = prompt.iter().fold(0xcbf2_9ce4_8422_2325, |h, t| fnv(h, &t.to_le_bytes()));
                (ToolCallScan::new(seed), String::new())
            }),
        }
    }

    /// Passes `text` on: straight to the listener, or through the tool-call scan.
    fn emit(
        tools: &mut Option<(ToolCallScan, String)>,
        text: &str,
        token: u32,
        listener: &mut dyn Listener,
    ) -> Result<Control> {
        let Some((scan, passed)) = tools else {
            return if text.is_empty() { Ok(Control::Continue) } else { listener.on_text(text, token) };
        };
        for piece in scan.push(text) {
            let control = match piece {
                Piece::Text(text) => {
                    passed.push_str(&text);
                    listener.on_text(&text, token)?
                }
                Piece::Call(call) => listener.on_tool_call(&call)?,
            };
            if control == Control::Stop {
                return Ok(Control::Stop);
            }
        }
        Ok(Control::Continue)
    }

    /// Takes `token` (the listener hears its text): `Some` when the generation ends with it.
    /// An end-of-generation token is not kept; a token that completes a stop string or
    /// reaches `max_tokens` is.
    pub fn take(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
        listener: &mut dyn Listener,
    ) -> Result<Option<FinishReason>> {
        if !self.ignore_eos && tokenizer.is_end_of_generation(token) {
            return Ok(Some(FinishReason::Stop));
        }
        self.generated.push(token);
        self.history.push(token);
        let piece = self.stream.push(tokenizer, token)?;
        let (emit, stopped) = self.stops.push(&piece);
        if Self::emit(&mut self.tools, emit, token, listener)? == Control::Stop {
            return Ok(Some(FinishReason::Aborted));
        }
        if stopped {
            return Ok(Some(FinishReason::Stop));
        }
        if self.generated.len() >= self.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    /// Ends the generation: text held back (an unfinished character, a possible stop string)
    /// goes to the listener unless it stopped or was aborted, and so does the text of a tool
    /// call cut off before its end (with the reason), unless it was aborted.
    pub fn finish(
        mut self,
        tokenizer: &Tokenizer,
        reason: FinishReason,
        listener: &mut dyn Listener,
    ) -> Result<Emitted> {
        let last = *self.generated.last().unwrap_or(&0);
        if !matches!(reason, FinishReason::Stop | FinishReason::Aborted) {
            let rest = self.stream.finish(tokenizer)?;
            let (emit, _) = self.stops.push(&rest);
            let emit = emit.to_string() + self.stops.flush();
            Self::emit(&mut self.tools, &emit, last, listener)?;
        }
        let Some((mut scan, mut passed)) = self.tools.take() else {
            return Ok(Emitted {
                text: self.stops.into_text(),
                finish_reason: reason,
                tool_calls: None,
                tool_call_error: None,
            });
        };
        let (rest, tool_call_error) = scan.finish();
        for piece in rest.into_iter().filter(|_| reason != FinishReason::Aborted) {
            match piece {
                Piece::Text(text) => {
                    passed.push_str(&text);
                    listener.on_text(&text, last)?;
                }
                Piece::Call(call) => {
                    listener.on_tool_call(&call)?;
                }
            }
        }
        let calls = scan.calls().to_vec();
        let finish_reason =
            if reason == FinishReason::Stop && !calls.is_empty() { FinishReason::ToolCalls } else { reason };
        Ok(Emitted { text: passed, finish_reason, tool_calls: (!calls.is_empty()).then_some(calls), tool_call_error })
    }
}

/// Finds stop strings in streamed text, holding back any tail that could begin one.
struct StopScan {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopScan {
    fn new(stops: Vec<String>) -> Self {
        Self { stops, text: String::new(), emitted: 0 }
    }

    /// Adds `piece`; returns the text now safe to emit and whether a stop string was found.
    fn push(&mut self, piece: &str) -> (&str, bool) {
        let from = self.emitted;
        self.text.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min() {
            self.text.truncate(at);
            self.emitted = at;
            return (&self.text[from..at], true);
        }
        let held = self.stops.iter().map(|s| longest_prefix_suffix(&self.text[from..], s)).max().unwrap_or(0);
        self.emitted = self.text.len() - held;
        (&self.text[from..self.emitted], false)
    }

    /// Emits what was held back (generation ended without completing a stop string).
    fn flush(&mut self) -> &str {
        let from = self.emitted;
        self.emitted = self.text.len();
        &self.text[from..]
    }

    fn into_text(self) -> String {
        let mut text = self.text;
        text.truncate(self.emitted);
        text
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len()).rev().filter(|&n| stop.is_char_boundary(n)).find(|&n| text.ends_with(&stop[..n])).unwrap_or(0)
}
