//! The runnable examples of strata live beside this file (`examples/*.rs` of the
//! repository); this crate only gathers them: `cargo run --release -p strata-examples
//! --example mnist_cnn`. Every example takes `--quick` (a few steps on a little data), the
//! way CI runs them.
#![forbid(unsafe_code)]

/// Whether the example was started with `--quick`.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}
