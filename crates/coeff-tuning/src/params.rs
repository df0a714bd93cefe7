//! Walking a model's parameters by module path: counting, freezing, reading and writing.
//!
//! A leaf module: the adapters, the PEFT machinery, the checkpoint layer and the trainer all
//! address parameters through it.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, ElementConversion, Tensor, TensorData};
use serde::Serialize;

/// Trainable vs total parameter counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParamReport {
    /// Parameters the optimizer updates.
    pub trainable: usize,
    /// All parameters of the model.
    pub total: usize,
}

impl ParamReport {
    /// Count the parameters of `model`; those under `trainable_prefixes` are trainable.
    pub fn of<B: Backend, M: Module<B>>(model: &M, trainable_prefixes: &[String]) -> Self {
        let mut v = PathVisitor::new(|path: &str, shape: &[usize], _: &dyn Fn() -> TensorData| {
            (path.to_string(), shape.iter().product::<usize>())
        });
        model.visit(&mut v);
        let mut report = ParamReport::default();
        for (path, numel) in v.out {
            report.total += numel;
            if under_any(&path, trainable_prefixes) {
                report.trainable += numel;
            }
        }
        report
    }

    /// Trainable share in percent.
    pub fn percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total.max(1) as f64
    }
}

impl std::fmt::Display for ParamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            self.percent()
        )
    }
}

/// Whether `path` is `prefix` or lies below it, for any prefix.
pub fn under_any(path: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        path == p
            || (path.len() > p.len()
                && path.starts_with(p.as_str())
                && path.as_bytes()[p.len()] == b'.')
    })
}

/// Every module path in `model` (all proper prefixes of parameter paths), sorted.
pub fn module_paths<B: Backend, M: Module<B>>(model: &M) -> Vec<String> {
    let mut v =
        PathVisitor::new(|path: &str, _: &[usize], _: &dyn Fn() -> TensorData| path.to_string());
    model.visit(&mut v);
    let mut set = BTreeSet::new();
    for path in v.out {
        let mut end = 0;
        while let Some(i) = path[end..].find('.') {
            end += i;
            set.insert(path[..end].to_string());
            end += 1;
        }
    }
    set.into_iter().collect()
}

/// Every float parameter as `(path, shape, values as f32)`, for those under `prefixes`.
pub fn collect_params<B: Backend, M: Module<B>>(
    model: &M,
    prefixes: &[String],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    collect_where(model, |path| under_any(path, prefixes))
}

/// Every float parameter whose path `keep` accepts, as `(path, shape, values as f32)`; the
/// others are not read.
pub fn collect_where<B: Backend, M: Module<B>>(
    model: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut v = PathVisitor::new(|path: &str, _: &[usize], data: &dyn Fn() -> TensorData| {
        if keep(path) {
            let data = data().convert::<f32>();
            let shape = data.shape.to_vec();
            Some((
                path.to_string(),
                shape,
                data.into_vec::<f32>().expect("converted to f32"),
            ))
        } else {
            None
        }
    });
    model.visit(&mut v);
    v.out.into_iter().flatten().collect()
}

/// Every float parameter of `model` as `(path, shape, values as f32)`.
pub fn all_params<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut v = PathVisitor::new(|path: &str, _: &[usize], data: &dyn Fn() -> TensorData| {
        let data = data().convert::<f32>();
        let shape = data.shape.to_vec();
        (
            path.to_string(),
            shape,
            data.into_vec::<f32>().expect("converted to f32"),
        )
    });
    model.visit(&mut v);
    v.out
}

/// Shapes of every float parameter under `prefixes`, by path.
pub fn param_shapes<B: Backend, M: Module<B>>(
    model: &M,
    prefixes: &[String],
) -> BTreeMap<String, Vec<usize>> {
    let mut v = PathVisitor::new(|path: &str, shape: &[usize], _: &dyn Fn() -> TensorData| {
        under_any(path, prefixes).then(|| (path.to_string(), shape.to_vec()))
    });
    model.visit(&mut v);
    v.out.into_iter().flatten().collect()
}

/// Force every lazily initialised parameter to take its value now.
///
/// Burn initialises parameters lazily, and cloning a module whose parameters are still
/// uninitialised gives the clone *different* random values. Models built here are
/// materialised at construction so that clones (base vs adapted copies) share weights.
pub fn materialize<B: Backend, M: Module<B>>(model: M) -> M {
    struct Materialize;
    impl<B: Backend> ModuleMapper<B> for Materialize {}
    model.map(&mut Materialize)
}

/// Shapes of every float parameter of `model`, by path.
pub fn all_param_shapes<B: Backend, M: Module<B>>(model: &M) -> BTreeMap<String, Vec<usize>> {
    let mut v = PathVisitor::new(|path: &str, shape: &[usize], _: &dyn Fn() -> TensorData| {
        (path.to_string(), shape.to_vec())
    });
    model.visit(&mut v);
    v.out.into_iter().collect()
}

/// Mark parameters under `prefixes` trainable and every other parameter frozen.
pub fn set_trainable<B: Backend, M: Module<B>>(model: M, prefixes: &[String]) -> M {
    let mut mapper = PathMapper {
        stack: Vec::new(),
        f: |path: &str| ParamAction::RequireGrad(under_any(path, prefixes)),
    };
    model.map(&mut mapper)
}

/// Replace the parameters named in `values` (path -> `(shape, data)`); keeps each parameter's
/// id and its gradient requirement. The caller checks names and shapes beforehand.
pub fn replace_params<B: Backend, M: Module<B>>(
    model: M,
    values: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> M {
    let mut mapper = PathMapper {
        stack: Vec::new(),
        f: |path: &str| match values.get(path) {
            Some((shape, data)) => {
                ParamAction::Replace(TensorData::new(data.clone(), shape.clone()))
            }
            None => ParamAction::Keep,
        },
    };
    model.map(&mut mapper)
}

/// What [`PathMapper`] does to one parameter.
enum ParamAction {
    Keep,
    RequireGrad(bool),
    Replace(TensorData),
}

/// A visitor that tracks the module path and calls `f(path, numel, data)` per float param.
struct PathVisitor<T, F> {
    stack: Vec<String>,
    out: Vec<T>,
    f: F,
}

impl<T, F> PathVisitor<T, F>
where
    F: FnMut(&str, &[usize], &dyn Fn() -> TensorData) -> T,
{
    fn new(f: F) -> Self {
        Self {
            stack: Vec::new(),
            out: Vec::new(),
            f,
        }
    }
}

impl<B, T, F> ModuleVisitor<B> for PathVisitor<T, F>
where
    B: Backend,
    F: FnMut(&str, &[usize], &dyn Fn() -> TensorData) -> T,
{
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.stack.join(".");
        let shape = param.shape().to_vec();
        let data = || param.val().into_data();
        let item = (self.f)(&path, &shape, &data);
        self.out.push(item);
    }
}

/// A mapper that tracks the module path and rewrites each float param with `f`.
struct PathMapper<F> {
    stack: Vec<String>,
    f: F,
}

impl<B, F> ModuleMapper<B> for PathMapper<F>
where
    B: Backend,
    F: FnMut(&str) -> ParamAction,
{
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.stack.join(".");
        let (id, tensor, mapper) = param.consume();
        let tensor = match (self.f)(&path) {
            ParamAction::Keep => tensor,
            ParamAction::RequireGrad(on) => tensor.set_require_grad(on),
            ParamAction::Replace(data) => {
                let grad = tensor.is_require_grad();
                Tensor::from_data(data, &tensor.device()).set_require_grad(grad)
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The first float parameter (in module order) with NaN or infinite values: its path, how many
/// such values, its size. Counted on the device, one parameter at a time (for a checkpoint
/// just loaded, or a model just trained).
pub fn first_non_finite<B: Backend, M: Module<B>>(model: &M) -> Option<(String, usize, usize)> {
    struct Scan {
        stack: Vec<String>,
        found: Option<(String, usize, usize)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Scan {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.found.is_some() {
                return;
            }
            let t = param.val();
            let numel = t.shape().num_elements();
            let bad: i64 = t.is_finite().bool_not().int().sum().into_scalar().elem();
            if bad > 0 {
                self.found = Some((self.stack.join("."), bad as usize, numel));
            }
        }
    }
    let mut scan = Scan {
        stack: Vec::new(),
        found: None,
    };
    model.visit(&mut scan);
    scan.found
}
