//! ImageFolder input checks: at least two classes; images resized as they are decoded hold
//! only the target size in memory and preprocess to exactly the same values as the full-size
//! images; a decompression bomb is an error naming the file.

use std::path::Path;

use burn::tensor::Tensor;
use coeff_data::sampler::SplitMix;
use coeff_data::{image_folder, image_folder_resized, Image, OnBadFile, Preprocess};

type B = burn::backend::NdArray<f32>;

/// `root/<class>/<i>.png` with `n` deterministic noise images of `w x h` per class, RGB
/// (`rgb`) or grey.
fn write_folder(root: &Path, classes: &[&str], n: usize, (w, h): (u32, u32), rgb: bool) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for class in classes {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let path = root.join(class).join(format!("{i}.png"));
            if rgb {
                image::RgbImage::from_fn(w, h, |_, _| image::Rgb([byte(), byte(), byte()]))
                    .save(path)
                    .unwrap();
            } else {
                image::GrayImage::from_fn(w, h, |_, _| image::Luma([byte()]))
                    .save(path)
                    .unwrap();
            }
        }
    }
}

fn values(p: &Preprocess, images: &[&Image], augment: Option<u64>) -> Vec<f32> {
    let device = Default::default();
    let x: Tensor<B, 4> = match augment {
        Some(seed) => p.augmented_batch(images, 2, &mut SplitMix::new(seed), &device),
        None => p.batch(images, &device),
    };
    x.into_data().to_vec().unwrap()
}

#[test]
fn resized_at_load_preprocesses_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    // Larger and smaller than the target, non-square, RGB and grey.
    write_folder(&dir.path().join("a"), &["x", "y"], 2, (53, 37), true);
    write_folder(&dir.path().join("b"), &["x", "y"], 2, (9, 13), false);
    let p = Preprocess::new(16, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    for sub in ["a", "b"] {
        let root = dir.path().join(sub);
        let (full, _) = image_folder(&root, OnBadFile::Error).unwrap();
        let (small, _) = image_folder_resized(&root, OnBadFile::Error, 16).unwrap();
        assert_eq!(full.labels, small.labels);
        assert_eq!(full.classes, small.classes);
        for img in &small.images {
            assert_eq!((img.height, img.width), (16, 16));
            assert_eq!(img.pixels.len(), img.channels * 16 * 16);
        }
        let f: Vec<&Image> = full.images.iter().collect();
        let s: Vec<&Image> = small.images.iter().collect();
        let (a, b) = (values(&p, &f, None), values(&p, &s, None));
        assert!(
            a.iter().any(|v| *v != a[0]),
            "the test images are not constant"
        );
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{sub}: plain batch differs"
        );
        for seed in [1, 2, 3] {
            assert_eq!(
                values(&p, &f, Some(seed)),
                values(&p, &s, Some(seed)),
                "{sub}: augmented batch (seed {seed}) differs"
            );
        }
    }
}

#[test]
fn memory_held_does_not_depend_on_the_source_resolution() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &["big", "small"], 1, (1200, 900), true);
    let (set, _) = image_folder_resized(dir.path(), OnBadFile::Error, 8).unwrap();
    let held: usize = set.images.iter().map(|i| i.pixels.len()).sum();
    assert_eq!(held, 2 * 3 * 8 * 8);
    let err = image_folder_resized(dir.path(), OnBadFile::Error, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive"), "{err}");
}

#[test]
fn one_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &["only"], 3, (4, 4), false);
    for result in [
        image_folder(dir.path(), OnBadFile::Error),
        image_folder_resized(dir.path(), OnBadFile::Error, 8),
    ] {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("only one class") && err.contains("`only`") && err.contains("at least 2"),
            "{err}"
        );
    }
}

#[test]
fn a_decompression_bomb_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &["a", "b"], 1, (4, 4), false);
    // A valid PNG header claiming 100000 x 100000 pixels (10 GB decoded), a few bytes on disk.
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IEND", &[]));
    let bomb = dir.path().join("a").join("bomb.png");
    std::fs::write(&bomb, png).unwrap();
    let err = image_folder_resized(dir.path(), OnBadFile::Error, 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bomb.png") && err.contains("limit"), "{err}");
}
