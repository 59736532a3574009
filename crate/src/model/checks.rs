//! The checks made before anything reaches the device: every tensor the config needs, in
//! its shape, nothing the model would silently ignore, and every buffer within the device's
//! limits.

use crate::backend::device::Limits;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::tensor_table::{FUSED, Role, TensorSpec, tensor_table};
use crate::load::{ROPE_TENSORS, TensorSource, WeightFormat};
use crate::quant::BLOCK;
use crate::quant::packed::{QuantFormat, Scales, fusable_formats};

/// Checks, before anything is allocated, that `source` has every tensor a model of `c` needs
/// in the right shape, nothing the model would silently ignore, and that every device buffer
/// and the host memory the upload needs fit `limits`: the largest matrix in passing, `window`
/// bytes of the file held besides (a streamed load's part), and on the CPU path every weight.
pub fn check(
    c: &ModelConfig,
    source: &dyn TensorSource,
    format: WeightFormat,
    limits: &Limits,
    window: u64,
) -> Result<()> {
    let tied = !source.contains("output.weight");
    let table = tensor_table(c, tied);
    for spec in &table {
        match source.shape(&spec.name)? {
            None => return Err(Error::MissingTensor(spec.name.clone())),
            Some(shape) if shape != spec.shape => {
                return Err(Error::TensorShape {
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: shape,
                });
            }
            Some(_) => {}
        }
    }
    if let Some(extra) =
        source.names().into_iter().find(|n| !ROPE_TENSORS.contains(&n.as_str()) && !table.iter().any(|s| &s.name == n))
    {
        return Err(Error::config(format!(
            "tensor {extra} is not used by the {} architecture: refusing rather than running the model without it",
            c.arch.name
        )));
    }

    // One device buffer (two when packed: codes and parameters) per fused matrix.
    let mut largest_host = 0u64;
    // What the packed (or dense) weights hold once loaded.
    let mut resident = 0u64;
    let groups = std::iter::once(vec!["token_embd.weight".to_string()])
        .chain(
            (0..c.n_layers)
                .flat_map(|i| FUSED.iter().map(move |g| g.iter().map(|s| format!("blk.{i}.{s}.weight")).collect())),
        )
        .chain((!tied).then(|| vec!["output.weight".to_string()]));
    for group in groups {
        let specs: Vec<&TensorSpec> = group.iter().filter_map(|n| table.iter().find(|s| &s.name == n)).collect();
        let rows: u64 = specs.iter().map(|s| s.shape[0] as u64).sum();
        let cols = specs[0].shape[1] as u64;
        let what = || format!("the matrix {} ({rows} x {cols}, {})", group.join(" + "), format.name());
        // The embedding and an untied head are split over as many buffers as their rows need:
        // one row must fit.
        let split = specs.len() == 1 && specs[0].shape[0] == c.vocab && !group[0].starts_with("blk.");
        let check = |bytes: u64| match split {
            true => limits.check_buffer(what, bytes / rows),
            false => limits.check_buffer(what, bytes),
        };
        // Each part's codes and scales: as stored, or as its fallback quantizes floats.
        let mut stored = Vec::new();
        for s in &specs {
            let fallback = match s.role {
                Role::Matrix { fallback } => fallback,
                _ => QuantFormat::Q4,
            };
            stored.push(format.packed_as(source, &s.name, fallback)?);
        }
        // f32 weights: dense tensors or F32 codes (`WeightFormat::dense_on`), the same bytes
        // but for a ragged row's padding.
        let dense = format == WeightFormat::F32;
        // A packed matrix's codes, parameters and super-block pairs, in bytes: 5- and 6-bit
        // codes counted widened to 8 bits, as devices without narrow kernels (WebGPU, wasm)
        // keep them, so that the estimate is never below what the upload takes.
        let packed = |f: QuantFormat, scales: Scales, rows: u64| {
            let f = f.widened();
            let blocks = rows * cols.div_ceil(BLOCK as u64);
            let supers = if scales == Scales::Super { rows * cols.div_ceil(256) } else { 0 };
            (
                blocks * f.words_per_block() as u64 * 4,
                (blocks * (f.words_per_block() + f.params_per_block()) as u64 + supers) * 4,
            )
        };
        // A float source is dequantized first; packed parts are copied, fused and reordered.
        let from_floats = |s: &TensorSpec, kept| -> Result<u64> {
            Ok(if source.stored_format(&s.name)? != Some(kept) { s.shape[0] as u64 * cols * 4 } else { 0 })
        };
        let bytes = if dense {
            let bytes = rows * cols * 4;
            let padded = rows * cols.next_multiple_of(BLOCK as u64) * 4;
            resident += padded;
            check(padded)?;
            // The parts, their fused copy, and the upload's own.
            3 * bytes
        } else if fusable_formats(&stored) {
            // Mixed integer codes fuse as 8-bit ones; float codes only with their own.
            let widest = stored.iter().map(|&(f, _)| f.widened()).max_by_key(|f| f.words_per_block());
            let widest = widest.unwrap_or(QuantFormat::Q4);
            let (codes, all) = packed(widest, stored[0].1, rows);
            check(codes)?;
            resident += all;
            let mut floats = 0;
            for (s, &kept) in specs.iter().zip(&stored) {
                floats += from_floats(s, kept)?;
            }
            floats + 3 * all
        } else {
            // Parts whose blocks have no common form: each its own matrix.
            let mut bytes = 0;
            for (s, &(f, scales)) in specs.iter().zip(&stored) {
                let (codes, all) = packed(f, scales, s.shape[0] as u64);
                limits.check_buffer(
                    || format!("the matrix {} ({} x {cols}, {})", s.name, s.shape[0], format.name()),
                    codes,
                )?;
                resident += all;
                bytes += from_floats(s, (f, scales))? + 2 * all;
            }
            bytes
        };
        largest_host = largest_host.max(bytes);
    }
    let resident = if limits.weights_on_host { resident } else { 0 };
    limits.check_host(
        || format!("loading this model with {} weights", format.name()),
        largest_host.saturating_add(window).saturating_add(resident),
    )
}
