//! What a load does before and around the upload: the file's checks, its copy into wasm
//! memory, and progress reports.

use super::*;

/// A model's files (one, or every shard of a split model) parsed and checked, its KV cache
/// `kv` included, against `limits` (a device's): what a load checks before it drops the
/// model loaded now.
pub(super) fn prepare_model<'a>(
    files: &'a [Vec<u8>],
    weights: WeightFormat,
    kv: &KvOptions,
    limits: &Limits,
) -> crate::error::Result<crate::engine::Prepared<'a>> {
    let files: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let prepared = Engine::prepare_within(&files, weights, limits)?;
    KvCache::plan(prepared.config(), kv, limits)?;
    Ok(prepared)
}

/// A load's `progress(uploaded, total)` callback as the core calls it.
pub(super) fn reporter(progress: Option<Function>) -> impl FnMut(usize, usize) {
    move |done: usize, total: usize| {
        if let Some(f) = &progress {
            let _ = f.call2(&JsValue::NULL, &(done as u32).into(), &(total as u32).into());
        }
    }
}

/// The bytes of a model, copied into wasm memory only after checking that they fit: a copy
/// that cannot be allocated would abort the instance.
pub(super) fn model_bytes(bytes: &Uint8Array, device: &Device) -> Result<Vec<u8>, JsValue> {
    Ok(copy_in(std::slice::from_ref(bytes), device)?.pop().expect("one file"))
}

/// A model's files as the bindings take them: one `Uint8Array`, or an array of them (every
/// shard of a split model, in any order), copied into wasm memory after checking that all fit.
pub(super) fn model_files(files: &JsValue, device: &Device) -> Result<Vec<Vec<u8>>, JsValue> {
    let bad = |m: &str| js_error(Error::BadOptions(m.into()));
    let arrays: Vec<Uint8Array> = if let Some(one) = files.dyn_ref::<Uint8Array>() {
        vec![one.clone()]
    } else if let Some(list) = files.dyn_ref::<js_sys::Array>() {
        if list.length() == 0 || list.length() as usize > crate::format::split::MAX_SHARDS {
            return Err(bad("a split model is 1 to 99999 files"));
        }
        list.iter()
            .map(|v| v.dyn_into::<Uint8Array>().map_err(|_| bad("every file of a split model must be a Uint8Array")))
            .collect::<Result<_, _>>()?
    } else {
        return Err(bad("the model must be a Uint8Array, or an array of them (a split model's files)"));
    };
    copy_in(&arrays, device)
}

/// Copies `arrays` into wasm memory once all of them are known to fit.
fn copy_in(arrays: &[Uint8Array], device: &Device) -> Result<Vec<Vec<u8>>, JsValue> {
    let total: u64 = arrays.iter().map(|a| a.length() as u64).sum();
    let what = || match arrays {
        [_] => format!("a model file of {total} bytes"),
        _ => format!("a model of {} files, {total} bytes", arrays.len()),
    };
    let limits = Limits::of(device);
    limits.check_host(what, total).map_err(js_error)?;
    let mut out = Vec::with_capacity(arrays.len());
    for a in arrays {
        let len = a.length() as usize;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| {
            js_error(Error::ResourceLimit {
                what: what(),
                needed: total,
                limit: crate::backend::device::HOST_MEMORY_LIMIT,
                allowed: limits.host_bytes_left,
            })
        })?;
        bytes.resize(len, 0);
        a.copy_to(&mut bytes);
        out.push(bytes);
    }
    Ok(out)
}

/// A load's options, parsed: where, in which weight format, with which cache, in which
/// activation mode.
pub(super) struct LoadChoice {
    pub(super) device: Device,
    pub(super) weights: WeightFormat,
    pub(super) kv: KvOptions,
    pub(super) activations: Activations,
}
