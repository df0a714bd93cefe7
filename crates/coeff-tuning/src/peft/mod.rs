//! Parameter-efficient fine-tuning around the attention operator: which layers get LoRA/DoRA
//! or Coeff-Tuning, freezing everything else, reporting parameter counts, merging, and
//! adapter files.
//!
//! A model makes itself adaptable by implementing [`Adaptable`]: it lists its
//! [`PeftLinear`], [`PeftConv2d`] and [`MultiHeadAttention`] layers with their module paths.
//! Everything else (selection by pattern, freezing, saving) works on those paths and on Burn's
//! visitors. [`inject`] checks the paths a model reports against its real parameters, so a
//! misspelled path in a model's `visit_sites` is an error, not a silently frozen adapter.

pub mod file;
pub mod interop;
pub mod lora_files;
pub mod target;

pub use crate::params;

use std::collections::BTreeSet;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

pub use crate::adapters::{LoraAdapter, LoraConfig, PeftConv2d, PeftLinear};
pub use file::{load_adapter, save_adapter, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
pub use params::ParamReport;

use crate::attention::MultiHeadAttention;
use crate::error::{PeftError, Result};

/// One adaptable layer of a model, handed out by [`Adaptable::visit_sites`].
///
/// Non-exhaustive: a later release may add kinds, so code that matches on sites keeps a
/// wildcard arm.
#[non_exhaustive]
pub enum Site<'a, B: Backend> {
    /// A linear layer: LoRA / DoRA attach here.
    Linear(&'a mut PeftLinear<B>),
    /// A 2-D convolution: LoRA / DoRA attach here too (UNet `conv1`, `conv2`, `proj_in`, ...).
    Conv2d(&'a mut PeftConv2d<B>),
    /// An attention layer: Coeff-Tuning attaches here.
    Attention(&'a mut MultiHeadAttention<B>),
}

/// What kind of layer a [`Site`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SiteKind {
    /// [`Site::Linear`]
    Linear,
    /// [`Site::Conv2d`]
    Conv2d,
    /// [`Site::Attention`]
    Attention,
}

impl SiteKind {
    /// Whether LoRA / DoRA (weight-space adapters) attach to this kind.
    pub fn takes_lora(self) -> bool {
        matches!(self, SiteKind::Linear | SiteKind::Conv2d)
    }

    /// A parameter every layer of this kind has, relative to its path: used to check that a
    /// path a model reports is a real module path.
    fn witness_param(self) -> &'static str {
        match self {
            SiteKind::Linear | SiteKind::Conv2d => "base.weight",
            SiteKind::Attention => "query.base.weight",
        }
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Linear => "linear",
            SiteKind::Conv2d => "conv2d",
            SiteKind::Attention => "attention",
        }
    }
}

impl<B: Backend> Site<'_, B> {
    /// The kind of this site.
    pub fn kind(&self) -> SiteKind {
        match self {
            Site::Linear(_) => SiteKind::Linear,
            Site::Conv2d(_) => SiteKind::Conv2d,
            Site::Attention(_) => SiteKind::Attention,
        }
    }
}

/// A model (or sub-module) whose linear and attention layers can be adapted.
///
/// `visit_sites` must call `f` once per adaptable layer, with the layer's module path as Burn's
/// visitors spell it (field names joined by `.`, `Vec` entries by index), starting from
/// `path`. Use [`join`] to build child paths.
pub trait Adaptable<B: Backend>: Module<B> {
    /// Visit every adaptable layer.
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()>;
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<B: Backend> Adaptable<B> for PeftLinear<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()> {
        f(path, Site::Linear(self))
    }
}

impl<B: Backend> Adaptable<B> for PeftConv2d<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()> {
        f(path, Site::Conv2d(self))
    }
}

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Option<M> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Some(m) => m.visit_sites(path, f),
            None => Ok(()),
        }
    }
}

impl<B: Backend> Adaptable<B> for MultiHeadAttention<B> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()> {
        f(path, Site::Attention(self))?;
        self.query.visit_sites(&join(path, "query"), f)?;
        self.key.visit_sites(&join(path, "key"), f)?;
        self.value.visit_sites(&join(path, "value"), f)?;
        self.output.visit_sites(&join(path, "output"), f)
    }
}

impl<B: Backend, M: Adaptable<B>> Adaptable<B> for Vec<M> {
    fn visit_sites(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, Site<'_, B>) -> Result<()>,
    ) -> Result<()> {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_sites(&join(path, &i.to_string()), f)?;
        }
        Ok(())
    }
}

/// Coeff-Tuning settings of an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoeffSpec {
    /// Dropout on `alpha` during training (paper: 0.2).
    pub dropout: f64,
}

impl Default for CoeffSpec {
    fn default() -> Self {
        Self { dropout: 0.2 }
    }
}

/// Which layers to adapt and how. Serialised as the adapter file's JSON config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeftConfig {
    /// LoRA / DoRA settings; `None` = no weight-space adapter.
    pub lora: Option<LoraConfig>,
    /// Linear layers that get LoRA / DoRA (patterns, see [`target`]).
    #[serde(default)]
    pub target_modules: Vec<String>,
    /// Coeff-Tuning settings; `None` = no coefficients.
    pub coeff: Option<CoeffSpec>,
    /// Attention layers that get coefficients; empty = every attention layer.
    #[serde(default)]
    pub coeff_targets: Vec<String>,
    /// Layers (linear or attention) never adapted, even if a target pattern selects them.
    #[serde(default)]
    pub exclude_modules: Vec<String>,
    /// Modules trained in full and saved with the adapter (e.g. a classification head); also
    /// the model's own top-level tensors (e.g. a ViT's `cls_token`), which no module holds.
    #[serde(default)]
    pub modules_to_save: Vec<String>,
}

/// The method combinations the conformance suite and the experiments use, ordered as the
/// paper's tables order them (the derived `Ord` is that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Coefficients only.
    Coeff,
    /// LoRA only.
    Lora,
    /// LoRA and coefficients.
    LoraCoeff,
    /// DoRA only.
    Dora,
    /// DoRA and coefficients.
    DoraCoeff,
}

impl Method {
    /// Every combination, in table order.
    pub const ALL: [Method; 5] = [
        Method::Coeff,
        Method::Lora,
        Method::LoraCoeff,
        Method::Dora,
        Method::DoraCoeff,
    ];

    /// Short name as used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Coeff => "coeff",
            Method::Lora => "lora",
            Method::Dora => "dora",
            Method::LoraCoeff => "lora+coeff",
            Method::DoraCoeff => "dora+coeff",
        }
    }

    /// Whether the method trains Coeff-Tuning coefficients.
    pub fn has_coeff(self) -> bool {
        matches!(self, Method::Coeff | Method::LoraCoeff | Method::DoraCoeff)
    }

    /// The method's weight-space adapter, if any.
    pub fn lora(self, rank: usize) -> Option<LoraConfig> {
        match self {
            Method::Coeff => None,
            Method::Lora | Method::LoraCoeff => Some(LoraConfig::new().with_rank(rank)),
            Method::Dora | Method::DoraCoeff => {
                Some(LoraConfig::new().with_rank(rank).with_use_dora(true))
            }
        }
    }

    /// A config for this method: LoRA/DoRA of `rank` on `targets`, coefficients (alpha dropout
    /// 0.2) on every attention layer.
    ///
    /// `lora_alpha` is PEFT's default, 8, whatever the rank: the update is scaled by
    /// `8 / rank` (rank 4 -> 2, rank 8 -> 1, rank 16 -> 0.5). Set another with
    /// `cfg.lora.as_mut().unwrap().alpha = ...` or build the [`PeftConfig`] yourself.
    pub fn config(self, rank: usize, targets: &[&str]) -> PeftConfig {
        let lora = self.lora(rank);
        PeftConfig {
            target_modules: if lora.is_some() {
                targets.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            },
            lora,
            coeff: self.has_coeff().then(CoeffSpec::default),
            coeff_targets: Vec::new(),
            exclude_modules: Vec::new(),
            modules_to_save: Vec::new(),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method `{s}`; expected one of {}", names.join(", "))
            })
    }
}

/// What [`inject`] did; needed again to save the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The config that was applied.
    pub config: PeftConfig,
    /// Linear layers that carry LoRA / DoRA.
    pub lora_layers: Vec<String>,
    /// Attention layers that carry coefficients.
    pub coeff_layers: Vec<String>,
    /// Modules trained in full.
    pub saved_modules: Vec<String>,
    /// Parameter counts after injection.
    pub params: ParamReport,
}

impl Injected {
    /// Path prefixes whose parameters are trainable (and saved in the adapter file).
    pub fn trainable_prefixes(&self) -> Vec<String> {
        self.lora_layers
            .iter()
            .map(|p| join(p, "lora"))
            .chain(self.coeff_layers.iter().map(|p| join(p, "coeff")))
            .chain(self.saved_modules.iter().cloned())
            .collect()
    }
}

/// Attach the adapters `config` asks for, freeze everything else, and report.
///
/// Errors: a pattern that matches nothing (listing what exists), a bad regex, an empty or
/// invalid config, a layer already carrying an adapter, a site path the model reports that is
/// not one of its module paths (a bug in its [`Adaptable`] impl), and a trainable prefix that
/// selects no parameter.
pub fn inject<B: Backend, M: Adaptable<B>>(
    mut model: M,
    config: &PeftConfig,
) -> Result<(M, Injected)> {
    validate(config)?;
    let sites = list_sites(&mut model)?;
    let of_kind = |want: &dyn Fn(SiteKind) -> bool| -> Vec<String> {
        sites
            .iter()
            .filter(|(_, k)| want(*k))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let weight_layers = of_kind(&|k| k.takes_lora());
    let attentions = of_kind(&|k| k == SiteKind::Attention);
    let all: Vec<String> = sites.iter().map(|(p, _)| p.clone()).collect();
    let excluded: BTreeSet<&String> = target::select(
        &config.exclude_modules,
        &all,
        "exclude_modules",
        "adaptable layer",
    )?
    .into_iter()
    .collect();

    let lora_layers: Vec<String> = if config.lora.is_some() {
        target::select(
            &config.target_modules,
            &weight_layers,
            "target_modules",
            "linear or conv layer",
        )?
        .into_iter()
        .filter(|p| !excluded.contains(p))
        .cloned()
        .collect()
    } else {
        Vec::new()
    };
    let coeff_layers: Vec<String> = match (&config.coeff, config.coeff_targets.is_empty()) {
        (None, _) => Vec::new(),
        (Some(_), true) => attentions.clone(),
        (Some(_), false) => target::select(
            &config.coeff_targets,
            &attentions,
            "coeff_targets",
            "attention layer",
        )?
        .into_iter()
        .cloned()
        .collect(),
    }
    .into_iter()
    .filter(|p| !excluded.contains(p))
    .collect();
    if config.lora.is_some() && lora_layers.is_empty() {
        return Err(PeftError::InvalidConfig(
            "every layer selected by target_modules is also in exclude_modules".into(),
        ));
    }
    if config.coeff.is_some() && coeff_layers.is_empty() {
        return Err(PeftError::InvalidConfig(
            "the model has no attention layer left for Coeff-Tuning".into(),
        ));
    }

    // Modules, and the model's own top-level tensors (a class token, position embeddings),
    // which no module holds.
    let mut module_paths = params::module_paths(&model);
    module_paths.extend(
        params::all_param_shapes(&model)
            .into_keys()
            .filter(|p| !p.contains('.')),
    );
    let saved_modules: Vec<String> = target::select(
        &config.modules_to_save,
        &module_paths,
        "modules_to_save",
        "module",
    )?
    .into_iter()
    .cloned()
    .collect();

    let lora_set: BTreeSet<&String> = lora_layers.iter().collect();
    let coeff_set: BTreeSet<&String> = coeff_layers.iter().collect();
    model.visit_sites("", &mut |path, site| {
        let path_s = path.to_string();
        match site {
            Site::Linear(lin) if lora_set.contains(&path_s) => {
                lin.inject(config.lora.as_ref().expect("checked above"), path)
            }
            Site::Conv2d(conv) if lora_set.contains(&path_s) => {
                conv.inject(config.lora.as_ref().expect("checked above"), path)
            }
            Site::Attention(attn) if coeff_set.contains(&path_s) => {
                let spec = config.coeff.as_ref().expect("checked above");
                attn.inject_coeff(spec.dropout, path)
            }
            _ => Ok(()),
        }
    })?;

    let mut injected = Injected {
        config: config.clone(),
        lora_layers,
        coeff_layers,
        saved_modules,
        params: ParamReport::default(),
    };
    let prefixes = injected.trainable_prefixes();
    let shapes = params::all_param_shapes(&model);
    if let Some(prefix) = prefixes.iter().find(|p| {
        !shapes
            .keys()
            .any(|k| params::under_any(k, std::slice::from_ref(p)))
    }) {
        return Err(PeftError::InvalidConfig(format!(
            "trainable prefix `{prefix}` selects no parameter of the model"
        )));
    }
    let model = params::set_trainable(model, &prefixes);
    injected.params = ParamReport::of(&model, &prefixes);
    Ok((model, injected))
}

fn validate(config: &PeftConfig) -> Result<()> {
    if config.lora.is_none() && config.coeff.is_none() && config.modules_to_save.is_empty() {
        return Err(PeftError::EmptyConfig);
    }
    if let Some(lora) = &config.lora {
        if config.target_modules.is_empty() {
            return Err(PeftError::InvalidConfig(
                "LoRA/DoRA is enabled but target_modules is empty".into(),
            ));
        }
        if lora.rank == 0 {
            return Err(PeftError::InvalidConfig(
                "LoRA rank must be positive".into(),
            ));
        }
        if !lora.alpha.is_finite() {
            return Err(PeftError::InvalidConfig(format!(
                "LoRA alpha must be a finite number, got {}",
                lora.alpha
            )));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(PeftError::InvalidConfig(format!(
                "LoRA dropout must be in [0, 1), got {}",
                lora.dropout
            )));
        }
    }
    if let Some(coeff) = &config.coeff {
        if !(0.0..1.0).contains(&coeff.dropout) {
            return Err(PeftError::InvalidConfig(format!(
                "Coeff dropout must be in [0, 1), got {}",
                coeff.dropout
            )));
        }
    }
    Ok(())
}

/// Every site of the model with its kind, in visiting order, checked: each path must be a
/// real module path of the model (its kind's witness parameter exists) and appear once.
pub fn list_sites<B: Backend, M: Adaptable<B>>(model: &mut M) -> Result<Vec<(String, SiteKind)>> {
    let mut sites = Vec::new();
    model.visit_sites("", &mut |path, site| {
        sites.push((path.to_string(), site.kind()));
        Ok(())
    })?;
    let shapes = params::all_param_shapes(&*model);
    let mut seen = BTreeSet::new();
    for (path, kind) in &sites {
        let witness = join(path, kind.witness_param());
        if !shapes.contains_key(&witness) {
            return Err(PeftError::BadSitePath {
                path: path.clone(),
                kind: kind.name(),
                witness,
            });
        }
        if !seen.insert(path.as_str()) {
            return Err(PeftError::InvalidConfig(format!(
                "the model reports the adaptable layer `{path}` twice (its `visit_sites` visits it twice)"
            )));
        }
    }
    Ok(sites)
}

/// Turn every adapter on or off; off gives the base model's outputs exactly.
pub fn set_adapters_enabled<B: Backend, M: Adaptable<B>>(mut model: M, enabled: bool) -> M {
    model
        .visit_sites("", &mut |_, site| {
            match site {
                Site::Linear(lin) => {
                    if let Some(lora) = lin.lora.as_mut() {
                        lora.enabled = enabled;
                    }
                }
                Site::Conv2d(conv) => {
                    if let Some(lora) = conv.lora.as_mut() {
                        lora.enabled = enabled;
                    }
                }
                Site::Attention(attn) => {
                    if let Some(coeff) = attn.coeff.as_mut() {
                        coeff.enabled = enabled;
                    }
                }
            }
            Ok(())
        })
        .expect("toggling adapters cannot fail");
    model
}

/// Set every attention layer's query chunk (`None`: eager); returns how many layers were
/// set. With [`crate::attention::recompute::enable`] on the training backend, chunked layers
/// also recompute their maps in the backward pass: the memory-bounded training path of long
/// sequences (SDXL's 4096-token levels).
pub fn set_query_chunk<B: Backend, M: Adaptable<B>>(model: &mut M, chunk: Option<usize>) -> usize {
    let mut n = 0;
    model
        .visit_sites("", &mut |_, site| {
            if let Site::Attention(attn) = site {
                attn.query_chunk = chunk;
                n += 1;
            }
            Ok(())
        })
        .expect("setting the query chunk cannot fail");
    n
}

/// Fold every LoRA / DoRA update into its base weight. Coeff-Tuning acts after the softmax
/// and cannot be merged; its coefficients stay active.
pub fn merge_adapters<B: Backend, M: Adaptable<B>>(model: M) -> M {
    map_weight_layers(model, true)
}

/// Undo [`merge_adapters`].
pub fn unmerge_adapters<B: Backend, M: Adaptable<B>>(model: M) -> M {
    map_weight_layers(model, false)
}

fn map_weight_layers<B: Backend, M: Adaptable<B>>(mut model: M, merge: bool) -> M {
    model
        .visit_sites("", &mut |_, site| {
            match site {
                Site::Linear(lin) => {
                    let l = lin.clone();
                    *lin = if merge { l.merge() } else { l.unmerge() };
                }
                Site::Conv2d(conv) => {
                    let c = conv.clone();
                    *conv = if merge { c.merge() } else { c.unmerge() };
                }
                Site::Attention(_) => {}
            }
            Ok(())
        })
        .expect("merging cannot fail");
    model
}
