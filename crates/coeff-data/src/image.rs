//! The image type every reader produces and the labelled set; a leaf every other module
//! imports.

/// One image, values in `[0, 1]`, layout `[channels, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `channels * height * width` values.
    pub pixels: Vec<f32>,
}

/// Images with class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// The images.
    pub images: Vec<Image>,
    /// Label of each image, `0..classes.len()`.
    pub labels: Vec<usize>,
    /// Class names.
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Indices of the images of each class.
    pub fn by_class(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            out[l].push(i);
        }
        out
    }

    /// The images at `indices` as a new set (same classes).
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        ImageSet {
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    pub(crate) fn from_grey(
        n: usize,
        h: usize,
        w: usize,
        pixels: impl Fn(usize) -> f32,
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Self {
        let images = (0..n)
            .map(|i| Image {
                channels: 1,
                height: h,
                width: w,
                pixels: (0..h * w).map(|k| pixels(i * h * w + k)).collect(),
            })
            .collect();
        ImageSet {
            images,
            labels,
            classes,
        }
    }
}
