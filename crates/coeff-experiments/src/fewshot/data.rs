//! The datasets of the sweep: fetched (pinned, sha256-checked) or read from `--data DIR`, with
//! a fixed test subset per dataset.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use coeff_data::{ImageSet, OnBadFile};

/// A dataset ready for sampling: the pool k-shot samples come from, and the fixed test set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name in tables (`fashion-mnist`, `animals`, `folder:...`).
    pub name: String,
    /// The pool training samples are drawn from.
    pub train: ImageSet,
    /// The fixed test subset (disjoint from `train`).
    pub test: ImageSet,
    /// Where the files came from.
    pub source: String,
}

/// Load `spec` (`fashion-mnist`, `mnist`, `animals`, `folder:PATH`) and choose its test set.
///
/// With `data = Some(DIR)` nothing is downloaded: `DIR/fashion-mnist/*.gz` (IDX),
/// `DIR/mnist.pkl.gz`, `DIR/animal_{data,label}_version_3.gz`.
///
/// An ImageFolder's images are resized to `resolution` as they are decoded
/// ([`coeff_data::image_folder_resized`]: memory does not depend on the photos' size, and the
/// preprocessed values are those of the full-size images). The 28 x 28 datasets are kept as
/// they are and resized once, by the preprocessing.
pub fn load(
    spec: &str,
    data: Option<&Path>,
    cache: &Path,
    test_per_class: usize,
    resolution: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Dataset> {
    let local = |name: &str| -> Result<Option<PathBuf>> {
        Ok(match data {
            Some(dir) => {
                let p = dir.join(name);
                if !p.exists() {
                    bail!(
                        "--data {}: dataset `{spec}` expects {} (see docs/fewshot.md for the layout)",
                        dir.display(),
                        p.display()
                    );
                }
                Some(p)
            }
            None => None,
        })
    };
    let (train, test_pool, source) = match spec {
        "fashion-mnist" => {
            let dir = match local("fashion-mnist")? {
                Some(p) => p,
                None => coeff_data::fetch::fashion_mnist_dir(cache, log)?,
            };
            let (train, test) = coeff_data::fashion_mnist(&dir)?;
            (train, Some(test), dir.display().to_string())
        }
        "mnist" => {
            let file = match local("mnist.pkl.gz")? {
                Some(p) => p,
                None => coeff_data::fetch::mnist_file(cache, log)?,
            };
            let (train, test) = coeff_data::mnist_pickle(&file)?;
            (train, Some(test), file.display().to_string())
        }
        "animals" => {
            let (d, l) = match (
                local("animal_data_version_3.gz")?,
                local("animal_label_version_3.gz")?,
            ) {
                (Some(d), Some(l)) => (d, l),
                _ => coeff_data::fetch::animal_files(cache, log)?,
            };
            let set = coeff_data::animal_silhouettes(&d, &l)?;
            (set, None, d.display().to_string())
        }
        other => match other.strip_prefix("folder:") {
            Some(root) => {
                let (set, skipped) = coeff_data::image_folder_resized(
                    Path::new(root),
                    OnBadFile::Error,
                    resolution,
                )?;
                debug_assert!(skipped.is_empty());
                (set, None, root.to_string())
            }
            None => bail!(
                "unknown dataset `{other}`; expected fashion-mnist, mnist, animals or folder:PATH"
            ),
        },
    };
    let (train, test) = match test_pool {
        // A separate test split: a fixed subset of it.
        Some(test) => {
            let idx = coeff_data::fixed_test(&test, test_per_class)
                .with_context(|| format!("choosing the test set of {spec}"))?;
            (train, test.subset(&idx))
        }
        // One split: the last images of each class are the test set, the rest the pool.
        None => {
            let (tr, te) = coeff_data::split_tail(&train, test_per_class)
                .with_context(|| format!("splitting {spec} into train and test"))?;
            (train.subset(&tr), train.subset(&te))
        }
    };
    Ok(Dataset {
        name: spec.to_string(),
        train,
        test,
        source,
    })
}
