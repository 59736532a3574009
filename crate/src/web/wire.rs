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
        if let Some(tools) = nested("tools") {
            // A parameter schema sits three levels down: the list, the tool, its function.
            if js_depth(&tools, MAX_SCHEMA_DEPTH + 5)? > MAX_SCHEMA_DEPTH + 4 {
                return Err(bad_options(format!("a tool's parameters nest more than {MAX_SCHEMA_DEPTH} levels deep")));
            }
        }
        if let Some(grammar) = nested("grammar") {
            // Deserializing recurses per level: a hostile depth would overflow the stack.
            let depth = js_depth(&grammar, MAX_SCHEMA_DEPTH + 2)?;
            if depth > MAX_SCHEMA_DEPTH + 1 {
                return Err(bad_options(format!("the grammar nests more than {MAX_SCHEMA_DEPTH} levels deep")));
            }
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

/// How deeply `value`'s objects and arrays nest, counted without recursion and up to `limit`
/// (deeper is reported as `limit + 1`); refused past a million values.
fn js_depth(value: &JsValue, limit: usize) -> Result<usize, JsValue> {
    let mut deepest = 0;
    let mut seen = 0usize;
    let mut stack = vec![(value.clone(), 0usize)];
    while let Some((v, depth)) = stack.pop() {
        seen += 1;
        if seen > 1_000_000 {
            return Err(bad_options("the grammar has more than a million values"));
        }
        if depth > limit {
            return Ok(limit + 1);
        }
        let Some(object) = v.dyn_ref::<js_sys::Object>() else { continue };
        if v.is_function() {
            continue;
        }
        deepest = deepest.max(depth + 1);
        for child in js_sys::Object::values(object).iter() {
            stack.push((child, depth + 1));
        }
    }
    Ok(deepest)
}

pub(super) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(
            &serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true).serialize_missing_as_null(true),
        )
        .map_err(|e| js_error(Error::Device(format!("serializing a result: {e}"))))
}
