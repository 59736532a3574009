//! How failures cross into JavaScript: every error as `kind: message` in a `JsError`.

use super::*;

/// `kind: message`, without repeating the category when the message starts with it
/// (`bad_options: x`, not `bad_options: bad options: x`).
pub(super) fn js_error(e: Error) -> JsError {
    let kind = e.kind();
    let text = e.to_string();
    let category = format!("{}: ", kind.replace('_', " "));
    JsError::new(&format!("{kind}: {}", text.strip_prefix(&category).unwrap_or(&text)))
}

pub(super) fn bad_options(msg: impl std::fmt::Display) -> JsError {
    js_error(Error::BadOptions(msg.to_string()))
}

pub(super) fn busy(msg: impl std::fmt::Display) -> JsError {
    js_error(Error::Busy(msg.to_string()))
}

/// The message of a thrown JS value, for errors that carry it on.
pub(super) fn js_message(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// serde-wasm-bindgen's errors print as JS errors (`Error: ...`); keep the message.
pub(super) fn serde_message(e: serde_wasm_bindgen::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("Error: ").unwrap_or(&text).to_string()
}
