//! Seeded k-shot sampling with a fixed, disjoint test set.

use crate::error::{DataError, Result};
use crate::image::ImageSet;

/// A small seeded generator (SplitMix64), identical on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// `k` training images per class, chosen by `seed`; indices into `train`, grouped by class.
pub fn k_shot(train: &ImageSet, k: usize, seed: u64) -> Result<Vec<usize>> {
    let mut rng = SplitMix::new(seed ^ 0x6b5f_73686f74);
    let mut out = Vec::with_capacity(k * train.classes.len());
    for (c, mut idx) in train.by_class().into_iter().enumerate() {
        if idx.len() < k {
            return Err(DataError::NotEnough {
                class: train.classes[c].clone(),
                available: idx.len(),
                requested: k,
            });
        }
        rng.shuffle(&mut idx);
        out.extend_from_slice(&idx[..k]);
    }
    Ok(out)
}

/// A fixed test subset: `per_class` images of each class from `test`, chosen by a seed that
/// does not depend on the run's seed, so every method and seed is scored on the same images.
pub fn fixed_test(test: &ImageSet, per_class: usize) -> Result<Vec<usize>> {
    k_shot(test, per_class, 0x7465_7374)
}

/// Split one set into disjoint train / test index lists: the last `test_per_class` images of
/// each class (in file order) are the test set.
pub fn split_tail(set: &ImageSet, test_per_class: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (c, idx) in set.by_class().into_iter().enumerate() {
        if idx.len() <= test_per_class {
            return Err(DataError::NotEnough {
                class: set.classes[c].clone(),
                available: idx.len(),
                requested: test_per_class + 1,
            });
        }
        let cut = idx.len() - test_per_class;
        train.extend_from_slice(&idx[..cut]);
        test.extend_from_slice(&idx[cut..]);
    }
    Ok((train, test))
}
