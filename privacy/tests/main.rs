//! The integration tests of strata-privacy, one test binary; each module is one area.

mod common;

mod accountants;
mod per_sample;
