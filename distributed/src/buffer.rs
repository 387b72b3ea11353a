//! The element types collectives carry ([`Scalar`]), the reductions ([`ReduceOp`]), and
//! the owned buffers that travel to the communication thread.

use std::any::Any;

use strata_tensor::Element;

use crate::{DistributedError, Result};

/// A reduction of [`Communicator::all_reduce`](crate::Communicator::all_reduce), applied
/// element by element across the ranks (`torch.distributed.ReduceOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The sum (`MPI_SUM`).
    Sum,
    /// The product (`MPI_PROD`).
    Product,
    /// The minimum (`MPI_MIN`).
    Min,
    /// The maximum (`MPI_MAX`).
    Max,
}

/// An owned buffer of one of the element types MPI carries for strata (public in name
/// only: this module is private, and the type appears in [`Scalar`]'s sealed supertrait).
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U64(Vec<u64>),
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F64(v) => v.len(),
            Buffer::I32(v) => v.len(),
            Buffer::I64(v) => v.len(),
            Buffer::U8(v) => v.len(),
            Buffer::U64(v) => v.len(),
        }
    }
}

pub(crate) mod sealed {
    /// Converts between a typed `Vec` and a [`Buffer`](super::Buffer).
    pub trait Sealed: Sized {
        fn into_buffer(v: Vec<Self>) -> super::Buffer;
        fn from_buffer(b: super::Buffer) -> Option<Vec<Self>>;
    }
}

/// The element types collectives take: `f32`, `f64`, `i32`, `i64`, `u8` and `u64`
/// (sealed). Metrics are usually `f64`, counts `u64`.
pub trait Scalar: sealed::Sealed + Copy + Send + 'static {}

macro_rules! scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {
            fn into_buffer(v: Vec<Self>) -> Buffer {
                Buffer::$variant(v)
            }
            fn from_buffer(b: Buffer) -> Option<Vec<Self>> {
                match b {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
        impl Scalar for $t {}
    )*};
}

scalar!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u8 => U8, u64 => U64);

/// The buffer of a tensor element type's values. `Element` is sealed to `f32` and `f64`,
/// which are both [`Scalar`]s; the downcast states that without a trait bound on every
/// generic user.
pub(crate) fn element_buffer<T: Element>(values: Vec<T>) -> Result<Buffer> {
    let any: Box<dyn Any> = Box::new(values);
    let any = match any.downcast::<Vec<f32>>() {
        Ok(v) => return Ok(Buffer::F32(*v)),
        Err(any) => any,
    };
    match any.downcast::<Vec<f64>>() {
        Ok(v) => Ok(Buffer::F64(*v)),
        Err(_) => Err(unsupported::<T>()),
    }
}

/// The values of a buffer made by [`element_buffer`].
pub(crate) fn element_values<T: Element>(buffer: Buffer) -> Result<Vec<T>> {
    let any: Box<dyn Any> = match buffer {
        Buffer::F32(v) => Box::new(v),
        Buffer::F64(v) => Box::new(v),
        _ => return Err(unsupported::<T>()),
    };
    any.downcast::<Vec<T>>()
        .map(|v| *v)
        .map_err(|_| unsupported::<T>())
}

fn unsupported<T: Element>() -> DistributedError {
    DistributedError::Config(format!(
        "collectives carry f32 and f64 tensors, not {:?}",
        T::DTYPE
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_buffers_round_trip() {
        let b = element_buffer(vec![1.5f32, 2.0]).unwrap();
        assert_eq!(b, Buffer::F32(vec![1.5, 2.0]));
        assert_eq!(element_values::<f32>(b).unwrap(), vec![1.5, 2.0]);
        let b = element_buffer(vec![3.0f64]).unwrap();
        assert!(element_values::<f32>(b.clone()).is_err());
        assert_eq!(element_values::<f64>(b).unwrap(), vec![3.0]);
        assert_eq!(<u64 as sealed::Sealed>::into_buffer(vec![7]).len(), 1);
    }
}
