//! Placeholder until the workload lands.

fn main() {}
