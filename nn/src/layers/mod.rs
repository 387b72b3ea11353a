//! The layers, one family per file.

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod bilinear;
pub(crate) mod conv;
pub(crate) mod conv_transpose;
pub(crate) mod decoder;
pub(crate) mod dropout;
pub(crate) mod embedding;
pub(crate) mod embedding_bag;
pub(crate) mod group_norm;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod reshape;
pub(crate) mod rnn;
pub(crate) mod transformer;
pub(crate) mod volume;
