//! The wire types ([`crate::wire`]) read from and written to JavaScript values: every key of
//! an options object checked (nested ones too), results as plain objects.

use super::*;

/// Parses a JS options object (`undefined` or `null`: the defaults), refusing keys not in
/// `fields` (serde-wasm-bindgen reads only the fields it looks for, so `deny_unknown_fields`
/// alone does not catch them).
pub(super) fn options_from_js<T: Default + serde::de::DeserializeOwned>(
    options: JsValue,
    fields: &[&str],
) -> Result<T, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(T::default());
    }
    let object = options.dyn_ref::<js_sys::Object>().ok_or_else(|| bad_options("options must be an object"))?;
    for key in js_sys::Object::keys(object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !fields.contains(&key.as_str()) {
            return Err(bad_options(format!("unknown option `{key}` (known: {})", fields.join(", "))));
        }
    }
    serde_wasm_bindgen::from_value(options).map_err(|e| bad_options(serde_message(e)))
}

/// A generation's options from JS, the nested objects' keys checked as the top level's are.
pub(super) fn generate_request(options: JsValue) -> Result<GenerateRequest, JsValue> {
    if let Some(object) = options.dyn_ref::<js_sys::Object>() {
        let nested = |key: &str| {
            Some(js_sys::Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED))
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        if let Some(speculative) = nested("speculative") {
            options_from_js::<SpeculativeOptions>(speculative, &GenerateRequest::SPECULATIVE_FIELDS)?;
        }
        if let Some(early_exit) = nested("early_exit") {
            options_from_js::<EarlyExitOptions>(early_exit, &GenerateRequest::EARLY_EXIT_FIELDS)?;
        }
        if let Some(grammar) = nested("grammar") {
            let kind = js_sys::Reflect::get(&grammar, &JsValue::from_str("type")).ok().and_then(|t| t.as_string());
            // An unknown type is refused by serde below, naming the known ones.
            if let Some(keys) = kind.as_deref().and_then(Grammar::keys) {
                let object =
                    grammar.dyn_ref::<js_sys::Object>().ok_or_else(|| bad_options("grammar must be an object"))?;
                for key in js_sys::Object::keys(object).iter() {
                    let key = key.as_string().unwrap_or_default();
                    if !keys.contains(&key.as_str()) {
                        return Err(bad_options(format!("unknown grammar key `{key}` (known: {})", keys.join(", "))));
                    }
                }
            }
        }
    }
    options_from_js(options, &GenerateRequest::FIELDS)
}

pub(super) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(
            &serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true).serialize_missing_as_null(true),
        )
        .map_err(|e| js_error(Error::Device(format!("serializing a result: {e}"))))
}
