//! Labelled image sets and the readers for the formats real users have.

use std::path::{Path, PathBuf};

use crate::error::{format, io, DataError, Result};
use crate::idx::{read_idx, read_maybe_gz};
use crate::image::{Image, ImageSet};
use crate::pickle::{unpickle, NdArray, Value};

fn check_labels(path: &Path, labels: &[i64], classes: usize) -> Result<Vec<usize>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if l >= 0 && (l as usize) < classes {
                Ok(l as usize)
            } else {
                Err(format(
                    path,
                    format!("label {l} of item {i} is outside 0..{classes}"),
                ))
            }
        })
        .collect()
}

/// MNIST-family IDX pair: images `[n, h, w]` and labels `[n]`.
pub fn idx_pair(images: &Path, labels: &Path, classes: Vec<String>) -> Result<ImageSet> {
    let x = read_idx(images)?;
    let y = read_idx(labels)?;
    if x.dims.len() != 3 {
        return Err(format(
            images,
            format!("expected [n, h, w] images, got dims {:?}", x.dims),
        ));
    }
    if y.dims.len() != 1 || y.dims[0] != x.dims[0] {
        return Err(format(
            labels,
            format!("expected {} labels, got dims {:?}", x.dims[0], y.dims),
        ));
    }
    let labels_i: Vec<i64> = y.data.iter().map(|v| *v as i64).collect();
    let labels = check_labels(labels, &labels_i, classes.len())?;
    let (n, h, w) = (x.dims[0], x.dims[1], x.dims[2]);
    Ok(ImageSet::from_grey(
        n,
        h,
        w,
        |k| x.data[k] as f32 / 255.0,
        labels,
        classes,
    ))
}

/// Fashion-MNIST class names.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Fashion-MNIST from a directory with `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`
/// (Debian's `dataset-fashion-mnist` installs them in `/usr/share/datasets/fashion-mnist`).
/// Returns `(train, test)`.
pub fn fashion_mnist(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let classes: Vec<String> = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let f = |n: &str| dir.join(n);
    Ok((
        idx_pair(
            &f("train-images-idx3-ubyte.gz"),
            &f("train-labels-idx1-ubyte.gz"),
            classes.clone(),
        )?,
        idx_pair(
            &f("t10k-images-idx3-ubyte.gz"),
            &f("t10k-labels-idx1-ubyte.gz"),
            classes,
        )?,
    ))
}

fn array(path: &Path, v: &Value, what: &str) -> Result<NdArray> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        other => Err(format(
            path,
            format!("{what}: expected a NumPy array, found {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Global(_) => "global",
        Value::Dtype(_) => "dtype",
        Value::Array(_) => "array",
    }
}

/// The classic `mnist.pkl.gz`: `((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`,
/// `x` float32 `[n, 784]` in `[0, 1]`, `y` int64. Returns `(train + valid, test)`.
pub fn mnist_pickle(path: &Path) -> Result<(ImageSet, ImageSet)> {
    let bytes = read_maybe_gz(path)?;
    let Value::Tuple(splits) = unpickle(&bytes, path)? else {
        return Err(format(path, "expected a tuple of (x, y) splits"));
    };
    if splits.len() != 3 {
        return Err(format(
            path,
            format!(
                "expected 3 splits (train, valid, test), found {}",
                splits.len()
            ),
        ));
    }
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let mut sets = Vec::new();
    for (k, split) in splits.iter().enumerate() {
        let Value::Tuple(xy) = split else {
            return Err(format(path, format!("split {k} is not an (x, y) tuple")));
        };
        let (Some(xv), Some(yv)) = (xy.first(), xy.get(1)) else {
            return Err(format(path, format!("split {k} is not an (x, y) tuple")));
        };
        let x = array(path, xv, "images")?;
        let y = array(path, yv, "labels")?;
        let [n, d] = x.shape[..] else {
            return Err(format(
                path,
                format!(
                    "split {k}: images have shape {:?}, expected [n, 784]",
                    x.shape
                ),
            ));
        };
        let side = (d as f64).sqrt() as usize;
        if side * side != d || y.shape != [n] {
            return Err(format(
                path,
                format!(
                    "split {k}: shapes {:?} and {:?} are not [n, s*s], [n]",
                    x.shape, y.shape
                ),
            ));
        }
        let xs = x
            .to_f32()
            .ok_or_else(|| format(path, format!("images dtype {} is not numeric", x.dtype)))?;
        let ys = y
            .to_i64()
            .ok_or_else(|| format(path, format!("labels dtype {} is not an integer", y.dtype)))?;
        let labels = check_labels(path, &ys, 10)?;
        sets.push(ImageSet::from_grey(
            n,
            side,
            side,
            |i| xs[i],
            labels,
            classes.clone(),
        ));
    }
    let test = sets.pop().expect("3 splits");
    let valid = sets.pop().expect("3 splits");
    let mut train = sets.pop().expect("3 splits");
    train.images.extend(valid.images);
    train.labels.extend(valid.labels);
    Ok((train, test))
}

/// Animal silhouettes (`animal_data_version_3.gz`: uint8 `[n, 28, 28]`;
/// `animal_label_version_3.gz`: int64 `[n]`), 10 classes, a single split.
pub fn animal_silhouettes(data: &Path, labels: &Path) -> Result<ImageSet> {
    let x = match unpickle(&read_maybe_gz(data)?, data)? {
        Value::Array(a) => a,
        other => {
            return Err(format(
                data,
                format!("expected a NumPy array, found {}", kind(&other)),
            ))
        }
    };
    let y = match unpickle(&read_maybe_gz(labels)?, labels)? {
        Value::Array(a) => a,
        other => {
            return Err(format(
                labels,
                format!("expected a NumPy array, found {}", kind(&other)),
            ))
        }
    };
    let [n, h, w] = x.shape[..] else {
        return Err(format(
            data,
            format!("images have shape {:?}, expected [n, h, w]", x.shape),
        ));
    };
    if y.shape != [n] {
        return Err(format(
            labels,
            format!("labels have shape {:?}, expected [{n}]", y.shape),
        ));
    }
    let xs = x
        .to_f32()
        .ok_or_else(|| format(data, format!("dtype {} is not numeric", x.dtype)))?;
    let scale = if x.dtype.ends_with("u1") {
        1.0 / 255.0
    } else {
        1.0
    };
    let ys = y
        .to_i64()
        .ok_or_else(|| format(labels, format!("dtype {} is not an integer", y.dtype)))?;
    let classes: Vec<String> = (0..10).map(|c| format!("animal-{c}")).collect();
    let labels = check_labels(labels, &ys, 10)?;
    Ok(ImageSet::from_grey(
        n,
        h,
        w,
        |i| xs[i] * scale,
        labels,
        classes,
    ))
}

/// What to do with an image file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadFile {
    /// Stop with an error naming the file.
    Error,
    /// Skip it and count it.
    Skip,
}

/// Largest image side [`image_folder`] decodes (either dimension), in pixels.
pub const MAX_IMAGE_SIDE: u32 = 1 << 15;
/// Most memory the decoder of one image may allocate (the `image` crate's default): a larger
/// image is an error naming the file, not an abort.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// `root/<class>/<image>.{png,jpg,jpeg}` at full size; classes are the sorted sub-directory
/// names, and there must be at least two. Returns the set and the files skipped (only with
/// [`OnBadFile::Skip`]).
///
/// Every image is held as f32 at its own size (a 24-megapixel photo takes 290 MB): for a
/// model input of known size use [`image_folder_resized`], which holds each image at that
/// size only.
pub fn image_folder(root: &Path, on_bad: OnBadFile) -> Result<(ImageSet, Vec<PathBuf>)> {
    read_folder(root, on_bad, None)
}

/// [`image_folder`] with each image resized to `side x side` as it is decoded, by the same
/// bilinear resampling as [`Preprocess`](crate::Preprocess), through [`crate::resize::bilinear`] (half-pixel centres, edge
/// clamped), straight from the decoded 8-bit pixels.
///
/// Memory: the set holds `channels * side * side` f32 per image whatever the source resolution;
/// while loading, one decoded 8-bit image at a time (at most [`MAX_DECODE_BYTES`], sides up to
/// [`MAX_IMAGE_SIDE`]). Numerics: `Preprocess::new(side, ..)` of a resized image gives exactly
/// the values it gives for the full-size image, flips and shifts included, because resampling
/// an image already at the output size reads its pixels unchanged.
pub fn image_folder_resized(
    root: &Path,
    on_bad: OnBadFile,
    side: usize,
) -> Result<(ImageSet, Vec<PathBuf>)> {
    if side == 0 {
        return Err(format(root, "the resize side must be positive, got 0"));
    }
    read_folder(root, on_bad, Some(side))
}

fn read_folder(
    root: &Path,
    on_bad: OnBadFile,
    side: Option<usize>,
) -> Result<(ImageSet, Vec<PathBuf>)> {
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    match classes.as_slice() {
        [] => {
            return Err(format(
                root,
                "no class sub-directories (expected root/<class>/<image>)",
            ))
        }
        [one] => {
            return Err(format(
                root,
                format!(
                    "only one class sub-directory (`{one}`); a classifier needs at least 2 \
                     (expected root/<class>/<image>)"
                ),
            ))
        }
        _ => {}
    }
    let mut set = ImageSet {
        images: vec![],
        labels: vec![],
        classes: classes.clone(),
    };
    let mut skipped = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image_file(p))
            .collect();
        files.sort();
        for file in files {
            match decode(&file, side) {
                Ok(img) => {
                    set.images.push(img);
                    set.labels.push(label);
                }
                Err(e) if on_bad == OnBadFile::Skip => {
                    let _ = e;
                    skipped.push(file);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((set, skipped))
}

/// The image files (`.png`, `.jpg`, `.jpeg`, any case) directly in `dir`, sorted.
///
/// Errors: `dir` cannot be read, or holds no image file.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_file(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format(
            dir,
            "no image files (.png, .jpg, .jpeg) in this folder",
        ));
    }
    Ok(files)
}

fn is_image_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// One image file at full size as `[C, H, W]` values in `[0, 1]` (grey stays grey, colour
/// becomes RGB), decoded within [`MAX_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`].
pub fn read_image(path: &Path) -> Result<Image> {
    decode(path, None)
}

/// One image file as `[C, H, W]` values in `[0, 1]` (grey stays grey, anything with colour
/// becomes RGB), at full size or resized to `side x side`.
fn decode(path: &Path, side: Option<usize>) -> Result<Image> {
    let bad = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = image::ImageReader::open(path).map_err(|e| io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let (channels, raw, w, h) = if img.color().has_color() {
        let rgb = img.into_rgb8();
        let (w, h) = rgb.dimensions();
        (3, rgb.into_raw(), w as usize, h as usize)
    } else {
        let g = img.into_luma8();
        let (w, h) = g.dimensions();
        (1, g.into_raw(), w as usize, h as usize)
    };
    // The one conversion from 8-bit to [0, 1], shared by both paths so they agree exactly.
    let value = |y: usize, x: usize, c: usize| raw[(y * w + x) * channels + c] as f32 / 255.0;
    let (height, width, pixels) = match side {
        None => {
            // HWC -> CHW
            let mut chw = Vec::with_capacity(raw.len());
            for c in 0..channels {
                for y in 0..h {
                    for x in 0..w {
                        chw.push(value(y, x, c));
                    }
                }
            }
            (h, w, chw)
        }
        Some(s) => {
            let mut out = Vec::with_capacity(channels * s * s);
            for c in 0..channels {
                for y in 0..s {
                    for x in 0..s {
                        out.push(crate::resize::bilinear(
                            |yy, xx| value(yy, xx, c),
                            h,
                            w,
                            y as i64,
                            x as i64,
                            s,
                        ));
                    }
                }
            }
            (s, s, out)
        }
    };
    Ok(Image {
        channels,
        height,
        width,
        pixels,
    })
}
