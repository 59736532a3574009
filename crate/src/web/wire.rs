//! The values that cross the boundary: generation options as the TypeScript layer sends them
//! (checked key by key), the weight-pruning options, and the model info a load reports.

use super::*;

/// Options of one generation, flat and snake_case, as the TypeScript layer sends them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct WebGenerateOptions {
    pub(super) max_tokens: Option<usize>,
    pub(super) temperature: Option<f32>,
    pub(super) top_k: Option<usize>,
    pub(super) top_p: Option<f32>,
    pub(super) min_p: Option<f32>,
    pub(super) repetition_penalty: Option<f32>,
    pub(super) seed: Option<f64>,
    pub(super) stop: Vec<String>,
    pub(super) ignore_eos: bool,
    /// Chat only: most prompt tokens before earlier messages are pruned.
    pub(super) prune_budget: Option<usize>,
    pub(super) prune_method: Option<PromptPruneMethod>,
    /// `{ method, max_draft, ngram, draft_layers }`, each optional.
    pub(super) speculative: Option<SpeculativeOptions>,
    /// `{ layers, threshold, measure, shortlist }`, `layers` required.
    pub(super) early_exit: Option<EarlyExitOptions>,
}

/// Parses a JS options object (`undefined` or `null`: the defaults), refusing keys not in
/// `fields` (serde-wasm-bindgen reads only the fields it looks for, so `deny_unknown_fields`
/// alone does not catch them).
pub(super) fn options_from_js<T: Default + serde::de::DeserializeOwned>(
    options: JsValue,
    fields: &[&str],
) -> Result<T, JsError> {
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

/// `load_pruned`'s options: [`WeightPruneOptions`] and the calibration text.
#[derive(Default, Deserialize)]
pub(super) struct WebPrune {
    #[serde(default)]
    pub(super) layers: crate::analysis::weight_pruning::LayerChoice,
    #[serde(default)]
    pub(super) heads: usize,
    #[serde(default)]
    pub(super) ffn: f64,
    pub(super) calibration: Option<String>,
}

impl WebPrune {
    pub(super) const FIELDS: [&'static str; 4] = ["layers", "heads", "ffn", "calibration"];
}

pub(super) const KV_FIELDS: [&str; 5] = ["capacity", "capacity_bytes", "policy", "sinks", "recent"];

impl WebGenerateOptions {
    pub(super) const FIELDS: [&'static str; 13] = [
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "seed",
        "stop",
        "ignore_eos",
        "prune_budget",
        "prune_method",
        "speculative",
        "early_exit",
    ];
    pub(super) const SPECULATIVE_FIELDS: [&'static str; 4] = ["method", "max_draft", "ngram", "draft_layers"];
    pub(super) const EARLY_EXIT_FIELDS: [&'static str; 4] = ["layers", "threshold", "measure", "shortlist"];

    pub(super) fn from_js(options: JsValue) -> Result<Self, JsError> {
        // The nested objects' keys are checked as the top level's are.
        if let Some(object) = options.dyn_ref::<js_sys::Object>() {
            let nested = |key: &str| {
                Some(js_sys::Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED))
                    .filter(|v| !v.is_undefined() && !v.is_null())
            };
            if let Some(speculative) = nested("speculative") {
                options_from_js::<SpeculativeOptions>(speculative, &Self::SPECULATIVE_FIELDS)?;
            }
            if let Some(early_exit) = nested("early_exit") {
                options_from_js::<EarlyExitOptions>(early_exit, &Self::EARLY_EXIT_FIELDS)?;
            }
        }
        options_from_js(options, &Self::FIELDS)
    }

    pub(super) fn prune(&self) -> PromptPruneOptions {
        PromptPruneOptions { method: self.prune_method.unwrap_or_default(), budget: self.prune_budget }
    }

    pub(super) fn to_options(&self) -> Result<GenerateOptions, JsError> {
        let d = SamplerOptions::default();
        let seed = match self.seed {
            None => None,
            Some(s) if s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_991.0 => Some(s as u64),
            Some(s) => return Err(bad_options(format!("seed {s} must be a non-negative integer"))),
        };
        Ok(GenerateOptions {
            max_tokens: self.max_tokens.unwrap_or(GenerateOptions::default().max_tokens),
            sampler: SamplerOptions {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                min_p: self.min_p.unwrap_or(d.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
                seed,
                ..d
            },
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            speculative: self.speculative.clone(),
            early_exit: self.early_exit.clone(),
        })
    }
}

/// What [`WasmEngine::load`] reports about the model.
#[derive(Serialize)]
pub(super) struct ModelInfo {
    pub(super) name: String,
    pub(super) vocab: usize,
    pub(super) d_model: usize,
    pub(super) n_layers: usize,
    pub(super) context_length: usize,
    pub(super) kv_capacity: usize,
    pub(super) kv_policy: &'static str,
    pub(super) kv_sinks: usize,
    pub(super) weights: &'static str,
    pub(super) weight_bytes: usize,
    pub(super) has_chat_template: bool,
    /// `"cpu"` or `"webgpu"`.
    pub(super) device: &'static str,
    /// The CPU kernels' SIMD level in this build (`"simd128"` or `"scalar"`).
    pub(super) cpu_isa: &'static str,
    /// Generations served together at most (more wait their turn).
    pub(super) max_streams: usize,
}

pub(super) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(
            &serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true).serialize_missing_as_null(true),
        )
        .map_err(|e| js_error(Error::Device(format!("serializing a result: {e}"))))
}
