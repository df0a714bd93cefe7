//! `sample`: text-to-image with a diffusers SDXL folder (`coeff_sdxl::SdxlPipeline`), one PNG
//! per prompt.
//!
//! Checked before anything is loaded: the output is a `.png` path whose folder exists and that
//! is not inside the pipeline folder; height and width are positive multiples of the UNet's
//! total downsampling (VAE factor x 2^(levels - 1)); steps in 1..=1000 and a finite guidance.
//! The initial noise comes from the backend's generator seeded with `--seed`, so it is
//! reproducible here but not the same numbers as PyTorch's generator.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use coeff_sdxl::{SampleConfig, SdxlPipeline};

/// Arguments of `sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// A diffusers SDXL folder (`model_index.json`, `unet/`, `vae/`, `text_encoder[_2]/`,
    /// `tokenizer[_2]/`, `scheduler/`).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Prompt (repeat for several images).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Image height (default: the UNet's `sample_size` x the VAE factor).
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width (default: as the height).
    #[arg(long)]
    pub width: Option<usize>,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A LoRA for the UNet (any format of `coeff_cli::adapter`: diffusers or kohya
    /// `.safetensors`, a PEFT folder, or ours, whose Coeff part is applied too).
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// Scale of the LoRA update (diffusers' `lora_scale`); needs `--lora`.
    #[arg(long)]
    pub lora_scale: Option<f32>,
    /// Output PNG (with several prompts: `NAME-0.png`, `NAME-1.png`, ...).
    #[arg(long)]
    pub output: PathBuf,
}

/// The PNG paths `args.output` stands for.
fn outputs(args: &SampleArgs) -> Result<Vec<PathBuf>> {
    let out = &args.output;
    ensure!(
        out.extension().and_then(|e| e.to_str()) == Some("png"),
        "--output {} must be a .png file",
        out.display()
    );
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure!(
        parent.is_dir(),
        "--output {}: the folder {} does not exist",
        out.display(),
        parent.display()
    );
    if let (Ok(o), Ok(p)) = (
        std::path::absolute(parent),
        std::path::absolute(&args.pipeline),
    ) {
        ensure!(
            !o.starts_with(&p),
            "--output {} is inside the pipeline folder; refusing to write there",
            out.display()
        );
    }
    if args.prompt.len() == 1 {
        return Ok(vec![out.clone()]);
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("sample");
    Ok((0..args.prompt.len())
        .map(|i| out.with_file_name(format!("{stem}-{i}.png")))
        .collect())
}

/// Generate and write the images.
pub fn run<B: Backend>(args: &SampleArgs, device: &B::Device) -> Result<()> {
    let paths = outputs(args)?;
    ensure!(
        (1..=1000).contains(&args.steps),
        "--steps {} must be in 1..=1000",
        args.steps
    );
    ensure!(
        args.guidance.is_finite(),
        "--guidance {} must be finite",
        args.guidance
    );
    if let Some(s) = args.lora_scale {
        ensure!(args.lora.is_some(), "--lora-scale needs --lora");
        ensure!(s.is_finite(), "--lora-scale {s} must be finite");
    }
    let lora = args
        .lora
        .as_deref()
        .map(crate::adapter::AdapterSource::detect)
        .transpose()?;
    let mut pipe = SdxlPipeline::<B>::load(&args.pipeline, device)
        .with_context(|| format!("loading {}", args.pipeline.display()))?;
    if let (Some(path), Some(_)) = (&args.lora, lora) {
        let (unet, injected) =
            crate::infer::diffusion::adapted_unet(pipe.unet, &pipe.unet_config, path)?;
        pipe.unet = match args.lora_scale {
            Some(s) => coeff_tuning::peft::lora_files::scale_lora(unet, &injected, s),
            None => unet,
        };
    }
    let vae = pipe.vae_scale_factor();
    let levels = pipe.unet_config.block_out_channels.len();
    let multiple = vae << levels.saturating_sub(1);
    let height = args
        .height
        .unwrap_or(pipe.unet_config.sample_size.unwrap_or(128) * vae);
    let width = args.width.unwrap_or(height);
    for (name, v) in [("--height", height), ("--width", width)] {
        if v == 0 || v % multiple != 0 || v > 8192 {
            bail!("{name} {v} must be a positive multiple of {multiple} (VAE factor {vae} x 2^{} UNet levels) up to 8192", levels - 1);
        }
    }
    let cfg = SampleConfig {
        steps: args.steps,
        guidance: args.guidance,
        height,
        width,
    };
    let prompts: Vec<&str> = args.prompt.iter().map(String::as_str).collect();
    B::seed(device, args.seed);
    let noise = Tensor::<B, 4>::random(
        [
            prompts.len(),
            pipe.unet_config.in_channels,
            height / vae,
            width / vae,
        ],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let t0 = std::time::Instant::now();
    let images = pipe.generate(&prompts, noise, &cfg)?;
    let [n, c, h, w] = images.dims();
    ensure!(c == 3, "the VAE decoded {c} channels, not RGB");
    let values = images
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the image: {e:?}"))?;
    ensure!(
        values.iter().all(|v| v.is_finite()),
        "the image has non-finite values; nothing written"
    );
    for (i, path) in paths.iter().enumerate() {
        let plane = h * w;
        let bytes =
            coeff_harness::report::png_rgb(&values[i * 3 * plane..(i + 1) * 3 * plane], w, h)?;
        coeff_harness::report::write_atomic(path, &bytes)?;
        eprintln!(
            "wrote {} ({w}x{h}, prompt {:?})",
            path.display(),
            prompts[i]
        );
    }
    eprintln!(
        "{n} image(s), {} steps, guidance {}, in {:.1} s",
        cfg.steps,
        cfg.guidance,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
