//! The multi-rank checks of strata-distributed: one program that every rank runs, the
//! scenarios one after another on the main thread (collectives must come in the same order
//! on every rank, which libtest's parallel tests would not give).
//!
//! ```sh
//! cargo test -p strata-distributed --test ranks                 # a world of one
//! cargo test -p strata-distributed --features mpi --test ranks --no-run
//! mpirun -np 4 target/debug/deps/ranks-<hash>                   # 4 ranks
//! mpirun -np 2 target/debug/deps/ranks-<hash> fault-error       # must end the job non-zero
//! ```
//!
//! With no argument it runs every scenario but the faults; arguments name scenarios. Rank
//! 0 prints one line per check with the figure it measured; a failed check on any rank
//! ends the job with a non-zero status (`World::fail`).

mod checks;
mod collectives;
mod equivalence;
mod faults;
mod models;
mod private;

use strata_distributed::World;

/// A scenario: its name, and the checks it runs, returning lines for rank 0 to print.
type Scenario = (&'static str, fn(&World) -> Result<Vec<String>, String>);

const SCENARIOS: &[Scenario] = &[
    ("collectives", collectives::collectives),
    ("sampler", collectives::sampler),
    ("mismatch", equivalence::mismatch),
    ("equivalence", equivalence::equivalence),
    ("unused", equivalence::unused),
    ("buffers", equivalence::buffers),
    ("zero", equivalence::zero),
    ("dp-equivalence", private::equivalence),
    ("dp-noise", private::noise),
    ("dp-settings", private::settings),
];

const FAULTS: &[Scenario] = &[
    ("fault-error", faults::error),
    ("fault-panic", faults::panic),
    ("fault-kill", faults::kill),
    ("fault-hang", faults::hang),
];

fn main() {
    let world = match World::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    world.abort_on_panic();
    // libtest's own flags (`--quiet`, …), which `cargo test` may pass, are not scenarios.
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<&Scenario> = if names.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for n in &names {
            match SCENARIOS.iter().chain(FAULTS).find(|(name, _)| name == n) {
                Some(s) => chosen.push(s),
                None => world.fail(&format!("no scenario {n:?}"), 2),
            }
        }
        chosen
    };
    if world.rank() == 0 {
        println!(
            "strata-distributed ranks: {} rank(s){}",
            world.size(),
            world
                .launch()
                .map(|l| format!(", started by {}", l.launcher))
                .unwrap_or_default()
        );
    }
    let start = std::time::Instant::now();
    for (name, run) in chosen {
        let t = std::time::Instant::now();
        match run(&world) {
            Ok(lines) => {
                if world.rank() == 0 {
                    for line in lines {
                        println!("ok {name}: {line}");
                    }
                    println!("   {name} took {:.2} s", t.elapsed().as_secs_f64());
                }
            }
            Err(e) => world.fail(&format!("scenario {name}: {e}"), 1),
        }
    }
    if world.rank() == 0 {
        println!("all passed in {:.2} s", start.elapsed().as_secs_f64());
    }
}
