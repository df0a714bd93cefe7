//! The checkpoint layer: single and sharded files, dtypes, the key table loader and its
//! errors, atomic writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use coeff_tuning::checkpoint::{
    find_weights, write_safetensors, Checkpoint, CheckpointError, Dtype, KeyTable, Kind, Row,
};
use coeff_tuning::io::{transpose, write_atomic};
use coeff_tuning::peft::params;
use coeff_tuning::PeftLinear;

type B = burn::backend::NdArray<f32>;

/// Fused q/k/v as timm splits them.
#[derive(Module, Debug)]
struct Qkv<B: Backend> {
    query: PeftLinear<B>,
    key: PeftLinear<B>,
    value: PeftLinear<B>,
}

/// A convolution wrapped for LoRA (the path shape of `PeftConv2d`).
#[derive(Module, Debug)]
struct WrappedConv<B: Backend> {
    base: Conv2d<B>,
}

#[derive(Module, Debug)]
struct Block<B: Backend> {
    norm: LayerNorm<B>,
    attn: Qkv<B>,
    proj: PeftLinear<B>,
    gn: GroupNorm<B>,
    conv: WrappedConv<B>,
}

/// One parameter of every kind the table knows.
#[derive(Module, Debug)]
struct Net<B: Backend> {
    cls: Param<Tensor<B, 3>>,
    embed: Embedding<B>,
    patch: Conv2d<B>,
    blocks: Vec<Block<B>>,
    head: Linear<B>,
}

const D: usize = 4;

fn net(dev: &burn::tensor::Device<B>) -> Net<B> {
    let lin = |i, o| PeftLinear::new(&LinearConfig::new(i, o), dev);
    let block = || Block {
        norm: LayerNormConfig::new(D).init(dev),
        attn: Qkv {
            query: lin(D, D),
            key: lin(D, D),
            value: lin(D, D),
        },
        proj: lin(D, 6),
        gn: GroupNormConfig::new(2, D).init(dev),
        conv: WrappedConv {
            base: Conv2dConfig::new([D, D], [1, 1]).init(dev),
        },
    };
    Net {
        cls: Param::from_tensor(Tensor::zeros([1, 1, D], dev)),
        embed: EmbeddingConfig::new(10, D).init(dev),
        patch: Conv2dConfig::new([3, D], [2, 2]).init(dev),
        blocks: vec![block(), block()],
        head: LinearConfig::new(D, 3).init(dev),
    }
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("cls",             "cls",             Kind::Tensor),
    ("embed",           "embed",           Kind::Embedding),
    ("patch",           "patch",           Kind::Conv),
    ("blocks.{i}.ln",   "blocks.{i}.norm", Kind::Norm),
    ("blocks.{i}.qkv",  "blocks.{i}.attn", Kind::FusedQkv),
    ("blocks.{i}.proj", "blocks.{i}.proj", Kind::Linear),
    ("blocks.{i}.gn",   "blocks.{i}.gn",   Kind::Norm),
    ("blocks.{i}.conv", "blocks.{i}.conv", Kind::PeftConv),
    ("head",            "head",            Kind::PlainLinear),
];

const TABLE: KeyTable<'static> = KeyTable {
    rows: ROWS,
    prefixes: &["model."],
    ignored: &[r"text_model\..*", r".*position_ids"],
};

/// Deterministic values, different per key.
fn values(key: &str, n: usize) -> Vec<f32> {
    let seed = key.bytes().map(u32::from).sum::<u32>() as f32;
    (0..n)
        .map(|i| (seed * 0.37 + i as f32 * 1.3).sin())
        .collect()
}

/// The checkpoint of [`net`] in PyTorch's layout and key names.
fn torch_tensors() -> BTreeMap<String, TensorData> {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("cls".into(), vec![D]),
        ("embed.weight".into(), vec![10, D]),
        ("patch.weight".into(), vec![D, 3, 2, 2]),
        ("patch.bias".into(), vec![D]),
        ("head.weight".into(), vec![3, D]),
        ("head.bias".into(), vec![3]),
    ];
    for i in 0..2 {
        for (leaf, shape) in [
            ("ln.weight", vec![D]),
            ("ln.bias", vec![D]),
            ("qkv.weight", vec![3 * D, D]),
            ("qkv.bias", vec![3 * D]),
            ("proj.weight", vec![6, D]),
            ("proj.bias", vec![6]),
            ("gn.weight", vec![D]),
            ("gn.bias", vec![D]),
            ("conv.weight", vec![D, D, 1, 1]),
            ("conv.bias", vec![D]),
        ] {
            shapes.push((format!("blocks.{i}.{leaf}"), shape));
        }
    }
    shapes
        .into_iter()
        .map(|(k, s)| {
            let n = s.iter().product();
            let data = TensorData::new(values(&k, n), s);
            (k, data)
        })
        .collect()
}

fn write(path: &Path, tensors: &BTreeMap<String, TensorData>) {
    write_safetensors(path, tensors.iter().map(|(k, v)| (k.as_str(), v)), &[]).unwrap();
}

/// Split `tensors` over two shards and an index (keys sorted, first half in shard 1).
fn write_sharded(dir: &Path, tensors: &BTreeMap<String, TensorData>) -> PathBuf {
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let half = tensors.len() / 2;
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        tensors.iter().take(half).collect::<Vec<_>>(),
        tensors.iter().skip(half).collect::<Vec<_>>(),
    ]
    .iter()
    .enumerate()
    {
        write_safetensors(
            &dir.join(names[shard]),
            part.iter().map(|(k, v)| (k.as_str(), *v)),
            &[],
        )
        .unwrap();
        for (k, _) in part {
            map.insert(k.to_string(), names[shard].into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    write_atomic(&index, json.to_string().as_bytes()).unwrap();
    index
}

fn params_of(model: &Net<B>) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    params::all_params(model)
        .into_iter()
        .map(|(p, s, v)| (p, (s, v)))
        .collect()
}

/// Every parameter holds its source, transformed as its row says, bit for bit (so that NaN,
/// infinities, signed zeros and subnormals are compared too).
fn assert_loaded(model: &Net<B>, t: &BTreeMap<String, TensorData>) {
    let got = params_of(model);
    let src = |k: &str| t[k].to_vec::<f32>().unwrap();
    let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let check = |param: &str, shape: &[usize], want: Vec<f32>| {
        let (s, v) = &got[param];
        assert_eq!(s, shape, "{param}");
        assert_eq!(
            bits(v.as_slice()),
            bits(want.as_slice()),
            "{param}: {v:?} vs {want:?}"
        );
    };
    check("cls", &[1, 1, D], src("cls"));
    check("embed.weight", &[10, D], src("embed.weight"));
    check("patch.weight", &[D, 3, 2, 2], src("patch.weight"));
    check("head.weight", &[D, 3], transpose(&src("head.weight"), 3, D));
    check("head.bias", &[3], src("head.bias"));
    for i in 0..2 {
        let b = |leaf: &str| format!("blocks.{i}.{leaf}");
        check(&b("norm.gamma"), &[D], src(&b("ln.weight")));
        check(&b("norm.beta"), &[D], src(&b("ln.bias")));
        check(&b("gn.gamma"), &[D], src(&b("gn.weight")));
        check(&b("gn.beta"), &[D], src(&b("gn.bias")));
        check(
            &b("proj.base.weight"),
            &[D, 6],
            transpose(&src(&b("proj.weight")), 6, D),
        );
        check(
            &b("conv.base.weight"),
            &[D, D, 1, 1],
            src(&b("conv.weight")),
        );
        check(&b("conv.base.bias"), &[D], src(&b("conv.bias")));
        let (qkv, qkv_b) = (src(&b("qkv.weight")), src(&b("qkv.bias")));
        for (part, name) in ["query", "key", "value"].iter().enumerate() {
            let rows = &qkv[part * D * D..(part + 1) * D * D];
            check(
                &b(&format!("attn.{name}.base.weight")),
                &[D, D],
                transpose(rows, D, D),
            );
            check(
                &b(&format!("attn.{name}.base.bias")),
                &[D],
                qkv_b[part * D..(part + 1) * D].to_vec(),
            );
        }
    }
}

fn load(ckpt: &Checkpoint) -> Result<Net<B>, CheckpointError> {
    TABLE.load(net(&Default::default()), ckpt)
}

#[test]
fn every_kind_loads_and_a_sharded_index_loads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let t = torch_tensors();
    let single = dir.path().join("model.safetensors");
    write(&single, &t);
    let from_file = load(&Checkpoint::open(&single).unwrap()).unwrap();
    assert_loaded(&from_file, &t);

    let sharded = tempfile::tempdir().unwrap();
    let index = write_sharded(sharded.path(), &t);
    let ckpt = Checkpoint::open(&index).unwrap();
    assert_eq!(ckpt.files().len(), 2);
    assert_eq!(ckpt.keys(), Checkpoint::open(&single).unwrap().keys());
    let from_shards = load(&ckpt).unwrap();
    assert_eq!(params_of(&from_shards), params_of(&from_file));
    // The folder helper finds the index.
    assert_eq!(find_weights(sharded.path(), &[]).unwrap(), index);
}

#[test]
fn a_missing_shard_is_named_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let index = write_sharded(dir.path(), &torch_tensors());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(err, CheckpointError::MissingShard { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors.index.json")
            && msg.contains("model-00002-of-00002.safetensors")
            && msg.contains("`blocks.1."),
        "{msg}"
    );
}

#[test]
fn an_index_that_disagrees_with_its_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let index = write_sharded(dir.path(), &torch_tensors());
    let text = std::fs::read_to_string(&index).unwrap();
    // The index places a key in the first shard that only the second holds.
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["weight_map"]["head.weight"],
        "model-00002-of-00002.safetensors"
    );
    json["weight_map"]["head.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&index, json.to_string()).unwrap();
    let msg = Checkpoint::open(&index).unwrap_err().to_string();
    assert!(
        msg.contains("`head.weight`")
            && msg.contains("model-00001-of-00002.safetensors")
            && msg.contains("index.json"),
        "{msg}"
    );
}

#[test]
fn a_bad_index_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    for (text, needle) in [
        ("{not json", "not valid JSON"),
        (r#"{"metadata": {}}"#, "weight_map"),
        (
            r#"{"weight_map": {"a": "../outside.safetensors"}}"#,
            "relative path",
        ),
        (r#"{"weight_map": {"a": 3}}"#, "`weight_map[\"a\"]`"),
    ] {
        std::fs::write(&index, text).unwrap();
        let msg = Checkpoint::open(&index).unwrap_err().to_string();
        assert!(
            msg.contains("model.safetensors.index.json") && msg.contains(needle),
            "{text}: {msg}"
        );
    }
}

#[test]
fn f16_keeps_its_dtype_and_converts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let t: BTreeMap<String, TensorData> = torch_tensors()
        .into_iter()
        .map(|(k, v)| (k, v.convert::<half::f16>()))
        .collect();
    let path = dir.path().join("model.fp16.safetensors");
    write(&path, &t);
    assert_eq!(find_weights(dir.path(), &[]).unwrap(), path);
    let ckpt = Checkpoint::open(&path).unwrap();
    let info = ckpt.info("head.weight").unwrap();
    assert_eq!((info.dtype, info.shape), (Dtype::F16, vec![3, D]));
    let data = ckpt.read("head.weight").unwrap();
    assert_eq!(data.dtype, DType::F16);
    let exact: Vec<f32> = t["head.weight"]
        .to_vec::<half::f16>()
        .unwrap()
        .into_iter()
        .map(half::f16::to_f32)
        .collect();
    assert_eq!(ckpt.read_f32("head.weight").unwrap().1, exact);
    // Loaded into an f32 model: the same exact conversion.
    let model = load(&ckpt).unwrap();
    let as_f32: BTreeMap<String, TensorData> = t
        .into_iter()
        .map(|(k, v)| (k, v.convert::<f32>()))
        .collect();
    assert_loaded(&model, &as_f32);
    assert_eq!(model.head.weight.val().dtype(), DType::F32);
}

/// bf16 bit patterns: +0, -0, 1, the smallest subnormal, the largest finite value, -inf, a
/// quiet NaN, 3.140625.
const BF16_BITS: [u16; 8] = [
    0x0000, 0x8000, 0x3F80, 0x0001, 0x7F7F, 0xFF80, 0x7FC0, 0x4049,
];

/// The exact widening, by definition of bf16 (the top half of an f32); no `half` involved.
fn bf16_to_f32_reference(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// A BF16 `TensorData` made from bit patterns (little-endian bytes; no float arithmetic).
fn bf16_data(bits: &[u16], shape: Vec<usize>) -> TensorData {
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    TensorData::from_bytes_vec(bytes, shape, DType::BF16)
}

#[test]
fn bf16_keeps_its_dtype_and_converts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let want: Vec<u32> = BF16_BITS
        .iter()
        .map(|&b| bf16_to_f32_reference(b).to_bits())
        .collect();
    // The reference itself: the patterns land where IEEE-754 says they do.
    let r = |i: usize| f32::from_bits(want[i]);
    assert!(r(0) == 0.0 && r(0).is_sign_positive());
    assert!(r(1) == 0.0 && r(1).is_sign_negative());
    assert_eq!(r(2), 1.0);
    assert!(r(3) > 0.0 && !r(3).is_normal());
    assert!(r(4).is_finite() && r(4) > 3.38e38);
    assert_eq!(r(5), f32::NEG_INFINITY);
    assert!(r(6).is_nan());
    assert_eq!(r(7), 3.140625);

    // A file written by hand (8-byte length, JSON header, data), independent of our writer.
    let path = dir.path().join("special.safetensors");
    let mut header =
        r#"{"special":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,16]}}"#.to_string();
    header.extend(std::iter::repeat_n(' ', (8 - header.len() % 8) % 8));
    let raw: Vec<u8> = BF16_BITS.iter().flat_map(|b| b.to_le_bytes()).collect();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&raw);
    std::fs::write(&path, file).unwrap();

    let ckpt = Checkpoint::open(&path).unwrap();
    let info = ckpt.info("special").unwrap();
    assert_eq!((info.dtype, info.shape), (Dtype::BF16, vec![2, 4]));
    let (shape, values) = ckpt.read_f32("special").unwrap();
    assert_eq!(shape, vec![2, 4]);
    let got: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want, "{values:?}");
    // `read` keeps BF16, with the stored bytes untouched.
    let data = ckpt.read("special").unwrap();
    assert_eq!(data.dtype, DType::BF16);
    assert_eq!(data.shape.to_vec(), vec![2, 4]);
    assert_eq!(data.as_bytes(), raw.as_slice());
    // And converted as the loader converts it, still exact.
    let converted = data.convert_dtype(DType::F32).to_vec::<f32>().unwrap();
    let got: Vec<u32> = converted.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want, "{converted:?}");

    // The whole model in bf16 (each f32 truncated to its top 16 bits), with the special
    // patterns in `head.weight`, loaded through the key table into an f32 model.
    let mut t: BTreeMap<String, Vec<u16>> = torch_tensors()
        .into_iter()
        .map(|(k, v)| {
            let bits = v
                .to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(|x| (x.to_bits() >> 16) as u16)
                .collect();
            (k, bits)
        })
        .collect();
    t.get_mut("head.weight").unwrap()[..8].copy_from_slice(&BF16_BITS);
    let shapes: BTreeMap<String, Vec<usize>> = torch_tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape.to_vec()))
        .collect();
    let stored: BTreeMap<String, TensorData> = t
        .iter()
        .map(|(k, bits)| (k.clone(), bf16_data(bits, shapes[k].clone())))
        .collect();
    let path = dir.path().join("model.safetensors");
    write(&path, &stored);
    let ckpt = Checkpoint::open(&path).unwrap();
    let info = ckpt.info("head.weight").unwrap();
    assert_eq!((info.dtype, info.shape), (Dtype::BF16, vec![3, D]));
    let head: Vec<u32> = ckpt
        .read_f32("head.weight")
        .unwrap()
        .1
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(&head[..8], &want[..]);
    let model = load(&ckpt).unwrap();
    let as_f32: BTreeMap<String, TensorData> = t
        .iter()
        .map(|(k, bits)| {
            let values: Vec<f32> = bits.iter().map(|&b| bf16_to_f32_reference(b)).collect();
            (k.clone(), TensorData::new(values, shapes[k].clone()))
        })
        .collect();
    // Bit for bit, NaN and -inf and the subnormal included (see `assert_loaded`).
    assert_loaded(&model, &as_f32);
    assert_eq!(model.head.weight.val().dtype(), DType::F32);
}

#[test]
fn prefixes_are_stripped_and_ignored_keys_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let t = torch_tensors();
    let mut prefixed: BTreeMap<String, TensorData> = t
        .iter()
        .map(|(k, v)| {
            let k = if k.starts_with("blocks.1") {
                format!("model.{k}")
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect();
    prefixed.insert(
        "text_model.embeddings.weight".into(),
        TensorData::new(vec![1f32; 6], [2, 3]),
    );
    prefixed.insert(
        "model.position_ids".into(),
        TensorData::new(vec![0i64, 1, 2], [3]),
    );
    let path = dir.path().join("model.safetensors");
    write(&path, &prefixed);
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(
        ckpt.read_i64("model.position_ids").unwrap(),
        (vec![3], vec![0, 1, 2])
    );
    assert_loaded(&load(&ckpt).unwrap(), &t);

    // Without the ignore patterns, those two keys are unexpected.
    let strict = KeyTable {
        ignored: &[],
        ..TABLE
    };
    let msg = strict
        .load(net(&Default::default()), &ckpt)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`text_model.embeddings.weight`") && msg.contains("`model.position_ids`"),
        "{msg}"
    );
}

#[test]
fn missing_and_unexpected_keys_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = torch_tensors();
    t.remove("blocks.0.gn.bias");
    t.remove("blocks.1.qkv.weight");
    t.insert(
        "blocks.0.extra.weight".into(),
        TensorData::new(vec![0f32; 4], [4]),
    );
    t.insert(
        "blocks.7.proj.bias".into(),
        TensorData::new(vec![0f32; 6], [6]),
    );
    let path = dir.path().join("model.safetensors");
    write(&path, &t);
    let err = load(&Checkpoint::open(&path).unwrap()).unwrap_err();
    let CheckpointError::KeysMismatch {
        missing,
        unexpected,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(missing.len(), 4, "{missing:?}"); // gn.beta + three qkv weights
    assert_eq!(unexpected.len(), 2, "{unexpected:?}");
    let msg = err.to_string();
    for needle in [
        "`blocks.0.gn.bias` (model parameter `blocks.0.gn.beta`)",
        "`blocks.1.qkv.weight` (model parameter `blocks.1.attn.key.base.weight`)",
        "`blocks.0.extra.weight` (no table row)",
        "`blocks.7.proj.bias` (would feed `blocks.7.proj.base.bias`",
        "model.safetensors",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
}

#[test]
fn wrong_shape_and_double_feed_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = torch_tensors();
    t.insert("head.weight".into(), TensorData::new(vec![0f32; 8], [2, D]));
    let path = dir.path().join("a.safetensors");
    write(&path, &t);
    let msg = load(&Checkpoint::open(&path).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`head.weight` has shape [2, 4] (transposed: [4, 2])")
            && msg.contains("model parameter `head.weight` needs [4, 3]"),
        "{msg}"
    );

    let mut t = torch_tensors();
    let v = t["cls"].clone();
    t.insert("model.cls".into(), v);
    write(&path, &t);
    let err = load(&Checkpoint::open(&path).unwrap()).unwrap_err();
    assert!(matches!(err, CheckpointError::FedTwice { .. }), "{err}");
    assert!(err.to_string().contains("`model.cls`"), "{err}");
}

#[test]
fn untrusted_headers_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.safetensors");
    let forge = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        std::fs::write(&path, bytes).unwrap();
        Checkpoint::open(&path).unwrap_err().to_string()
    };
    // Element count overflows usize.
    let big = 1usize << 40;
    let msg = forge(
        &format!(r#"{{"x":{{"dtype":"F32","shape":[{big},{big},{big}],"data_offsets":[0,8]}}}}"#),
        8,
    );
    assert!(msg.contains("evil.safetensors"), "{msg}");
    // Offsets past the end of the file.
    let msg = forge(
        r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        8,
    );
    assert!(msg.contains("evil.safetensors"), "{msg}");
    // A header length larger than the file.
    std::fs::write(&path, 1_000_000u64.to_le_bytes()).unwrap();
    assert!(Checkpoint::open(&path).is_err());
}

#[test]
fn the_folder_helper_refuses_ambiguity_and_absence() {
    let dir = tempfile::tempdir().unwrap();
    let msg = find_weights(dir.path(), &[]).unwrap_err().to_string();
    assert!(
        msg.contains("no weights file")
            && msg.contains("model.safetensors")
            && msg.contains("diffusion_pytorch_model.safetensors.index.json")
            && msg.contains("diffusion_pytorch_model.fp16.safetensors"),
        "{msg}"
    );
    write(
        &dir.path().join("diffusion_pytorch_model.safetensors"),
        &torch_tensors(),
    );
    // An fp16 variant next to the full-precision file is not ambiguous: full precision wins.
    write(
        &dir.path().join("diffusion_pytorch_model.fp16.safetensors"),
        &torch_tensors(),
    );
    assert_eq!(
        find_weights(dir.path(), &[]).unwrap(),
        dir.path().join("diffusion_pytorch_model.safetensors")
    );
    write(&dir.path().join("model.safetensors"), &torch_tensors());
    let msg = find_weights(dir.path(), &[]).unwrap_err().to_string();
    assert!(
        msg.contains("ambiguous") && msg.contains("model.safetensors, diffusion"),
        "{msg}"
    );
    assert!(Checkpoint::open_dir(dir.path()).is_err());
}

#[test]
fn reading_names_the_key_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut t = BTreeMap::new();
    t.insert("flags".to_string(), TensorData::new(vec![true, false], [2]));
    write(&path, &t);
    let ckpt = Checkpoint::open(&path).unwrap();
    let msg = ckpt.read_f32("flags").unwrap_err().to_string();
    assert!(
        msg.contains("`flags`") && msg.contains("BOOL") && msg.contains("m.safetensors"),
        "{msg}"
    );
    let msg = ckpt.read("nope").unwrap_err().to_string();
    assert!(
        msg.contains("`nope`") && msg.contains("m.safetensors"),
        "{msg}"
    );
}

#[test]
fn atomic_writes_leave_no_temporary_files_and_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for w in 0..8 {
            let dir = dir.path();
            s.spawn(move || {
                for round in 0..25 {
                    let body = format!("writer {w} round {round}").repeat(100);
                    write_atomic(&dir.join(format!("out-{w}.txt")), body.as_bytes()).unwrap();
                    // Every writer also races on one shared target.
                    write_atomic(&dir.join("shared.txt"), body.as_bytes()).unwrap();
                }
            });
        }
    });
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..8).map(|w| format!("out-{w}.txt")).collect();
    want.push("shared.txt".into());
    want.sort();
    assert_eq!(names, want);
    for w in 0..8 {
        let got = std::fs::read_to_string(dir.path().join(format!("out-{w}.txt"))).unwrap();
        assert_eq!(got, format!("writer {w} round 24").repeat(100));
    }
    // The shared target holds one writer's whole body, never a mix.
    let shared = std::fs::read_to_string(dir.path().join("shared.txt")).unwrap();
    assert!((0..8)
        .flat_map(|w| (0..25).map(move |r| format!("writer {w} round {r}").repeat(100)))
        .any(|body| shared == body));
}
