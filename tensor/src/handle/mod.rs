//! The handle and its allocator: [`Tensor`](crate::Tensor) (shared storage plus a layout,
//! with its invariants), the storage buffers and their cache of freed buffers, layouts
//! (shape, strides, offset, broadcasting), small inline shapes ([`Dims`](crate::Dims)) and
//! the sealed [`Element`](crate::Element) trait.

pub(crate) mod dims;
pub(crate) mod element;
pub(crate) mod layout;
pub(crate) mod storage;
pub(crate) mod tensor;
