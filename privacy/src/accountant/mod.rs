//! Privacy accountants.

pub(crate) mod fft;
pub mod rdp;
pub(crate) mod special;
