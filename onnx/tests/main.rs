//! strata-onnx's integration tests: every layer kind exported, run by tract at two batch
//! sizes and compared with strata's own forward; hostile exports refused with errors.

mod common;
mod decoder;
mod hostile;
mod layers;
mod more_layers;
mod recurrent;
mod transformer;
