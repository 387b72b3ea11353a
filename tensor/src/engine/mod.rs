//! The engines every op runs on: elementwise maps over any layout ([`map`], walking
//! coalesced runs with [`iter`]), reductions ([`reduce`]), runtime instruction-set dispatch
//! ([`simd`]), lane kernels and lane-block walks ([`lanes`]), the shared polynomials of
//! exp/tanh ([`math`]), blocked transposes ([`transpose`]), the one strided GEMM wrapper
//! ([`gemm`]) and the parallel toolkit ([`par`]): numbered tasks on rayon's pool and the
//! one type through which tasks write disjoint parts of a buffer. Every `unsafe` block
//! that shares memory between threads goes through `par` and `gemm`.

pub(crate) mod gemm;
pub(crate) mod iter;
pub(crate) mod lanes;
pub(crate) mod map;
pub(crate) mod math;
pub(crate) mod par;
pub(crate) mod reduce;
#[cfg(target_arch = "x86_64")]
pub(crate) mod sgemm;
pub(crate) mod simd;
pub(crate) mod team;
pub(crate) mod transpose;
