//! Which unit each workload reports, and how a criterion throughput becomes a number in it.
//!
//! `Throughput::Bytes(b)` always means bytes read + written per iteration → `GB/s`.
//! What `Throughput::Elements(k)` counts depends on the workload and is looked up in
//! [`ELEMENTS_TABLE`]; a workload missing from the table reports `Melem/s`. A benchmark
//! without a throughput reports its median in `ms`.

/// What `Throughput::Elements(k)` counts in one iteration of a workload's benchmarks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ElementsAre {
    /// Floating-point operations (a multiply-add counts 2) → `GFLOP/s`, higher is better.
    Flops,
    /// Training or autograd steps ("per-step" workloads) → `us/step`, lower is better.
    Steps,
}

/// Workload id → meaning of its `Throughput::Elements`. Extend this as crates add W3..W12.
pub const ELEMENTS_TABLE: &[(&str, ElementsAre)] = &[
    ("W1", ElementsAre::Flops),  // matmul: 2·n³
    ("W2", ElementsAre::Flops),  // conv2d: 2·N·O·Ho·Wo·C·kh·kw
    ("W3", ElementsAre::Steps),  // one CNN training step per iteration
    ("W4", ElementsAre::Steps),  // one MLP Adam step per iteration
    ("W8", ElementsAre::Steps),  // autograd overhead: steps per iteration
    ("W11", ElementsAre::Steps), // one (DP-SGD or plain) training step per iteration
];

/// Floating-point throughput.
pub const GFLOPS: &str = "GFLOP/s";
/// Memory throughput (bytes read + written).
pub const GBPS: &str = "GB/s";
/// Microseconds per step (lower is better).
pub const US_PER_STEP: &str = "us/step";
/// Elements per second, for `Elements` in a workload missing from [`ELEMENTS_TABLE`].
pub const MELEMS: &str = "Melem/s";
/// Gigabits per second, for `Throughput::Bits`.
pub const GBITPS: &str = "Gbit/s";
/// The fallback: the median itself, in milliseconds (lower is better).
pub const MS: &str = "ms";

/// A criterion throughput, as stored in `benchmark.json`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throughput {
    /// `Bytes` or `BytesDecimal`.
    Bytes(u64),
    /// `Bits`.
    Bits(u64),
    /// `Elements`.
    Elements(u64),
    /// `ElementsAndBytes`.
    ElementsAndBytes {
        /// Elements per iteration.
        elements: u64,
        /// Bytes per iteration.
        bytes: u64,
    },
}

/// What `Elements` means for `workload`, if the table says.
pub fn elements_meaning(workload: &str) -> Option<ElementsAre> {
    ELEMENTS_TABLE
        .iter()
        .find(|(id, _)| *id == workload)
        .map(|&(_, meaning)| meaning)
}

/// Converts a median (seconds per iteration) and a throughput into `(value, unit)`.
pub fn throughput(workload: &str, tp: Option<Throughput>, median_s: f64) -> (f64, &'static str) {
    let per_second = |count: u64, scale: f64| count as f64 / median_s / scale;
    let elements = |k: u64| match elements_meaning(workload) {
        Some(ElementsAre::Flops) => (per_second(k, 1e9), GFLOPS),
        Some(ElementsAre::Steps) => (median_s / k as f64 * 1e6, US_PER_STEP),
        None => (per_second(k, 1e6), MELEMS),
    };
    match tp {
        Some(Throughput::Bytes(b)) if b > 0 => (per_second(b, 1e9), GBPS),
        Some(Throughput::Bits(b)) if b > 0 => (per_second(b, 1e9), GBITPS),
        Some(Throughput::Elements(k)) if k > 0 => elements(k),
        // The table decides whether the elements are meaningful; otherwise bytes are.
        Some(Throughput::ElementsAndBytes { elements: k, bytes })
            if k > 0 && (elements_meaning(workload).is_some() || bytes == 0) =>
        {
            elements(k)
        }
        Some(Throughput::ElementsAndBytes { bytes, .. }) if bytes > 0 => {
            (per_second(bytes, 1e9), GBPS)
        }
        _ => (median_s * 1e3, MS),
    }
}

/// Whether a larger number is better in `unit`: rates (`…/s`) yes, times (`ms`, `us/step`) no.
pub fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn matmul_elements_are_flops() {
        // n = 256: 2n³ = 33,554,432 FLOP in 1 ms → 33.55 GFLOP/s.
        let (v, unit) = throughput("W1", Some(Throughput::Elements(2 * 256 * 256 * 256)), 1e-3);
        assert_eq!(unit, GFLOPS);
        assert!(close(v, 33.554432), "{v}");
    }

    #[test]
    fn autograd_elements_are_steps() {
        // 1000 steps in 5 ms → 5 us/step.
        let (v, unit) = throughput("W8", Some(Throughput::Elements(1000)), 5e-3);
        assert_eq!(unit, US_PER_STEP);
        assert!(close(v, 5.0), "{v}");
        assert!(!higher_is_better(unit));
    }

    #[test]
    fn bytes_fallbacks_and_unknown_workloads() {
        let (v, unit) = throughput("W7", Some(Throughput::Bytes(3_000_000_000)), 0.5);
        assert_eq!(unit, GBPS);
        assert!(close(v, 6.0));
        assert!(higher_is_better(unit));
        let (v, unit) = throughput("W7", None, 0.25);
        assert_eq!((unit, higher_is_better(unit)), (MS, false));
        assert!(close(v, 250.0));
        let (v, unit) = throughput("W99", Some(Throughput::Elements(2_000_000)), 1.0);
        assert_eq!(unit, MELEMS);
        assert!(close(v, 2.0));
        // Zero counts cannot make a rate: fall back to the median.
        assert_eq!(throughput("W8", Some(Throughput::Elements(0)), 1e-3).1, MS);
        let both = Some(Throughput::ElementsAndBytes {
            elements: 10,
            bytes: 4e9 as u64,
        });
        assert_eq!(throughput("W7", both, 1.0).1, GBPS);
        assert_eq!(throughput("W1", both, 1.0).1, GFLOPS);
    }
}
