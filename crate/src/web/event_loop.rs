//! Yielding to the browser's event loop from inside a generation.
//!
//! On the CPU path a whole generation is one synchronous run of Rust (nothing it awaits is
//! pending), so the page or worker could not process a click or a message, and an
//! `AbortSignal` could never fire, until it ended. Between steps the session awaits
//! [`next_task`]: a `MessageChannel` message, which the browser queues as a task behind those
//! already waiting (an abort message included) and, unlike `setTimeout(0)`, never delays by
//! the 4 ms clamp of nested timers.

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::generate::types::Pause;

/// A future that resolves in a later task of the event loop (at once where this global has no
/// `MessageChannel`).
pub(super) fn next_task() -> Pause {
    let promise = Promise::new(&mut |resolve: Function, _reject: Function| {
        if post_to_self(&resolve).is_err() {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    Box::pin(async move {
        let _ = JsFuture::from(promise).await;
    })
}

/// Makes a channel whose first port calls `resolve` on a message, and posts one to it.
fn post_to_self(resolve: &Function) -> Result<(), JsValue> {
    let global = js_sys::global();
    let constructor: Function = Reflect::get(&global, &"MessageChannel".into())?.dyn_into()?;
    let channel = Reflect::construct(&constructor, &Array::new())?;
    let (receiver, sender) = (Reflect::get(&channel, &"port1".into())?, Reflect::get(&channel, &"port2".into())?);
    // Setting `onmessage` starts the port.
    Reflect::set(&receiver, &"onmessage".into(), resolve)?;
    let post: Function = Reflect::get(&sender, &"postMessage".into())?.dyn_into()?;
    post.call1(&sender, &JsValue::NULL)?;
    Ok(())
}
