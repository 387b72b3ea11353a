//! The closed set of element types a [`Tensor`](crate::Tensor) can hold.

use std::fmt::{Debug, Display, LowerExp};

use crate::handle::storage::BufferPool;
pub(crate) use sealed::Sealed as Kernels;

/// The kernels' side of [`Element`]: vectorisable math and the allocator hook. A private
/// supertrait, so that `Element` stays sealed and none of this is part of the public API
/// (outside this crate it cannot be named, so its methods cannot be called).
pub(crate) mod sealed {
    use crate::handle::storage::BufferPool;

    pub trait Sealed: Sized + 'static {
        /// A uniform sample in `[0, 1)` built from 64 random bits.
        fn unit_from_bits(bits: u64) -> Self;

        /// e^x in a form that vectorises (see `engine::math`; libm's for f64).
        fn exp_v(self) -> Self;

        /// [`exp_v`](Sealed::exp_v), its f32 multiply-adds fused when `FMA` (only for code
        /// compiled with FMA, see `math::madd`).
        fn exp_with<const FMA: bool>(self) -> Self;

        /// [`exp_with`](Sealed::exp_with) for `self <= 0` or NaN only (softmax's shifted
        /// inputs), a few instructions cheaper for f32; wrong for positive values.
        fn exp_nonpositive_with<const FMA: bool>(self) -> Self;

        /// tanh(x) in a form that vectorises (libm's for f64).
        fn tanh_v(self) -> Self;

        /// erfc(x) in a form that vectorises (libm's for f64).
        fn erfc_v(self) -> Self;

        /// The process-wide cache of freed buffers of this element type.
        fn buffer_pool() -> &'static BufferPool<Self>;
    }
}

/// The runtime name of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float: the default, for speed.
    F32,
    /// 64-bit IEEE float: for gradient checks and tight tolerances.
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// A tensor element: `f32` or `f64`.
///
/// The trait is sealed: strata's kernels are written and tested for exactly these two types.
/// f32 is the type for speed, f64 the type gradient checks run in.
pub trait Element:
    sealed::Sealed
    + num_traits::Float
    + num_traits::FloatConst
    + faer::traits::RealField
    + Copy
    + Default
    + Send
    + Sync
    + Debug
    + Display
    + LowerExp
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + 'static
{
    /// The runtime name of this type.
    const DTYPE: DType;

    /// Converts from f64, rounding to nearest.
    fn from_f64(v: f64) -> Self;

    /// Converts to f64 (exact for both types).
    fn to_f64(self) -> f64;

    /// Converts a count or index to this type.
    fn from_usize(v: usize) -> Self {
        Self::from_f64(v as f64)
    }

    /// The error function, accurate to the last bit or two (from `libm`).
    fn erf(self) -> Self;
}

static POOL_F32: BufferPool<f32> = BufferPool::new();
static POOL_F64: BufferPool<f64> = BufferPool::new();

impl Element for f32 {
    const DTYPE: DType = DType::F32;

    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl sealed::Sealed for f32 {
    #[inline]
    fn unit_from_bits(bits: u64) -> Self {
        // The top 24 bits give every representable multiple of 2^-24 in [0, 1).
        (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        crate::engine::math::exp_f32(self)
    }
    #[inline(always)]
    fn exp_with<const FMA: bool>(self) -> Self {
        crate::engine::math::exp_f32_with::<FMA>(self)
    }
    #[inline(always)]
    fn exp_nonpositive_with<const FMA: bool>(self) -> Self {
        crate::engine::math::exp_nonpositive_f32_with::<FMA>(self)
    }
    #[inline(always)]
    fn tanh_v(self) -> Self {
        crate::engine::math::tanh_f32(self)
    }
    #[inline(always)]
    fn erfc_v(self) -> Self {
        crate::engine::math::erfc_f32(self)
    }
    fn buffer_pool() -> &'static BufferPool<Self> {
        &POOL_F32
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;

    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

impl sealed::Sealed for f64 {
    #[inline]
    fn unit_from_bits(bits: u64) -> Self {
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn exp_with<const FMA: bool>(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn exp_nonpositive_with<const FMA: bool>(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn tanh_v(self) -> Self {
        self.tanh()
    }
    #[inline(always)]
    fn erfc_v(self) -> Self {
        libm::erfc(self)
    }
    fn buffer_pool() -> &'static BufferPool<Self> {
        &POOL_F64
    }
}
