//! Loading a checkpoint into a Burn module through a visible key table, one parameter at a
//! time.
//!
//! A model crate writes its mapping as rows `(checkpoint key, our module path, Kind)`; `{i}`,
//! `{j}`, ... stand for layer indices (digits) and must appear in both columns. The kind says
//! which tensors the row covers and how each is laid out:
//!
//! | kind | checkpoint | ours |
//! |---|---|---|
//! | `Linear` | `<key>.weight [out, in]`, `<key>.bias` | `<ours>.base.weight [in, out]` (transposed), `<ours>.base.bias` (a `PeftLinear`) |
//! | `PlainLinear` | `<key>.weight [out, in]`, `<key>.bias` | `<ours>.weight [in, out]`, `<ours>.bias` (a Burn `Linear`, row layout) |
//! | `Norm` | `<key>.weight`, `<key>.bias` | `<ours>.gamma`, `<ours>.beta` (LayerNorm, GroupNorm) |
//! | `Conv` | `<key>.weight`, `<key>.bias` | `<ours>.weight`, `<ours>.bias`, as stored (Burn's conv layout is PyTorch's) |
//! | `PeftConv` | `<key>.weight`, `<key>.bias` | `<ours>.base.weight`, `<ours>.base.bias` (a conv wrapped for LoRA) |
//! | `Embedding` | `<key>.weight [n, d]` | `<ours>.weight [n, d]` |
//! | `Tensor` | `<key>` (or `<key>.weight`) | `<ours>`, reshaped to the model's shape (same element count, e.g. `[D] -> [1, 1, D]`) |
//! | `FusedQkv` | `<key>.weight [3D, D]` (rows q, k, v), `<key>.bias [3D]` | `<ours>.{query,key,value}.base.{weight,bias}` (timm) |
//!
//! A [`KeyTable`] adds optional key prefixes (stripped when present, e.g. `vit.`) and patterns
//! of keys the model skips knowingly (a CLIP file's text tower, `position_ids` buffers).
//!
//! [`KeyTable::load`] first checks the whole mapping from the headers alone - every model
//! parameter fed exactly once, every checkpoint key used or ignored, shapes and dtypes - and
//! reports *all* missing and unexpected keys at once, each with the model parameter it
//! would feed. Only then does a Burn `ModuleMapper` walk the model: for each parameter it looks
//! up its source key, reads that one tensor from the memory map, applies the row's transform in
//! the stored dtype and converts to the parameter's dtype, and hands the tensor's mapped pages
//! back to the system. No map of all values is built and the file does not stay mapped, so
//! the process holds at most about one tensor in transit besides the model itself.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Element, Int, Tensor, TensorData};
use regex::Regex;
use safetensors::tensor::Dtype;

use super::error::{CheckpointError, Result, ShapeMismatch};
use super::reader::{Checkpoint, Le, TensorBytes};

/// How one table row maps checkpoint tensors onto module parameters (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.weight [out, in]` -> `.base.weight [in, out]`, `.bias` -> `.base.bias` (`PeftLinear`).
    Linear,
    /// `.weight [out, in]` -> `.weight [in, out]`, `.bias` -> `.bias` (Burn `Linear`).
    PlainLinear,
    /// `.weight` -> `.gamma`, `.bias` -> `.beta` (LayerNorm, GroupNorm).
    Norm,
    /// `.weight`, `.bias` unchanged (convolution).
    Conv,
    /// `.weight` -> `.base.weight`, `.bias` -> `.base.bias` (a convolution wrapped for LoRA).
    PeftConv,
    /// `.weight [n, d]` -> `.weight [n, d]` (Burn `Embedding`).
    Embedding,
    /// One tensor, reshaped to the model's shape (same number of elements).
    Tensor,
    /// timm's fused qkv: `.weight [3D, D]`, `.bias [3D]` -> three `PeftLinear`s.
    FusedQkv,
}

/// `(checkpoint key without .weight/.bias, our module path, kind)`; `{i}`-style placeholders
/// for indices.
pub type Row = (&'static str, &'static str, Kind);

/// A model's whole mapping from checkpoint keys to its parameters.
#[derive(Debug, Clone, Copy)]
pub struct KeyTable<'a> {
    /// The rows, tried in order; the first that matches a key wins.
    pub rows: &'a [Row],
    /// Key prefixes stripped when present (the first that matches), e.g. `vit.`.
    pub prefixes: &'a [&'a str],
    /// Regular expressions (matched against the whole key, with or without its prefix) of
    /// keys the model skips knowingly.
    pub ignored: &'a [&'a str],
}

/// How a parameter's value is cut from its source tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// As stored; reshaped to the model's shape when `reshape`.
    Copy { reshape: bool },
    /// `[rows, cols] -> [cols, rows]`.
    Transpose,
    /// Rows `part*D..(part+1)*D` of `[3D, C]`, transposed to `[C, D]`.
    QkvWeight(usize),
    /// Elements `part*D..(part+1)*D` of `[3D]`.
    QkvBias(usize),
}

impl Op {
    fn describe(self) -> &'static str {
        match self {
            Op::Copy { .. } => "as stored",
            Op::Transpose => "transposed",
            Op::QkvWeight(_) => "one third of the rows, transposed",
            Op::QkvBias(_) => "one third",
        }
    }

    /// The shape this op makes of a stored shape, or `None` where it does not apply.
    fn output_shape(self, stored: &[usize]) -> Option<Vec<usize>> {
        match (self, stored) {
            (Op::Copy { .. }, s) => Some(s.to_vec()),
            (Op::Transpose, [r, c]) => Some(vec![*c, *r]),
            (Op::QkvWeight(_), [r, c]) if r % 3 == 0 => Some(vec![*c, r / 3]),
            (Op::QkvBias(_), [r]) if r % 3 == 0 => Some(vec![r / 3]),
            _ => None,
        }
    }
}

/// Where one model parameter comes from.
#[derive(Debug, Clone)]
struct Source {
    key: String,
    op: Op,
}

/// A row with its patterns compiled.
struct CompiledRow {
    key: &'static str,
    ours: &'static str,
    kind: Kind,
    /// `^<key>(?P<suffix>\.weight|\.bias)?$` with `{i}` -> `(?P<i>\d+)`.
    key_re: Regex,
    /// `^<ours>(?P<rest>.*)$` with `{i}` -> `(?P<i>\d+)`.
    ours_re: Regex,
    placeholders: Vec<String>,
}

struct Compiled {
    rows: Vec<CompiledRow>,
    ignored: Vec<Regex>,
}

fn placeholders(pattern: &str) -> Vec<String> {
    let re = Regex::new(r"\{([a-z_][a-z0-9_]*)\}").expect("static pattern");
    re.captures_iter(pattern)
        .map(|c| c[1].to_string())
        .collect()
}

/// `pattern` as a regex body: escaped, with each `{name}` a named group of digits.
fn pattern_regex(pattern: &str) -> String {
    let mut re = regex::escape(pattern);
    for name in placeholders(pattern) {
        re = re.replace(&format!(r"\{{{name}\}}"), &format!(r"(?P<{name}>\d+)"));
    }
    re
}

fn fill(pattern: &str, names: &[String], caps: &regex::Captures<'_>) -> String {
    let mut out = pattern.to_string();
    for name in names {
        out = out.replace(&format!("{{{name}}}"), &caps[name.as_str()]);
    }
    out
}

impl KeyTable<'_> {
    fn compile(&self) -> Result<Compiled> {
        let mut rows = Vec::with_capacity(self.rows.len());
        for &(key, ours, kind) in self.rows {
            let bad = |message: String| CheckpointError::BadTable {
                row: key.to_string(),
                message,
            };
            let names = placeholders(key);
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            let mut in_ours = placeholders(ours);
            in_ours.sort();
            in_ours.dedup();
            if sorted.len() != names.len() {
                return Err(bad("a placeholder appears twice in the key".into()));
            }
            if sorted != in_ours {
                return Err(bad(format!(
                    "placeholders {sorted:?} of the key and {in_ours:?} of `{ours}` differ"
                )));
            }
            let key_re = Regex::new(&format!(
                r"^{}(?P<suffix>\.weight|\.bias)?$",
                pattern_regex(key)
            ))
            .map_err(|e| bad(e.to_string()))?;
            let ours_re = Regex::new(&format!(r"^{}(?P<rest>.*)$", pattern_regex(ours)))
                .map_err(|e| bad(e.to_string()))?;
            rows.push(CompiledRow {
                key,
                ours,
                kind,
                key_re,
                ours_re,
                placeholders: names,
            });
        }
        let ignored = self
            .ignored
            .iter()
            .map(|p| {
                Regex::new(&format!("^(?:{p})$")).map_err(|e| CheckpointError::BadTable {
                    row: p.to_string(),
                    message: format!("ignored pattern: {e}"),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Compiled { rows, ignored })
    }

    /// The checkpoint key (without optional prefix) that feeds model parameter `param`, if a
    /// row covers it.
    pub fn checkpoint_key(&self, param: &str) -> Result<Option<String>> {
        Ok(reverse(&self.compile()?, param))
    }

    /// Our module path of a checkpoint *module* name (a key without `.weight`/`.bias`, prefix
    /// optional) when a `Linear` or `PlainLinear` row covers it: the reverse of
    /// [`checkpoint_key`](Self::checkpoint_key) for whole layers, as adapter formats name them.
    pub fn module_path(&self, module: &str) -> Result<Option<String>> {
        let compiled = self.compile()?;
        let stripped = self
            .prefixes
            .iter()
            .find_map(|p| module.strip_prefix(p))
            .unwrap_or(module);
        Ok(compiled.rows.iter().find_map(|row| {
            if !matches!(row.kind, Kind::Linear | Kind::PlainLinear) {
                return None;
            }
            let caps = row.key_re.captures(stripped)?;
            caps.name("suffix")
                .is_none()
                .then(|| fill(row.ours, &row.placeholders, &caps))
        }))
    }

    /// Load `ckpt` into `model`: check the whole mapping first (all missing and unexpected
    /// keys in one error, then shapes and dtypes), then feed the parameters one by one.
    ///
    /// Float parameters take float tensors (F64, F32, F16, BF16), converted to the
    /// parameter's dtype (or the device's default float dtype for a parameter not yet
    /// initialised); integer parameters take integer tensors. Ids, devices and gradient
    /// requirements of the parameters are kept.
    pub fn load<B: Backend, M: Module<B>>(&self, model: M, ckpt: &Checkpoint) -> Result<M> {
        let compiled = self.compile()?;
        let plan = self.plan(&compiled, ckpt)?;
        let params = model_params(&model);
        self.check(&compiled, &plan, &params, ckpt)?;
        let mut loader = Loader {
            ckpt,
            plan: &plan,
            stack: Vec::new(),
            error: None,
        };
        let model = model.map(&mut loader);
        match loader.error {
            Some(e) => Err(e),
            None => Ok(model),
        }
    }

    /// Every checkpoint key mapped to the parameters it feeds, or listed as unexpected.
    fn plan(&self, compiled: &Compiled, ckpt: &Checkpoint) -> Result<Plan> {
        let mut plan = Plan::default();
        for key in ckpt.keys() {
            let stripped = self
                .prefixes
                .iter()
                .find_map(|p| key.strip_prefix(p))
                .unwrap_or(&key);
            if compiled
                .ignored
                .iter()
                .any(|r| r.is_match(&key) || r.is_match(stripped))
            {
                continue;
            }
            let targets = compiled
                .rows
                .iter()
                .find_map(|row| row.key_re.captures(stripped).map(|c| (row, c)))
                .and_then(|(row, caps)| {
                    let ours = fill(row.ours, &row.placeholders, &caps);
                    let suffix = caps.name("suffix").map_or("", |m| m.as_str());
                    targets(row.kind, &ours, suffix)
                });
            let Some(targets) = targets else {
                plan.unexpected.push(format!("`{key}` (no table row)"));
                continue;
            };
            for (param, op) in targets {
                if let Some(first) = plan.sources.get(&param) {
                    return Err(CheckpointError::FedTwice {
                        path: ckpt.path().to_path_buf(),
                        param,
                        first: first.key.clone(),
                        second: key.clone(),
                    });
                }
                plan.sources.insert(
                    param,
                    Source {
                        key: key.clone(),
                        op,
                    },
                );
            }
        }
        Ok(plan)
    }

    /// Names, then shapes and dtypes, from the headers and the model's lazy shapes.
    fn check(
        &self,
        compiled: &Compiled,
        plan: &Plan,
        params: &BTreeMap<String, ParamSpec>,
        ckpt: &Checkpoint,
    ) -> Result<()> {
        let mut unexpected = plan.unexpected.clone();
        for (param, src) in &plan.sources {
            if !params.contains_key(param) {
                unexpected.push(format!(
                    "`{}` (would feed `{param}`, which the model does not have)",
                    src.key
                ));
            }
        }
        let missing: Vec<String> = params
            .keys()
            .filter(|p| !plan.sources.contains_key(*p))
            .map(|p| match reverse(compiled, p) {
                Some(k) => format!("`{k}` (model parameter `{p}`)"),
                None => format!("(no table row feeds model parameter `{p}`)"),
            })
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            unexpected.sort();
            unexpected.dedup();
            return Err(CheckpointError::KeysMismatch {
                path: ckpt.path().to_path_buf(),
                missing,
                unexpected,
                prefixes: self.prefixes.iter().map(|p| format!("`{p}`")).collect(),
            });
        }
        for (param, src) in &plan.sources {
            let spec = &params[param];
            let info = ckpt.info(&src.key)?;
            let file = ckpt.file_of(&src.key)?.to_path_buf();
            let output = src.op.output_shape(&info.shape);
            let shape_err = || ShapeMismatch {
                path: file.clone(),
                key: src.key.clone(),
                param: param.clone(),
                found: info.shape.clone(),
                note: match (src.op, &output) {
                    (Op::Copy { .. }, _) => String::new(),
                    (op, Some(s)) => format!(" ({}: {s:?})", op.describe()),
                    (op, None) => format!(" (not a shape to read {})", op.describe()),
                },
                expected: spec.shape.clone(),
            };
            let found = output.clone().ok_or_else(shape_err)?;
            let fits = match src.op {
                Op::Copy { reshape: true } => {
                    let numel = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                    let squeeze =
                        |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
                    numel(&found) == numel(&spec.shape) && squeeze(&found) == squeeze(&spec.shape)
                }
                _ => found == spec.shape,
            };
            if !fits {
                return Err(shape_err().into());
            }
            let float = super::reader::burn_float_dtype(info.dtype).is_some();
            let int = matches!(
                info.dtype,
                Dtype::I64
                    | Dtype::I32
                    | Dtype::I16
                    | Dtype::I8
                    | Dtype::U64
                    | Dtype::U32
                    | Dtype::U16
                    | Dtype::U8
            );
            match spec.int {
                false if !float => {
                    return Err(ckpt.dtype_err(
                        &src.key,
                        info.dtype,
                        "a float parameter needs F64, F32, F16 or BF16",
                    ))
                }
                true if !int => {
                    return Err(ckpt.dtype_err(
                        &src.key,
                        info.dtype,
                        "an integer parameter needs an integer dtype",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Each checkpoint key's targets, and the keys no row covers.
#[derive(Default)]
struct Plan {
    /// Model parameter path -> its source.
    sources: BTreeMap<String, Source>,
    unexpected: Vec<String>,
}

/// The parameters a key feeds, for a row of `kind` and the key's `.weight`/`.bias` suffix.
fn targets(kind: Kind, ours: &str, suffix: &str) -> Option<Vec<(String, Op)>> {
    let copy = Op::Copy { reshape: false };
    let one = |leaf: &str, op| Some(vec![(format!("{ours}{leaf}"), op)]);
    match (kind, suffix) {
        (Kind::Tensor, "" | ".weight") => one("", Op::Copy { reshape: true }),
        (Kind::Linear, ".weight") => one(".base.weight", Op::Transpose),
        (Kind::Linear, ".bias") => one(".base.bias", copy),
        (Kind::PlainLinear, ".weight") => one(".weight", Op::Transpose),
        (Kind::PlainLinear | Kind::Conv, ".bias") | (Kind::Conv | Kind::Embedding, ".weight") => {
            one(suffix, copy)
        }
        (Kind::PeftConv, ".weight" | ".bias") => one(&format!(".base{suffix}"), copy),
        (Kind::Norm, ".weight") => one(".gamma", copy),
        (Kind::Norm, ".bias") => one(".beta", copy),
        (Kind::FusedQkv, ".weight" | ".bias") => Some(
            ["query", "key", "value"]
                .iter()
                .enumerate()
                .map(|(part, name)| {
                    let op = if suffix == ".weight" {
                        Op::QkvWeight(part)
                    } else {
                        Op::QkvBias(part)
                    };
                    (format!("{ours}.{name}.base{suffix}"), op)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The checkpoint key (without prefix) that would feed `param`.
fn reverse(compiled: &Compiled, param: &str) -> Option<String> {
    compiled.rows.iter().find_map(|row| {
        let caps = row.ours_re.captures(param)?;
        let rest = caps.name("rest").map_or("", |m| m.as_str());
        let suffix = match (row.kind, rest) {
            (Kind::Tensor, "") => "",
            (Kind::Linear | Kind::PeftConv, ".base.weight")
            | (Kind::PlainLinear | Kind::Conv | Kind::Embedding, ".weight")
            | (Kind::Norm, ".gamma") => ".weight",
            (Kind::Linear | Kind::PeftConv, ".base.bias")
            | (Kind::PlainLinear | Kind::Conv, ".bias")
            | (Kind::Norm, ".beta") => ".bias",
            (Kind::FusedQkv, r)
                if [".query", ".key", ".value"]
                    .iter()
                    .any(|q| r == format!("{q}.base.weight")) =>
            {
                ".weight"
            }
            (Kind::FusedQkv, r)
                if [".query", ".key", ".value"]
                    .iter()
                    .any(|q| r == format!("{q}.base.bias")) =>
            {
                ".bias"
            }
            _ => return None,
        };
        Some(format!(
            "{}{suffix}",
            fill(row.key, &row.placeholders, &caps)
        ))
    })
}

/// What the model declares for one parameter, without initialising it.
struct ParamSpec {
    shape: Vec<usize>,
    int: bool,
}

/// Every float and int parameter of `model` by path, with its (lazy) shape.
fn model_params<B: Backend, M: Module<B>>(model: &M) -> BTreeMap<String, ParamSpec> {
    struct Specs {
        stack: Vec<String>,
        out: BTreeMap<String, ParamSpec>,
    }
    impl<B: Backend> ModuleVisitor<B> for Specs {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.lazy_shape().to_vec();
            self.out
                .insert(self.stack.join("."), ParamSpec { shape, int: false });
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            let shape = param.lazy_shape().to_vec();
            self.out
                .insert(self.stack.join("."), ParamSpec { shape, int: true });
        }
    }
    let mut v = Specs {
        stack: Vec::new(),
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// The mapper that feeds each parameter from its source, one tensor at a time.
struct Loader<'a> {
    ckpt: &'a Checkpoint,
    plan: &'a Plan,
    stack: Vec<String>,
    /// The first error; once set, the remaining parameters are passed through untouched.
    error: Option<CheckpointError>,
}

impl Loader<'_> {
    /// The source of the current parameter, cut and in its stored dtype.
    fn next(&mut self, shape: &[usize]) -> Option<TensorData> {
        if self.error.is_some() {
            return None;
        }
        let path = self.stack.join(".");
        let src = self.plan.sources.get(&path)?;
        match self
            .ckpt
            .bytes(&src.key)
            .and_then(|t| cut(self.ckpt, &src.key, t, src.op, shape))
        {
            Ok(data) => {
                // The value is copied out: unmap its pages so that a whole checkpoint never
                // sits in this process (they stay in the page cache).
                self.ckpt.release(&src.key);
                Some(data)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.lazy_shape().to_vec();
        let Some(data) = self.next(&shape) else {
            return param;
        };
        let device = param.lazy_device();
        // Keep the dtype the model chose; a lazy parameter gets the device's default.
        let tensor = if param.is_initialized() {
            let dtype = param.val().dtype();
            Tensor::from_data(data.convert_dtype(dtype), (&device, dtype))
        } else {
            Tensor::from_data(data, &device)
        };
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let shape = param.lazy_shape().to_vec();
        let Some(data) = self.next(&shape) else {
            return param;
        };
        let device = param.lazy_device();
        let tensor = if param.is_initialized() {
            let dtype = param.val().dtype();
            Tensor::from_data(data.convert_dtype(dtype), (&device, dtype))
        } else {
            Tensor::from_data(data, &device)
        };
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Apply `op` to a stored tensor, keeping its dtype: one allocation, straight from the map.
fn cut(
    ckpt: &Checkpoint,
    key: &str,
    t: TensorBytes<'_>,
    op: Op,
    model_shape: &[usize],
) -> Result<TensorData> {
    Ok(match t.dtype {
        Dtype::F64 => cut_as::<f64>(t, op, model_shape),
        Dtype::F32 => cut_as::<f32>(t, op, model_shape),
        Dtype::F16 => cut_as::<half::f16>(t, op, model_shape),
        Dtype::BF16 => cut_as::<half::bf16>(t, op, model_shape),
        Dtype::I64 => cut_as::<i64>(t, op, model_shape),
        Dtype::I32 => cut_as::<i32>(t, op, model_shape),
        Dtype::I16 => cut_as::<i16>(t, op, model_shape),
        Dtype::I8 => cut_as::<i8>(t, op, model_shape),
        Dtype::U64 => cut_as::<u64>(t, op, model_shape),
        Dtype::U32 => cut_as::<u32>(t, op, model_shape),
        Dtype::U16 => cut_as::<u16>(t, op, model_shape),
        Dtype::U8 => cut_as::<u8>(t, op, model_shape),
        other => return Err(ckpt.dtype_err(key, other, "expected a float or integer dtype")),
    })
}

fn cut_as<T: Le + Element>(t: TensorBytes<'_>, op: Op, model_shape: &[usize]) -> TensorData {
    let s = T::SIZE;
    match (op, t.shape) {
        (Op::Copy { .. }, _) => {
            TensorData::new(super::reader::decode::<T>(t.bytes), model_shape.to_vec())
        }
        (Op::Transpose, &[rows, cols]) => {
            TensorData::new(transposed::<T>(t.bytes, rows, cols), [cols, rows])
        }
        (Op::QkvWeight(part), &[r3, cols]) => {
            let d = r3 / 3;
            let block = &t.bytes[part * d * cols * s..(part + 1) * d * cols * s];
            TensorData::new(transposed::<T>(block, d, cols), [cols, d])
        }
        (Op::QkvBias(part), &[r3]) => {
            let d = r3 / 3;
            let block = &t.bytes[part * d * s..(part + 1) * d * s];
            TensorData::new(super::reader::decode::<T>(block), [d])
        }
        _ => unreachable!("shapes are checked before loading"),
    }
}

/// Little-endian `[rows, cols]` bytes to a `[cols, rows]` row-major vector, in tiles so both
/// sides stay in cache.
fn transposed<T: Le>(bytes: &[u8], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 32;
    let s = T::SIZE;
    let zero = T::from_le(&[0u8; 16][..s]);
    let mut out = vec![zero; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    let i = (r * cols + c) * s;
                    out[c * rows + r] = T::from_le(&bytes[i..i + s]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_matches_the_plain_transpose() {
        let (rows, cols) = (37, 70);
        let vals: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            transposed::<f32>(&bytes, rows, cols),
            crate::io::transpose(&vals, rows, cols)
        );
    }

    #[test]
    fn placeholders_fill_both_ways() {
        let table = KeyTable {
            rows: &[(
                "down_blocks.{i}.resnets.{j}.conv1",
                "down.{i}.res.{j}.conv1",
                Kind::PeftConv,
            )],
            prefixes: &[],
            ignored: &[],
        };
        assert_eq!(
            table
                .checkpoint_key("down.2.res.1.conv1.base.bias")
                .unwrap()
                .as_deref(),
            Some("down_blocks.2.resnets.1.conv1.bias")
        );
        let bad = KeyTable {
            rows: &[("a.{i}.b", "a.b", Kind::Linear)],
            prefixes: &[],
            ignored: &[],
        };
        assert!(matches!(
            bad.checkpoint_key("a.b"),
            Err(CheckpointError::BadTable { .. })
        ));
    }
}
