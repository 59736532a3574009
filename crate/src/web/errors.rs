//! How failures cross into JavaScript: every error as a JS `Error` object whose `kind` property
//! is the core's stable [`Error::kind`] and whose message is the error's text, so the TypeScript
//! layer reads the kind instead of parsing it back out of a string.

use super::*;

/// The error, without repeating its category when the message starts with it (`x`, not
/// `bad options: x`), and its kind as the `kind` property.
pub(super) fn js_error(e: Error) -> JsValue {
    let kind = e.kind();
    let text = e.to_string();
    let category = format!("{}: ", kind.replace('_', " "));
    let error = js_sys::Error::new(text.strip_prefix(&category).unwrap_or(&text));
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&error, &"kind".into(), &kind.into());
    error.into()
}

pub(super) fn bad_options(msg: impl std::fmt::Display) -> JsValue {
    js_error(Error::BadOptions(msg.to_string()))
}

pub(super) fn busy(msg: impl std::fmt::Display) -> JsValue {
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
