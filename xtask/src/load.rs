//! Whether the machine was quiet while a bench ran: the CPU time other processes took,
//! from `/proc/stat` (all processes) minus what this process and the children it waited
//! for took (`/proc/self/stat`), over the wall-clock time. Linux only; elsewhere the probe
//! reports nothing.

use std::process::Command;
use std::time::Instant;

/// Other processes using less than this many cores on average leave the machine quiet.
pub const QUIET_CORES: f64 = 0.1;

/// A reading taken at the start of a bench.
pub struct Probe {
    busy: u64,
    own: u64,
    at: Instant,
}

/// Busy jiffies of all CPUs: user, nice, system, irq, softirq, steal.
fn busy_jiffies() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0))
}

/// Jiffies of this process and its waited-for children: utime, stime, cutime, cstime.
fn own_jiffies() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14.
    (11..15).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// Clock ticks per second (`getconf CLK_TCK`, else Linux's usual 100).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Starts a reading; `None` where `/proc` is not there.
pub fn start() -> Option<Probe> {
    Some(Probe {
        busy: busy_jiffies()?,
        own: own_jiffies()?,
        at: Instant::now(),
    })
}

/// The average number of cores other processes kept busy since `probe` (children that
/// are still running when this is called count as others).
pub fn others(probe: &Probe) -> Option<f64> {
    let busy = busy_jiffies()?.saturating_sub(probe.busy);
    let own = own_jiffies()?.saturating_sub(probe.own);
    let seconds = probe.at.elapsed().as_secs_f64();
    (seconds > 0.0).then(|| busy.saturating_sub(own) as f64 / ticks_per_second() / seconds)
}

/// `"quiet (others 0.03 cores)"` or `"BUSY (others 1.20 cores)"`.
pub fn describe(cores: Option<f64>) -> String {
    match cores {
        Some(c) if c < QUIET_CORES => format!("quiet (others {c:.2} cores)"),
        Some(c) => format!("BUSY (others {c:.2} cores)"),
        None => "load unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        assert_eq!(describe(Some(0.02)), "quiet (others 0.02 cores)");
        assert_eq!(describe(Some(1.5)), "BUSY (others 1.50 cores)");
        assert_eq!(describe(None), "load unknown");
    }

    #[test]
    fn a_reading_is_sane_on_linux() {
        if let Some(p) = start() {
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(i * i);
            }
            std::hint::black_box(x);
            let others = others(&p).unwrap();
            assert!(others >= 0.0 && others.is_finite());
        }
    }
}
