//! Faults: the last rank fails in one way or another while the others wait for it in a
//! collective. Each must end the whole job with a non-zero status within seconds; CI runs
//! them under `timeout` and checks the status. In a world of one they pass trivially.

use std::time::Duration;

use strata_distributed::{DdpConfig, DistributedDataParallel, ReduceOp, World};

use crate::models::{batch, loss, net, rows};

fn is_last(world: &World) -> bool {
    world.size() > 1 && world.rank() == world.size() - 1
}

/// The others wait in a data-parallel backward for the last rank's gradients.
fn others_wait(world: &World) -> Result<Vec<String>, String> {
    let ddp = DistributedDataParallel::new(net::<f32>(1, 6), world.comm(), DdpConfig::default())
        .map_err(|e| e.to_string())?;
    let data = batch::<f32>(1, 4);
    let (x, y) = rows(&data, 0, 4);
    loss(&ddp, &x, &y)?.backward().map_err(|e| e.to_string())?;
    Ok(vec!["(not reached with several ranks)".into()])
}

/// The last rank returns an error; the harness's `World::fail` aborts the job.
pub fn error(world: &World) -> Result<Vec<String>, String> {
    world.comm().barrier().map_err(|e| e.to_string())?;
    if is_last(world) {
        return Err(format!("injected failure on rank {}", world.rank()));
    }
    others_wait(world)
}

/// The last rank panics; `World::abort_on_panic` aborts the job.
pub fn panic(world: &World) -> Result<Vec<String>, String> {
    world.comm().barrier().map_err(|e| e.to_string())?;
    if is_last(world) {
        panic!("injected panic on rank {}", world.rank());
    }
    others_wait(world)
}

/// The last rank is killed (SIGKILL, as by the out-of-memory killer); the launcher ends
/// the job.
pub fn kill(world: &World) -> Result<Vec<String>, String> {
    world.comm().barrier().map_err(|e| e.to_string())?;
    if is_last(world) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    }
    others_wait(world)
}

/// The last rank hangs outside any collective; the others give up after
/// `STRATA_COLLECTIVE_TIMEOUT` seconds and abort the job.
pub fn hang(world: &World) -> Result<Vec<String>, String> {
    world.comm().barrier().map_err(|e| e.to_string())?;
    if is_last(world) {
        std::thread::sleep(Duration::from_secs(3600));
    }
    let mut v = [1.0f64];
    world
        .comm()
        .all_reduce(&mut v, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    Ok(vec!["(not reached with several ranks)".into()])
}
