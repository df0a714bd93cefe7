//! `load`: peak host memory of loading a synthetic safetensors checkpoint through the streaming
//! key-table loader (`coeff_tuning::checkpoint`), one child process per file.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use coeff_harness::report::{self};
use serde::Serialize;

/// Stored dtype of the synthetic checkpoint of `bench-load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoredDtype {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value (converted to the model's f32 while loading).
    F16,
}

impl StoredDtype {
    fn bytes(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            StoredDtype::F16 => 2,
        }
    }
}

/// Arguments of `bench-load`.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct LoadArgs {
    /// Size of each synthetic checkpoint file, in MB (10^6 bytes).
    #[arg(long, default_value_t = 400)]
    pub mb: usize,
    /// Linear layers of the synthetic model (the first is twice as tall as the others).
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    /// Stored dtypes to measure, one file each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoredDtype::F32, StoredDtype::F16])]
    pub dtypes: Vec<StoredDtype>,
    /// Internal: load this file in this process and print the measurement as JSON.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub child: Option<std::path::PathBuf>,
}

/// `[out, in]` of each linear layer: `layers` weights (the first `[2d, d]`, the rest
/// `[d, d]`) with biases, about `mb` MB in total at `elem` bytes per value.
fn load_shapes(mb: usize, layers: usize, elem: usize) -> Vec<[usize; 2]> {
    let values = mb * 1_000_000 / elem;
    let d = ((values / (layers + 1)) as f64).sqrt() as usize;
    (0..layers.max(1))
        .map(|i| [if i == 0 { 2 * d } else { d }, d])
        .collect()
}

/// The synthetic model: linear layers only.
#[derive(Module, Debug)]
struct LoadNet<B: Backend> {
    layers: Vec<burn::nn::Linear<B>>,
}

#[rustfmt::skip]
const LOAD_ROWS: &[coeff_tuning::checkpoint::Row] = &[
    ("layers.{i}", "layers.{i}", coeff_tuning::checkpoint::Kind::PlainLinear),
];

/// The value at flat index `i` of layer `l` (cheap, and exactly representable in f16).
fn synthetic(l: usize, i: usize) -> f32 {
    ((i.wrapping_mul(2_654_435_761) ^ l) % 2048) as f32 / 1024.0 - 1.0
}

/// Memory figures of this process from `/proc/self/status`, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
struct ProcStatus {
    rss: u64,
    hwm: u64,
    rss_anon: u64,
    rss_file: u64,
}

impl ProcStatus {
    fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/self/status")
            .context("bench-load reads /proc/self/status (Linux only)")?;
        let field = |name: &str| -> Result<u64> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no `{name}` in /proc/self/status"))?;
            let kb: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("`{line}`"))?;
            Ok(kb * 1024)
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
            rss_anon: field("RssAnon:")?,
            rss_file: field("RssFile:")?,
        })
    }
}

/// What the child process measured while loading one file.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct LoadMeasure {
    /// Whether `/proc/self/clear_refs` reset the peak before loading.
    hwm_reset: bool,
    before: ProcStatus,
    after: ProcStatus,
    seconds: f64,
}

/// One row of the `bench-load` table.
#[derive(Debug, Clone, Serialize)]
struct LoadRow {
    stored: StoredDtype,
    file_bytes: u64,
    largest_tensor_bytes: u64,
    model_bytes: u64,
    peak_increase_bytes: u64,
    after_anon_increase_bytes: i64,
    after_file_increase_bytes: i64,
    peak_over_file_plus_largest: f64,
    overhead_over_model_in_largest: f64,
    seconds: f64,
    hwm_reset: bool,
}

/// Child side: load `path` into a fresh (lazily initialised) model and report memory.
fn load_child<B: Backend>(args: &LoadArgs, path: &Path, device: &B::Device) -> Result<()> {
    use coeff_tuning::checkpoint::{Checkpoint, KeyTable};
    let stored = *args.dtypes.first().context("one dtype")?;
    let shapes = load_shapes(args.mb, args.layers, stored.bytes());
    let model = LoadNet::<B> {
        layers: shapes
            .iter()
            .map(|&[o, i]| burn::nn::LinearConfig::new(i, o).init(device))
            .collect(),
    };
    // Since Linux 4.0, writing 5 here resets VmHWM to the current RSS.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = ProcStatus::read()?;
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(path)?;
    let table = KeyTable {
        rows: LOAD_ROWS,
        prefixes: &[],
        ignored: &[],
    };
    let model = table.load(model, &ckpt)?;
    B::sync(device)?;
    let seconds = t0.elapsed().as_secs_f64();
    let after = ProcStatus::read()?;
    // Spot check: layer 1's weight is the transpose of what was written.
    let w = model.layers[1].weight.val();
    let got: Vec<f32> = w
        .slice([0..1, 0..2])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    let d_in = shapes[1][1];
    anyhow::ensure!(
        got == vec![synthetic(1, 0), synthetic(1, d_in)],
        "bench-load: loaded values differ from the file ({got:?})"
    );
    let m = LoadMeasure {
        hwm_reset,
        before,
        after,
        seconds,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// `bench-load`: peak memory of loading a synthetic checkpoint of `--mb` MB through the
/// streaming key-table loader, measured in a child process per stored dtype.
pub fn run_load<B: Backend>(
    args: &LoadArgs,
    out: &Path,
    backend: &'static str,
    device: &B::Device,
) -> Result<()> {
    if let Some(path) = &args.child {
        return load_child::<B>(args, path, device);
    }
    std::fs::create_dir_all(out)?;
    let tmp = std::env::temp_dir().join(format!("coeff-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut rows = Vec::new();
    let result = (|| -> Result<()> {
        for &stored in &args.dtypes {
            let shapes = load_shapes(args.mb, args.layers, stored.bytes());
            let path = tmp.join(format!("synthetic-{stored:?}.safetensors"));
            write_synthetic(&path, &shapes, stored)?;
            let file_bytes = std::fs::metadata(&path)?.len();
            let numel = |[o, i]: [usize; 2]| (o * i) as u64;
            let model_bytes: u64 = shapes.iter().map(|&s| 4 * (numel(s) + s[0] as u64)).sum();
            let largest = 4 * shapes.iter().map(|&s| numel(s)).max().unwrap_or(0);
            let exe = std::env::current_exe()?;
            let child = std::process::Command::new(exe)
                .args(["load", "--mb", &args.mb.to_string()])
                .args(["--layers", &args.layers.to_string()])
                .args(["--dtypes", &format!("{stored:?}").to_lowercase()])
                .arg("--child")
                .arg(&path)
                .output()?;
            anyhow::ensure!(
                child.status.success(),
                "bench-load child failed: {}",
                String::from_utf8_lossy(&child.stderr)
            );
            let stdout = String::from_utf8_lossy(&child.stdout);
            let m: LoadMeasure = serde_json::from_str(
                stdout
                    .lines()
                    .last()
                    .context("bench-load child printed nothing")?,
            )?;
            std::fs::remove_file(&path)?;
            let peak = m.after.hwm.saturating_sub(m.before.rss);
            let row = LoadRow {
                stored,
                file_bytes,
                largest_tensor_bytes: largest,
                model_bytes,
                peak_increase_bytes: peak,
                after_anon_increase_bytes: m.after.rss_anon as i64 - m.before.rss_anon as i64,
                after_file_increase_bytes: m.after.rss_file as i64 - m.before.rss_file as i64,
                peak_over_file_plus_largest: peak as f64 / (file_bytes + largest) as f64,
                overhead_over_model_in_largest: (peak as f64 - model_bytes as f64) / largest as f64,
                seconds: m.seconds,
                hwm_reset: m.hwm_reset,
            };
            eprintln!("{row:?}");
            rows.push(row);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    let mb = |b: u64| format!("{:.0}", b as f64 / 1e6);
    let table = report::markdown_table(
        &[
            "stored",
            "file N MB",
            "largest tensor L MB (f32)",
            "model weights M MB (f32)",
            "peak RSS increase MB",
            "after: anon / file-backed MB",
            "peak / (N + L)",
            "(peak - M) / L",
            "load s",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    format!("{:?}", r.stored).to_lowercase(),
                    mb(r.file_bytes),
                    mb(r.largest_tensor_bytes),
                    mb(r.model_bytes),
                    mb(r.peak_increase_bytes),
                    format!(
                        "{:.0} / {:.0}",
                        r.after_anon_increase_bytes as f64 / 1e6,
                        r.after_file_increase_bytes as f64 / 1e6
                    ),
                    format!("{:.2}", r.peak_over_file_plus_largest),
                    format!("{:.2}", r.overhead_over_model_in_largest),
                    format!("{:.2}", r.seconds),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let reset = rows.iter().all(|r| r.hwm_reset);
    let md = format!(
        "# Checkpoint loading memory\n\nbackend `{backend}` (model weights live in host memory), {} linear layers, \
         one child process per file; peak = VmHWM after loading - VmRSS before{}.\n\n{table}",
        args.layers,
        if reset {
            " (VmHWM reset through /proc/self/clear_refs)"
        } else {
            " (VmHWM could not be reset: the peak includes the child's start-up)"
        }
    );
    report::write_json(&out.join("summary.json"), &rows)?;
    report::write_atomic(&out.join("results.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}

/// Write the synthetic checkpoint in PyTorch's layout (`layers.{i}.weight [out, in]`,
/// `layers.{i}.bias [out]`).
fn write_synthetic(path: &Path, shapes: &[[usize; 2]], stored: StoredDtype) -> Result<()> {
    use burn::tensor::TensorData;
    let mut tensors = Vec::new();
    for (l, &[o, i]) in shapes.iter().enumerate() {
        let w: Vec<f32> = (0..o * i).map(|k| synthetic(l, k)).collect();
        let b: Vec<f32> = (0..o).map(|k| synthetic(l + 100, k)).collect();
        let (w, b) = (TensorData::new(w, [o, i]), TensorData::new(b, [o]));
        let (w, b) = match stored {
            StoredDtype::F32 => (w, b),
            StoredDtype::F16 => (
                w.convert::<burn::tensor::f16>(),
                b.convert::<burn::tensor::f16>(),
            ),
        };
        tensors.push((format!("layers.{l}.weight"), w));
        tensors.push((format!("layers.{l}.bias"), b));
    }
    coeff_tuning::checkpoint::write_safetensors(
        path,
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        &[],
    )?;
    Ok(())
}
