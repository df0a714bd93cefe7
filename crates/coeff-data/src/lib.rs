//! # coeff-data
//!
//! Image datasets for few-shot fine-tuning, reusable from any Burn project:
//!
//! - [`image`]: the [`Image`] type and the labelled [`ImageSet`] (a leaf: every reader imports
//!   it); [`resize`]: the bilinear resampling the readers and the preprocessing share;
//! - [`idx`]: MNIST-family IDX files (`.gz` or plain);
//! - [`pickle`]: NumPy arrays from pickle files, read by a restricted interpreter that accepts
//!   only the opcodes and NumPy globals array pickles use (a pickle is a program: nothing is
//!   executed, anything else is refused with the opcode and its offset);
//! - [`dataset`]: Fashion-MNIST (IDX), the classic `mnist.pkl.gz`, the animal-silhouette
//!   pickles, and `ImageFolder` (`root/<class>/<image>.{png,jpg}`, at least two classes) with
//!   a choice between an error and a counted skip for undecodable files, at full size or
//!   resized per image as it is decoded (memory independent of the source resolution);
//! - [`easy_vqa`], [`emoji`]: easy-VQA (PyPI) and Twitter's emoji artwork (npm), fetched and
//!   read in memory;
//! - [`fetch`]: the listed datasets fetched by the project (pinned versions, sha256, cache);
//! - [`sampler`]: seeded k-shot sampling and a fixed, disjoint test set;
//! - [`preprocess`]: resize, grey -> RGB, the checkpoint's normalisation, light augmentation.

pub mod dataset;
pub mod easy_vqa;
pub mod emoji;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod image;
pub mod pickle;
pub mod preprocess;
pub mod resize;
pub mod sampler;

pub use dataset::{
    animal_silhouettes, fashion_mnist, image_folder, image_folder_resized, mnist_pickle, OnBadFile,
};
pub use error::{DataError, Result};
pub use image::{Image, ImageSet};
pub use preprocess::Preprocess;
pub use sampler::{fixed_test, k_shot, split_tail};
