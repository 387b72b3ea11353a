//! The integration tests of strata-privacy, one test binary; each module is one area.

mod common;

mod accountants;
mod dp_sgd;
mod noise;
mod per_sample;
