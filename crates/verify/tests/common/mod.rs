//! Shared by the verification suites: the honest model, keys, inputs, and cheating model
//! files built for real from the honest GGUF (the last layer dropped, the weights
//! re-quantized, noise in one layer).

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use vouch_crypto::SigningKey;
use vouch_inference::chat::Message;
use vouch_inference::models::{default_home, SMOLLM2_135M};
use vouch_inference::ChatModel;
use vouch_types::Sampling;
use vouch_verify::attest::Input;

/// The honest model, loaded once per test binary and shared by its tests.
pub fn honest_model() -> std::sync::MutexGuard<'static, ChatModel> {
    static M: OnceLock<Mutex<ChatModel>> = OnceLock::new();
    M.get_or_init(|| {
        Mutex::new(
            ChatModel::load(&SMOLLM2_135M, &default_home()).expect("run `vouch models fetch`"),
        )
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32]).unwrap()
}

pub fn chat(p: &str) -> Input {
    Input::Chat(vec![Message::user(p)])
}

pub fn sampled(seed: u64, max_tokens: u32) -> Sampling {
    Sampling {
        temperature: 0.8,
        top_p: 0.95,
        seed,
        max_tokens,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    }
}

fn variants_dir() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

pub fn original_path() -> PathBuf {
    SMOLLM2_135M.path(&default_home(), 0)
}

/// Rewrites the GGUF with `edit` applied to each (name, tensor); `None` drops the tensor.
fn rewrite_gguf(
    out: &Path,
    meta_edit: impl Fn(&str, &gguf_file::Value) -> gguf_file::Value,
    edit: impl Fn(&str, QTensor) -> Option<QTensor>,
) {
    let mut f = std::fs::File::open(original_path()).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for n in names {
        let t = ct.tensor(&mut f, n, &Device::Cpu).unwrap();
        if let Some(t) = edit(n, t) {
            tensors.push((n.clone(), t));
        }
    }
    let mut keys: Vec<&String> = ct.metadata.keys().collect();
    keys.sort();
    let meta: Vec<(String, gguf_file::Value)> = keys
        .iter()
        .map(|k| (k.to_string(), meta_edit(k, &ct.metadata[*k])))
        .collect();
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    gguf_file::write(&mut w, &meta_refs, &tensor_refs).unwrap();
}

fn requantize(t: QTensor, to: GgmlDType) -> QTensor {
    if t.dtype() == GgmlDType::Q4_1 {
        QTensor::quantize(&t.dequantize(&Device::Cpu).unwrap(), to).unwrap()
    } else {
        t
    }
}

/// The cheating variants, built once per test binary.
pub fn variant(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = BUILT.get_or_init(|| Mutex::new(())).lock().unwrap();
    let path = variants_dir().join(format!("{name}.gguf"));
    if path.exists() {
        return path;
    }
    match name {
        // Another (smaller) model: the same weights with the last layer dropped.
        "drop-last-layer" => rewrite_gguf(
            &path,
            |k, v| {
                if k == "llama.block_count" {
                    gguf_file::Value::U32(29)
                } else {
                    v.clone()
                }
            },
            |n, t| {
                if n.starts_with("blk.29.") {
                    None
                } else {
                    Some(t)
                }
            },
        ),
        // The same weights in another quantization, re-quantized with candle.
        "requant-q4_0" => rewrite_gguf(
            &path,
            |_, v| v.clone(),
            |_, t| Some(requantize(t, GgmlDType::Q4_0)),
        ),
        "requant-q8_0" => rewrite_gguf(
            &path,
            |_, v| v.clone(),
            |_, t| Some(requantize(t, GgmlDType::Q8_0)),
        ),
        // Small noise in one layer, in the model's own format: one quantization step up or
        // down on 5% of the 4-bit weights of layer 14 (bytes edited in place).
        "noise-layer14" => {
            let mut bytes = std::fs::read(original_path()).unwrap();
            let mut f = std::fs::File::open(original_path()).unwrap();
            let ct = gguf_file::Content::read(&mut f).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
            for (n, info) in &ct.tensor_infos {
                if !n.starts_with("blk.14.") || info.ggml_dtype != GgmlDType::Q4_1 {
                    continue;
                }
                let start = (ct.tensor_data_offset + info.offset) as usize;
                let blocks = info.shape.elem_count() / 32;
                for b in 0..blocks {
                    let qs = start + b * 20 + 4; // f16 scale, f16 min, 16 bytes of nibbles
                    for byte in &mut bytes[qs..qs + 16] {
                        for shift in [0u8, 4] {
                            if rng.gen_bool(0.05) {
                                let q = (*byte >> shift) & 0xF;
                                let q2 = if q == 0 || (q < 15 && rng.gen_bool(0.5)) {
                                    q + 1
                                } else {
                                    q - 1
                                };
                                *byte = (*byte & !(0xF << shift)) | (q2 << shift);
                            }
                        }
                    }
                }
            }
            std::fs::write(&path, bytes).unwrap();
        }
        other => panic!("unknown variant {other}"),
    }
    path
}
