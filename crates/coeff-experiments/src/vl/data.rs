//! The VL experiment's data: tokenised examples of the four tasks and the frozen image
//! features of their split (computed once, cached in the output folder).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use coeff_vl::TextTokenizer;
use indicatif::{ProgressBar, ProgressStyle};

use super::config::VlConfig;
use super::tasks::{Example, Task};
use coeff_harness::backbone::Backbone;

/// Token ids, one row per example.
pub(crate) type Rows = Vec<Vec<u32>>;

/// A test output: (input, output, target).
pub(crate) type Sample = (String, String, String);

/// Tokenised examples and the image features of their split.
pub(crate) struct Data {
    pub(crate) examples: Vec<Example>,
    pub(crate) inputs: Vec<Vec<u32>>,
    pub(crate) targets: Vec<Vec<u32>>,
    /// `[images, tokens, dim]`, flat.
    pub(crate) features: Vec<f32>,
    pub(crate) tokens: usize,
    pub(crate) dim: usize,
}

impl Data {
    pub(crate) fn by_task(&self, task: Task) -> Vec<usize> {
        (0..self.examples.len())
            .filter(|&i| self.examples[i].task == task)
            .collect()
    }

    /// Padded `[n, len]` ids and mask.
    pub(crate) fn ids<B: Backend>(
        rows: Vec<&Vec<u32>>,
        pad: u32,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in &rows {
            for j in 0..len {
                ids.push(r.get(j).copied().unwrap_or(pad) as i64);
                mask.push((j < r.len()) as i64);
            }
        }
        let shape = [rows.len(), len];
        (
            Tensor::from_data(TensorData::new(ids, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        )
    }

    /// `[n, K, tokens, dim]` features of the examples' images.
    pub(crate) fn features<B: Backend>(&self, idx: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let k = self.examples[idx[0]].images.len();
        let per = self.tokens * self.dim;
        let mut data = Vec::with_capacity(idx.len() * k * per);
        for &i in idx {
            for &img in &self.examples[i].images {
                data.extend_from_slice(&self.features[img * per..(img + 1) * per]);
            }
        }
        Tensor::from_data(
            TensorData::new(data, [idx.len(), k, self.tokens, self.dim]),
            device,
        )
    }
}

/// CLS + 2x2-pooled patch tokens of every image of both splits, `[n, 5, dim]`, cached.
pub(crate) fn image_features<B: Backend>(
    cfg: &VlConfig,
    cache: &Path,
    out: &Path,
    data: &coeff_data::easy_vqa::EasyVqa,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>, usize, usize)> {
    let path = out.join(format!(
        "features-{}-{}px.safetensors",
        cfg.backbone, cfg.resolution
    ));
    if path.exists() {
        let f = coeff_tuning::checkpoint::Checkpoint::open(&path)?;
        let (s, train) = f.read_f32("train")?;
        let (_, test) = f.read_f32("test")?;
        if s.len() == 3 && s[0] == data.train.images.len() {
            return Ok((train, test, s[1], s[2]));
        }
    }
    let backbone = match cfg.backbone.as_str() {
        "clip-b16" => Backbone::ClipB16,
        _ => Backbone::Dinov2S14,
    };
    let asset = backbone.asset();
    let dir =
        coeff_vit::pretrained::fetch(&asset, cache, &mut |m| eprintln!("{}: {m}", asset.name))?;
    let model = coeff_vit::load_pretrained::<B>(&dir, device)?;
    let pre = backbone.preprocess(cfg.resolution);
    let grid = cfg.resolution / backbone.patch();
    let dim = model.config.hidden_size;
    let bar = ProgressBar::new((data.train.images.len() + data.test.images.len()) as u64)
        .with_style(
            ProgressStyle::with_template("image features [{bar:30}] {pos}/{len} {eta}")
                .expect("template"),
        );
    let run = |images: &[coeff_data::Image]| -> Result<Vec<f32>> {
        let mut all = Vec::new();
        for chunk in images.chunks(64) {
            let refs: Vec<&coeff_data::Image> = chunk.iter().collect();
            let x: Tensor<B, 4> = pre.batch(&refs, device);
            let h = model.forward(x)?.last_hidden_state; // [n, 1 + g*g, dim]
            let n = chunk.len();
            let cls = h.clone().slice([0..n, 0..1]);
            let patches = h
                .slice([0..n, 1..1 + grid * grid])
                .reshape([n, grid, grid, dim])
                .permute([0, 3, 1, 2]);
            let pooled = burn::tensor::module::adaptive_avg_pool2d(patches, [2, 2])
                .reshape([n, dim, 4])
                .swap_dims(1, 2);
            let tokens = Tensor::cat(vec![cls, pooled], 1);
            all.extend(
                tokens
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            );
            bar.inc(n as u64);
        }
        Ok(all)
    };
    let train = run(&data.train.images)?;
    let test = run(&data.test.images)?;
    bar.finish_and_clear();
    let mut t = BTreeMap::new();
    t.insert(
        "train".to_string(),
        (vec![data.train.images.len(), 5, dim], train.clone()),
    );
    t.insert(
        "test".to_string(),
        (vec![data.test.images.len(), 5, dim], test.clone()),
    );
    coeff_tuning::checkpoint::write_f32_safetensors(&path, &t)?;
    Ok((train, test, 5, dim))
}

/// Token ids of the examples' inputs (trailing padding removed, truncated to `max_len`) and
/// targets (trailing padding and the leading start token removed).
pub(crate) fn tokenize(
    tokenizer: &TextTokenizer,
    examples: &[Example],
    start: u32,
    pad: u32,
    max_len: usize,
) -> Result<(Rows, Rows)> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let targets: Vec<&str> = examples.iter().map(|e| e.target.as_str()).collect();
    let inputs = tokenizer.encode_batch(&texts)?.ids;
    let mut outs = tokenizer.encode_batch(&targets)?.ids;
    for t in &mut outs {
        while t.last() == Some(&pad) {
            t.pop();
        }
        if t.first() == Some(&start) {
            t.remove(0);
        }
    }
    let inputs: Vec<Vec<u32>> = inputs
        .into_iter()
        .map(|mut r| {
            while r.last() == Some(&pad) {
                r.pop();
            }
            r.truncate(max_len);
            r
        })
        .collect();
    Ok((inputs, outs))
}
