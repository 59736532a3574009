//! Structured weight pruning on tiny random models: pruned records equal GGUF models whose
//! stored tensors lack those layers, rows and columns; Gemma 3 keeps each layer's attention;
//! Wanda's scores and block influence cut what carries nothing; pruning at load equals the file.

mod common;

use std::sync::Arc;

use common::*;
use hearth::{DeviceKind, Engine, Error, KvOptions, WeightFormat};

/// Weight types the int4 path keeps packed as stored, so a pruned model's matrices are the
/// source's bit for bit.
fn packed_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") || n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => Ty::Q4_0,
        n if n.ends_with("norm.weight") || n == "output.weight" => Ty::F32,
        _ => Ty::Q4_1,
    }
}

/// Writes `source` pruned as `pruning` says to a burnpack record, as `prune-weights` does.
fn pruned_pack(gguf: &[u8], pruning: &hearth::analysis::weight_pruning::WeightCut) -> Vec<u8> {
    use hearth::analysis::weight_pruning::PrunedWeights;
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, burnpack};
    let file = GgufFile::parse(gguf).unwrap();
    let parts = ModelParts::from_gguf(&file).unwrap();
    let config = parts.config.clone();
    burnpack::write(&pruning.parts(parts), &PrunedWeights::new(&file, &config, pruning.clone())).unwrap()
}

/// `tensors` with layer `l` renamed by `rename` (`None`: left out).
fn renumbered(tensors: &[StoredTensor], rename: impl Fn(usize) -> Option<usize>) -> Vec<StoredTensor> {
    tensors
        .iter()
        .filter_map(|t| {
            let mut t = t.clone();
            if let Some(rest) = t.name.strip_prefix("blk.") {
                let (l, tail) = rest.split_once('.').unwrap();
                t.name = format!("blk.{}.{tail}", rename(l.parse().unwrap())?);
            }
            Some(t)
        })
        .collect()
}

fn cpu_logits(engine: &Arc<Engine>, prompt: &[u32]) -> Vec<Vec<f32>> {
    pollster::block_on(engine.session(&KvOptions::with_capacity(32)).unwrap().logits_all(prompt)).unwrap()
}

/// A model with layer 1 dropped by `prune-weights`' path (the parts and tensors without it,
/// written as a burnpack record) gives the same logits, bit for bit, as the model a GGUF file
/// of the same stored tensors without that layer loads as.
#[test]
fn a_pruned_model_equals_the_model_without_those_layers() {
    use hearth::analysis::weight_pruning::{LayerChoice, WeightCut, WeightPruneOptions};
    let c = TinyConfig { context: 64, n_layers: 4, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, 64, false, &packed_types);
    let gguf = tiny_gguf(&c, &tensors);
    let file = hearth::format::gguf::GgufFile::parse(&gguf).unwrap();
    let config = hearth::load::ModelParts::from_gguf(&file).unwrap().config;
    let prune = WeightPruneOptions { layers: LayerChoice::Ids(vec![1]), ..WeightPruneOptions::default() };
    let pruning = WeightCut::choose(&config, &prune, None, &file).unwrap();
    let pack = pruned_pack(&gguf, &pruning);

    let three = TinyConfig { n_layers: 3, ..c.clone() };
    let without = renumbered(&tensors, |l| match l {
        1 => None,
        0 => Some(0),
        l => Some(l - 1),
    });
    let device = DeviceKind::Cpu.device().unwrap();
    let pruned = Arc::new(Engine::from_file_bytes(&pack, &device, WeightFormat::Int4).unwrap());
    let reference = Arc::new(Engine::from_gguf(&tiny_gguf(&three, &without), &device, WeightFormat::Int4).unwrap());
    assert_eq!(pruned.config().n_layers, 3);
    assert_eq!(pruned.model().weight_bytes(), reference.model().weight_bytes());
    let prompt = tokens(20, 6);
    assert_eq!(cpu_logits(&pruned, &prompt), cpu_logits(&reference, &prompt));
    // Choosing by count needs a calibration; dropping every layer is refused.
    let count = WeightPruneOptions { layers: LayerChoice::Count(1), ..WeightPruneOptions::default() };
    assert!(matches!(WeightCut::choose(&config, &count, None, &file), Err(Error::BadOptions(_))));
    let all = WeightPruneOptions { layers: LayerChoice::Ids(vec![0, 1, 2, 3]), ..WeightPruneOptions::default() };
    assert!(matches!(WeightCut::choose(&config, &all, None, &file), Err(Error::BadOptions(_))));
}

/// Gemma 3's layers attend through a window or globally by index (every sixth is global):
/// dropping layer 0 of six keeps the last one global in the pruned model (its config states
/// each layer's kind), which equals a five-layer model of the same tensors told so, and differs
/// from one that would take the kinds from the new indices (its last layer windowed).
#[test]
fn a_pruned_gemma_keeps_each_layers_attention() {
    use hearth::analysis::weight_pruning::{LayerChoice, WeightCut, WeightPruneOptions};
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, burnpack};
    let g = TinyConfig { gemma3_window: Some(8), n_layers: 6, context: 64, ..TinyConfig::new() };
    let tensors = gemma3_weights(&g, 65);
    let gguf = gemma3_gguf(&g, &tensors);
    let file = GgufFile::parse(&gguf).unwrap();
    let config = ModelParts::from_gguf(&file).unwrap().config;
    let prune = WeightPruneOptions { layers: LayerChoice::Ids(vec![0]), ..WeightPruneOptions::default() };
    let pruning = WeightCut::choose(&config, &prune, None, &file).unwrap();
    let device = DeviceKind::Cpu.device().unwrap();
    let pruned = Arc::new(Engine::from_file_bytes(&pruned_pack(&gguf, &pruning), &device, WeightFormat::F32).unwrap());
    assert_eq!(pruned.config().global_layers, Some(vec![4]));

    let five = TinyConfig { n_layers: 5, ..g.clone() };
    let without = gemma3_gguf(&five, &renumbered(&tensors, |l| l.checked_sub(1)));
    let file = GgufFile::parse(&without).unwrap();
    let as_pack = |global: Option<Vec<usize>>| {
        let mut parts = ModelParts::from_gguf(&file).unwrap();
        parts.config.global_layers = global;
        let pack = burnpack::write(&parts, &file).unwrap();
        Arc::new(Engine::from_file_bytes(&pack, &device, WeightFormat::F32).unwrap())
    };
    let (reference, by_index) = (as_pack(Some(vec![4])), as_pack(None));
    assert_eq!(by_index.config().layer_attention(4).window, Some(8));
    let prompt = tokens(24, 8);
    assert_eq!(cpu_logits(&pruned, &prompt), cpu_logits(&reference, &prompt));
    assert_ne!(cpu_logits(&pruned, &prompt), cpu_logits(&by_index, &prompt));
}

/// Heads and FFN channels cut: the pruned model equals a GGUF model whose stored tensors lack
/// those rows (queries, gate, up) and columns (output and down projections), bit for bit on
/// the CPU. Heads of 32 are whole blocks of the Q4_1 output projection (copied as stored);
/// the down projection is f32, so any channel can go without quantizing again.
#[test]
fn cutting_heads_and_channels_equals_the_model_without_those_rows_and_columns() {
    use hearth::analysis::weight_pruning::WeightCut;
    let c = TinyConfig { head_dim: Some(32), n_layers: 2, ..TinyConfig::new() };
    let types = |name: &str| match name {
        n if n.ends_with("ffn_down.weight") || n.ends_with("norm.weight") => Ty::F32,
        n if n.ends_with("ffn_gate.weight") => Ty::Q4_0,
        n if n.starts_with("token_embd") || n.ends_with("ffn_up.weight") => Ty::Q8_0,
        _ => Ty::Q4_1,
    };
    let tensors = tiny_weights(&c, 67, false, &types);
    let gguf = tiny_gguf(&c, &tensors);
    // One query head of each key/value group: layer 0 keeps heads 0 and 3, layer 1 heads 1 and 2.
    let heads = vec![vec![0, 3], vec![1, 2]];
    let channels: Vec<Vec<usize>> = (0..2).map(|l| (0..c.d_ff).filter(|j| (j * 7 + l) % 3 != 0).collect()).collect();
    let pruning = WeightCut { layers: vec![0, 1], heads: heads.clone(), channels: channels.clone() };
    let pack = pruned_pack(&gguf, &pruning);

    let hd = c.head_dim();
    let cut = TinyConfig { n_heads: 2, d_ff: channels[0].len(), ..c.clone() };
    let reference: Vec<StoredTensor> = tensors
        .iter()
        .map(|t| {
            let Some(rest) = t.name.strip_prefix("blk.") else { return t.clone() };
            let (l, tail) = rest.split_once('.').unwrap();
            let l: usize = l.parse().unwrap();
            let head_rows: Vec<usize> = heads[l].iter().flat_map(|h| h * hd..(h + 1) * hd).collect();
            let cols = t.shape.get(1).copied().unwrap_or(1);
            let rows = |keep: &[usize]| -> Vec<f32> {
                keep.iter().flat_map(|&r| t.values[r * cols..(r + 1) * cols].to_vec()).collect()
            };
            let columns = |keep: &[usize]| -> Vec<f32> {
                t.values.chunks(cols).flat_map(|row| keep.iter().map(|&j| row[j]).collect::<Vec<_>>()).collect()
            };
            let (shape, values) = match tail {
                "attn_q.weight" => (vec![head_rows.len(), cols], rows(&head_rows)),
                "attn_output.weight" => (vec![t.shape[0], head_rows.len()], columns(&head_rows)),
                "ffn_gate.weight" | "ffn_up.weight" => (vec![channels[l].len(), cols], rows(&channels[l])),
                "ffn_down.weight" => (vec![t.shape[0], channels[l].len()], columns(&channels[l])),
                _ => return t.clone(),
            };
            // Re-encode exactly: f32 as is, block types from the same codes (rows or whole
            // blocks of them are kept, so their blocks are the originals').
            let bytes = match t.ty {
                Ty::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => block_bytes(t, tail, &head_rows, &channels[l]),
            };
            StoredTensor { name: t.name.clone(), shape, ty: t.ty, values, bytes }
        })
        .collect();
    let device = DeviceKind::Cpu.device().unwrap();
    let pruned = Arc::new(Engine::from_file_bytes(&pack, &device, WeightFormat::Int4).unwrap());
    let reference = Arc::new(Engine::from_gguf(&tiny_gguf(&cut, &reference), &device, WeightFormat::Int4).unwrap());
    assert_eq!((pruned.config().n_heads, pruned.config().d_ff), (2, channels[0].len()));
    assert_eq!(pruned.model().weight_bytes(), reference.model().weight_bytes());
    let prompt = tokens(20, 9);
    assert_eq!(cpu_logits(&pruned, &prompt), cpu_logits(&reference, &prompt));
}

/// The stored blocks of a block-quantized tensor's kept rows (`attn_q`, gate, up), or of the
/// whole blocks its kept columns make (`attn_output`, heads of 32).
fn block_bytes(t: &StoredTensor, tail: &str, head_rows: &[usize], channels: &[usize]) -> Vec<u8> {
    let block = match t.ty {
        Ty::Q4_0 => 18,
        Ty::Q4_1 => 20,
        Ty::Q8_0 => 34,
        other => panic!("{other:?}"),
    };
    let per_row = t.shape[1] / 32 * block;
    let row = |r: usize| &t.bytes[r * per_row..(r + 1) * per_row];
    match tail {
        "attn_q.weight" => head_rows.iter().flat_map(|&r| row(r).to_vec()).collect(),
        "ffn_gate.weight" | "ffn_up.weight" => channels.iter().flat_map(|&r| row(r).to_vec()).collect(),
        "attn_output.weight" => (0..t.shape[0])
            .flat_map(|r| head_rows.chunks(32).flat_map(move |b| row(r)[b[0] / 32 * block..][..block].to_vec()))
            .collect(),
        other => panic!("{other}"),
    }
}

/// Wanda's scores choose what carries nothing: a head whose output-projection columns are zero
/// and FFN channels whose down-projection columns are zero score 0 and go first; the pruning
/// at load equals the pruned file `prune-weights` writes from the same calibration text.
#[test]
fn wanda_scores_cut_what_carries_nothing_and_load_equals_the_file() {
    use hearth::analysis::weight_pruning::{
        DEFAULT_CALIBRATION, LayerChoice, WeightCut, WeightPruneOptions, calibrate,
    };
    use hearth::model::passes::CALIBRATION_TOKENS;
    let c = TinyConfig { context: 128, n_layers: 3, ..TinyConfig::new() };
    let mut tensors = tiny_weights(&c, 68, false, &|_| Ty::F32);
    let hd = c.head_dim();
    let dead: Vec<usize> = (0..c.d_ff).filter(|j| j % 3 == 1).collect();
    for t in tensors.iter_mut() {
        let cols = t.shape.get(1).copied().unwrap_or(1);
        let zero: Vec<usize> = match t.name.as_str() {
            "blk.0.attn_output.weight" => (hd..2 * hd).collect(),
            "blk.2.ffn_down.weight" => dead.clone(),
            _ => continue,
        };
        for row in t.values.chunks_mut(cols) {
            zero.iter().for_each(|&j| row[j] = 0.0);
        }
        t.bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    let gguf = tiny_gguf(&c, &tensors);
    let device = DeviceKind::Cpu.device().unwrap();
    // Scored as loading scores, on the int4 path.
    let engine = Engine::from_gguf(&gguf, &device, WeightFormat::Int4).unwrap();
    let mut text = engine.encode_prompt(DEFAULT_CALIBRATION).unwrap();
    text.truncate(CALIBRATION_TOKENS);
    let measured = pollster::block_on(calibrate(engine.model(), &text)).unwrap();
    let file = hearth::format::gguf::GgufFile::parse(&gguf).unwrap();
    let prune = WeightPruneOptions { layers: LayerChoice::Ids(vec![1]), heads: 2, ffn: 1.0 / 3.0 };
    let pruning = WeightCut::choose(engine.config(), &prune, Some(&measured), &file).unwrap();
    assert_eq!(pruning.layers, vec![0, 2]);
    assert!(!pruning.heads[0].contains(&1) && pruning.heads[0].contains(&0), "{:?}", pruning.heads);
    let one_a_group = |h: &Vec<usize>| h.len() == 2 && h[0] < 2 && h[1] >= 2;
    assert!(pruning.layers.iter().all(|&l| one_a_group(&pruning.heads[l])), "{:?}", pruning.heads);
    assert!(dead.iter().all(|j| pruning.channels[2].binary_search(j).is_err()));
    assert_eq!(pruning.channels[2].len(), c.d_ff - dead.len());
    // Bad counts are refused: heads not a multiple of the groups, or all of them.
    for heads in [1, 4] {
        let bad = WeightPruneOptions { heads, ..WeightPruneOptions::default() };
        assert!(matches!(WeightCut::choose(engine.config(), &bad, Some(&measured), &file), Err(Error::BadOptions(_))));
    }

    let from_file =
        Arc::new(Engine::from_file_bytes(&pruned_pack(&gguf, &pruning), &device, WeightFormat::Int4).unwrap());
    let prepared = Engine::prepare(&gguf, &device, WeightFormat::Int4).unwrap();
    let (at_load, chosen) = pollster::block_on(prepared.upload_pruned(&device, &prune, None, &mut |_, _| {})).unwrap();
    assert_eq!(chosen, pruning);
    assert_eq!(at_load.name(), from_file.name());
    let at_load = Arc::new(at_load);
    let prompt = tokens(20, 10);
    assert_eq!(cpu_logits(&at_load, &prompt), cpu_logits(&from_file, &prompt));
}

/// Block influence: a layer whose output projections are zero passes the state on unturned,
/// so its influence is 0 and it is the one dropped first; the others turn it.
#[test]
fn block_influence_finds_the_layer_that_does_nothing() {
    use hearth::analysis::weight_pruning::{calibrate, least_influential};
    let c = TinyConfig { context: 128, n_layers: 4, ..TinyConfig::new() };
    let mut tensors = tiny_weights(&c, 66, false, &|_| Ty::F32);
    for t in tensors.iter_mut().filter(|t| t.name == "blk.2.attn_output.weight" || t.name == "blk.2.ffn_down.weight") {
        t.values.iter_mut().for_each(|v| *v = 0.0);
        t.bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    let engine = Arc::new(
        Engine::from_gguf(&tiny_gguf(&c, &tensors), &DeviceKind::Cpu.device().unwrap(), WeightFormat::F32).unwrap(),
    );
    let text = tokens(100, 7);
    let measured = pollster::block_on(calibrate(engine.model(), &text)).unwrap();
    let influence = &measured.influence;
    assert_eq!(influence.len(), 4);
    assert!(influence[2].abs() < 1e-6, "{influence:?}");
    assert!(influence.iter().enumerate().all(|(l, &i)| l == 2 || i > 1e-3), "{influence:?}");
    assert_eq!(least_influential(influence, 1), vec![2]);
    // The activation norms count every token, the first too (its channels carry the
    // attention sink): measured in chunks, they are the norms of one pass over the whole text.
    let mut cache =
        hearth::kv_cache::KvCache::new(engine.config(), &KvOptions::with_capacity(128), engine.device()).unwrap();
    let probe = engine.model().probe(&text, &mut cache).unwrap();
    for (kept, measured) in [(&probe.attention, &measured.attention), (&probe.gated, &measured.gated)] {
        for (t, norms) in kept.iter().zip(measured) {
            let width = t.dims()[1];
            let values = t.clone().into_data().try_to_vec::<f32>().unwrap();
            for (j, norm) in norms.iter().enumerate() {
                let want = values.iter().skip(j).step_by(width).map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                assert!((norm - want).abs() <= 1e-4 * want.max(1.0), "channel {j}: {norm} against {want}");
            }
        }
    }
}
