//! strata-tensor: n-dimensional strided tensors with fast CPU kernels.
//!
//! This crate owns the data: [`Tensor<T>`], a cheap-to-clone handle to shared storage plus a
//! [`Layout`] (shape, strides, offset), and every kernel the rest of strata runs on —
//! broadcasting elementwise ops, reductions, softmax, matrix products (faer), convolution and
//! pooling with their backward kernels, indexing, and in-place updates for optimizers. It
//! also owns the one safetensors codec ([`io`]) that state dicts and optimizer state are
//! saved with. It knows nothing of gradients: `strata-autograd` builds on it.
//!
//! ```
//! use strata_tensor::{Tensor, seeded_rng};
//! let mut rng = seeded_rng(0);
//! let x = Tensor::<f32>::randn(&[4, 3], &mut rng);
//! let w = Tensor::<f32>::randn(&[3, 2], &mut rng);
//! let y = x.matmul(&w)?.relu().softmax(-1)?; // [4, 2], rows sum to 1
//! assert_eq!(y.shape(), &[4, 2]);
//! # Ok::<(), strata_tensor::TensorError>(())
//! ```
//!
//! The source tree shows the layers: `handle/` (the `Tensor` handle, its storage and the
//! cache of freed buffers, layouts, [`Element`]), `engine/` (the engines every op runs on:
//! elementwise maps over any layout, reductions, runtime SIMD dispatch, the one strided
//! GEMM wrapper, and the parallel toolkit whose `Disjoint` type is the only way parallel
//! tasks share a buffer), `ops/` (the op families; each unary op is declared once, with its
//! derivative, in [`for_each_unary_op!`]) and `fused/` (convolution, pooling, layer norm,
//! recurrent and attention kernels with their backward), and `io/` (the safetensors codec).
//! The backward kernels
//! (`*_backward`) exist for strata-autograd and are hidden from these docs.
//!
//! Ops that can fail on shapes, dimensions or indices return [`Result`] with a
//! [`TensorError`] naming the op and the shapes. Large ops run on as many threads as rayon's
//! global pool has (its size follows `RAYON_NUM_THREADS`): from the program's own threads
//! the caller and a team of helpers that spin briefly between ops, from inside a rayon
//! pool that pool; small ops stay on the calling thread. Results do not depend on the
//! thread count.
#![warn(missing_docs)]
// The crate's `unsafe` (runtime SIMD dispatch, the AVX-512 kernels, disjoint parallel
// writes, raw GEMM operands, the zeroed allocation) is fenced: every block states why it is
// sound, every unsafe function when it may be called.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod engine;
mod error;
mod fused;
mod handle;
pub mod io;
mod ops;

pub use engine::simd::{PORTABLE_ENV, simd_level};

/// Measures the machine's f32 peak, for judging the matrix-product kernels against: every
/// thread of the current rayon pool runs `steps` rounds of 24 independent 16-lane fused
/// multiply-adds on registers only (the instruction mix of the AVX-512 GEMM microkernel
/// without its loads). Returns the floating-point operations done (a multiply-add counts
/// 2); divide by the elapsed time for FLOP/s. `None` where the CPU lacks AVX-512 or
/// `STRATA_PORTABLE` is set.
///
/// ```
/// let start = std::time::Instant::now();
/// if let Some(flops) = strata_tensor::fma_peak_probe(1_000_000) {
///     let gflops = flops as f64 / start.elapsed().as_secs_f64() / 1e9;
///     assert!(gflops > 0.0);
/// }
/// ```
pub fn fma_peak_probe(steps: usize) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    return engine::sgemm::fma_peak_probe(steps);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = steps;
        None
    }
}

/// Measures the ceiling of strata's AVX-512 GEMM, between [`fma_peak_probe`] and a whole
/// product: every thread of the current rayon pool runs the tile loop of a product's
/// steady state `reps` times (the 12 × 32 microkernel over a packed panel of `A` in L1 and
/// a packed 512 × 512 block of `B` in L2, accumulating into 12 rows of `C`), without the
/// packing, the cache misses on the operands and the fork-join of a real product. Returns
/// the floating-point operations done (a multiply-add counts 2); divide by the elapsed
/// time for FLOP/s. `None` where [`fma_peak_probe`] is `None`.
///
/// ```
/// let start = std::time::Instant::now();
/// if let Some(flops) = strata_tensor::gemm_kernel_probe(10) {
///     let gflops = flops as f64 / start.elapsed().as_secs_f64() / 1e9;
///     assert!(gflops > 0.0);
/// }
/// ```
pub fn gemm_kernel_probe(reps: usize) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    return engine::sgemm::kernel_probe(reps);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = reps;
        None
    }
}

/// `[f(items[0]), f(items[1]), …]`, the calls made on strata's threads (the calling thread
/// helps): the fork-join strata's own kernels use, for crates that build on strata-tensor
/// and split work of their own (an optimizer's update over chunks of its buffers, noise
/// drawn chunk by chunk). Each item is handed to exactly one call, so items may hold
/// mutable borrows; calls run in any order and on any thread, and the results come back
/// in the items' order. A call's panic resumes on the caller. With one thread, or fewer
/// than two items, the calls run in order on the calling thread.
///
/// ```
/// let mut data = vec![1.0f32; 1000];
/// let sums = strata_tensor::parallel_map(data.chunks_mut(100).collect(), |chunk| {
///     chunk.iter_mut().for_each(|v| *v *= 2.0);
///     chunk.iter().sum::<f32>()
/// });
/// assert_eq!(sums, vec![200.0; 10]);
/// assert!(data.iter().all(|&v| v == 2.0));
/// ```
pub fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let mut cells: Vec<(Option<T>, Option<R>)> =
        items.into_iter().map(|t| (Some(t), None)).collect();
    engine::par::chunks_mut(&mut cells, 1, true, |_, cell| {
        if let Some(item) = cell[0].0.take() {
            cell[0].1 = Some(f(item));
        }
    });
    cells
        .into_iter()
        .map(|(_, r)| r.expect("every item's call fills its cell"))
        .collect()
}
pub use error::{Result, TensorError};
pub use fused::attention::{HeadInputs, HeadLayout, SdpaMask, SdpaParams};
pub use fused::conv::{Conv1dParams, Conv2dParams, Padding};
pub use fused::norm::LayerNormStats;
pub use fused::pool::Pool2dParams;
pub use fused::recurrent::{RecurrentGradNeeds, RecurrentGrads, RecurrentMode};
pub use fused::recurrent::{RecurrentSaved, RecurrentWeights};
pub use handle::dims::Dims;
pub use handle::element::{DType, Element};
pub use handle::layout::{Layout, broadcast_shapes, checked_numel, contiguous_strides};
pub use handle::storage::{
    AllocationLimitExceeded, buffer_cache_bytes, buffer_cache_limit, clear_buffer_cache,
    set_buffer_cache_limit, with_allocation_limit,
};
pub use handle::tensor::Tensor;
pub use ops::index::IndexTensor;
pub use ops::norm::MatrixNorm;
pub use ops::random::seeded_rng;
pub use ops::rearrange::{Indexing, plans};
pub use ops::view::ShapeArg;

/// The derivatives of the elementwise ops, one module per op (`elementwise::exp`,
/// `elementwise::mul`, …) with the formulas and their fused kernels, for strata-autograd
/// (see [`for_each_unary_op!`] and [`for_each_binary_op!`]); not a stable API.
#[doc(hidden)]
pub mod elementwise {
    pub use crate::ops::binary::generated::*;
    pub use crate::ops::unary::generated::*;
    pub use crate::ops::unary::{Algebra, Scalar};
}

/// The `rand` crate strata's random constructors take their RNGs from.
pub use rand;
