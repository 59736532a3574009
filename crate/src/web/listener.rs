//! A generation's view of the page: its text callback, its `AbortSignal`, and the pauses that
//! let the event loop run on the CPU path.

use super::*;

/// A generation's view of the page: its text callback and its `AbortSignal`.
pub(super) struct WebListener {
    /// `None` when nothing streams (scoring).
    pub(super) on_text: Option<Function>,
    /// An `AbortSignal`, or `undefined`.
    pub(super) signal: JsValue,
    /// The model runs on the CPU: yield to the event loop between steps (see [`event_loop`]).
    pub(super) on_cpu: bool,
    /// The caller's flow control: a function returning a promise to await before each step.
    pub(super) pause: Option<Function>,
}

impl Listener for WebListener {
    /// `false` from the callback stops generation; a throw is an error of its own (the page's
    /// code failed, which is not a request to stop).
    fn on_text(&mut self, text: &str, token: u32) -> crate::error::Result<Control> {
        let Some(on_text) = &self.on_text else { return Ok(Control::Continue) };
        match on_text.call2(&JsValue::NULL, &JsValue::from_str(text), &token.into()) {
            Ok(v) if v == JsValue::FALSE => Ok(Control::Stop),
            Ok(_) => Ok(Control::Continue),
            Err(thrown) => Err(Error::Callback(js_message(&thrown))),
        }
    }

    /// A whole call goes to the same callback, as its third argument (the text is empty).
    fn on_tool_call(&mut self, call: &ToolCall) -> crate::error::Result<Control> {
        let Some(on_text) = &self.on_text else { return Ok(Control::Continue) };
        let call = to_js(call).map_err(|e| Error::Callback(js_message(&e)))?;
        match on_text.call3(&JsValue::NULL, &JsValue::from_str(""), &JsValue::UNDEFINED, &call) {
            Ok(v) if v == JsValue::FALSE => Ok(Control::Stop),
            Ok(_) => Ok(Control::Continue),
            Err(thrown) => Err(Error::Callback(js_message(&thrown))),
        }
    }

    fn aborted(&self) -> bool {
        is_aborted(&self.signal)
    }

    fn pause(&self) -> Option<crate::generate::types::Pause> {
        let wait =
            self.pause.as_ref().and_then(|f| f.call0(&JsValue::NULL).ok()).and_then(|p| p.dyn_into::<Promise>().ok());
        match (wait, self.on_cpu) {
            (None, false) => None,
            (None, true) => Some(event_loop::next_task()),
            (Some(wait), on_cpu) => Some(Box::pin(async move {
                // A rejected pause is no reason to fail the generation: go on.
                let _ = wasm_bindgen_futures::JsFuture::from(wait).await;
                if on_cpu {
                    event_loop::next_task().await;
                }
            })),
        }
    }
}
