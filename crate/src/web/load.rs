//! What a load does before and around the upload: the file's checks, its copy into wasm
//! memory, and progress reports.

use super::*;

/// A model file parsed and checked for `device`, its KV cache `kv` included: what a load
/// checks before it drops the model loaded now.
pub(super) fn prepare_model<'a>(
    bytes: &'a [u8],
    device: &Device,
    weights: WeightFormat,
    kv: &KvOptions,
) -> crate::error::Result<crate::engine::Prepared<'a>> {
    let prepared = Engine::prepare(bytes, device, weights)?;
    KvCache::plan(prepared.config(), kv, &Limits::of(device))?;
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
    let len = bytes.length() as usize;
    let limits = Limits::of(device);
    limits.check_host(|| format!("a model file of {len} bytes"), len as u64).map_err(js_error)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        js_error(Error::ResourceLimit {
            what: format!("a model file of {len} bytes"),
            needed: len as u64,
            limit: crate::backend::device::HOST_MEMORY_LIMIT,
            allowed: limits.host_bytes_left,
        })
    })?;
    out.resize(len, 0);
    bytes.copy_to(&mut out);
    Ok(out)
}
