//! The backend this binary was built for, chosen by Cargo feature.
//!
//! Exactly one is used: `cuda` > `wgpu` > `ndarray` > `flex` when several are enabled (the
//! default feature is the CPU default, see `docs/benchmarks.md`).

#[cfg(feature = "cuda")]
mod chosen {
    pub type Inner = burn::backend::Cuda;
    pub const NAME: &str = "cuda";
}
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod chosen {
    pub type Inner = burn::backend::Wgpu;
    pub const NAME: &str = "wgpu";
}
#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
mod chosen {
    pub type Inner = burn::backend::NdArray;
    #[cfg(feature = "ndarray-blas")]
    pub const NAME: &str = "ndarray-blas";
    #[cfg(not(feature = "ndarray-blas"))]
    pub const NAME: &str = "ndarray";
}
#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
mod chosen {
    pub type Inner = burn::backend::Flex;
    pub const NAME: &str = "flex";
}
#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!("enable one backend feature: flex, ndarray, wgpu or cuda");

/// The inference backend.
pub type Inner = chosen::Inner;
/// The training backend.
pub type Train = burn::backend::Autodiff<Inner>;
/// Name recorded in summaries.
pub const NAME: &str = chosen::NAME;

/// The default device of the backend.
pub fn device() -> burn::tensor::Device<Train> {
    Default::default()
}
