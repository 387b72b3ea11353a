//! Before training together: the ranks' models must be the same (names, kinds, shapes and
//! element types of every parameter and buffer, in order), and start from rank 0's values.

use strata_autograd::Var;
use strata_nn::{Module, StateKind};
use strata_tensor::{Element, Tensor};

use crate::comm::Communicator;
use crate::{DistributedError, ReduceOp, Result};

/// One line per parameter and buffer: `parameter fc1.weight [128, 6272] F32`.
pub(crate) fn describe<T: Element, M: Module<T> + ?Sized>(module: &M) -> Vec<String> {
    let mut lines = Vec::new();
    module.visit_state(&mut |name, var, kind| {
        let kind = match kind {
            StateKind::Parameter if var.needs_grad() => "parameter",
            StateKind::Parameter => "frozen parameter",
            StateKind::Buffer => "buffer",
            StateKind::Counter => "counter",
        };
        lines.push(format!("{kind} {name} {:?} {:?}", var.shape(), T::DTYPE));
    });
    lines
}

/// The first difference between rank 0's description and `mine` (rank `rank`'s), in words.
pub(crate) fn first_difference(root: &[String], mine: &[String], rank: usize) -> Option<String> {
    for (k, (a, b)) in root.iter().zip(mine).enumerate() {
        if a != b {
            return Some(format!(
                "entry {k} of the state: rank 0 has `{a}`, rank {rank} has `{b}`"
            ));
        }
    }
    match root.len().cmp(&mine.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "rank 0 has {} parameters and buffers, rank {rank} has {}: rank {rank} lacks `{}`",
            root.len(),
            mine.len(),
            root[mine.len()]
        )),
        std::cmp::Ordering::Less => Some(format!(
            "rank 0 has {} parameters and buffers, rank {rank} has {}: rank {rank} also has `{}`",
            root.len(),
            mine.len(),
            mine[root.len()]
        )),
    }
}

/// Checks that every rank has rank 0's description; on a difference, every rank returns the
/// same error, which names the lowest differing rank and its first difference.
pub(crate) fn check_same(comm: &Communicator, lines: &[String]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let text = lines.join("\n");
    let root = String::from_utf8(comm.broadcast_bytes(text.as_bytes(), 0)?).map_err(|_| {
        DistributedError::Config("rank 0 sent a description that is not UTF-8".into())
    })?;
    let root: Vec<String> = if root.is_empty() {
        Vec::new()
    } else {
        root.split('\n').map(String::from).collect()
    };
    let difference = first_difference(&root, lines, comm.rank());
    // The lowest rank that differs tells everyone.
    let mut first = [if difference.is_some() {
        comm.rank() as u64
    } else {
        u64::MAX
    }];
    comm.all_reduce(&mut first, ReduceOp::Min)?;
    if first[0] == u64::MAX {
        return Ok(());
    }
    let teller = first[0] as usize;
    let message = comm.broadcast_bytes(difference.unwrap_or_default().as_bytes(), teller)?;
    Err(DistributedError::ModelMismatch(
        String::from_utf8_lossy(&message).into_owned(),
    ))
}

/// Elements per broadcast, so that the staging copy of a large model stays small.
const CHUNK: usize = 1 << 22;

/// Gives every var `root`'s value (`vars` lists the same shapes on every rank).
pub(crate) fn broadcast_values<T: Element>(
    comm: &Communicator,
    vars: &[Var<T>],
    root: usize,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut start = 0;
    while start < vars.len() {
        // A run of vars of at most CHUNK elements (or one larger var).
        let mut end = start;
        let mut numel = 0;
        while end < vars.len() && (end == start || numel + vars[end].numel() <= CHUNK) {
            numel += vars[end].numel();
            end += 1;
        }
        let mut flat = Vec::with_capacity(numel);
        for v in &vars[start..end] {
            flat.extend(v.value().to_vec());
        }
        let flat = comm.broadcast_elements(flat, root)?;
        if comm.rank() != root {
            let mut at = 0;
            for v in &vars[start..end] {
                let n = v.numel();
                v.set_value(Tensor::from_vec(flat[at..at + n].to_vec(), v.shape())?)?;
                at += n;
            }
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn differences_are_named() {
        let root = lines(&["parameter a [2] F32", "parameter b [3] F32"]);
        assert_eq!(first_difference(&root, &root, 1), None);
        let other = lines(&["parameter a [2] F32", "parameter b [4] F32"]);
        let d = first_difference(&root, &other, 2).unwrap();
        assert!(
            d.contains("rank 0 has `parameter b [3] F32`, rank 2 has `parameter b [4] F32`"),
            "{d}"
        );
        let short = lines(&["parameter a [2] F32"]);
        assert!(
            first_difference(&root, &short, 1)
                .unwrap()
                .contains("lacks `parameter b [3] F32`")
        );
        assert!(
            first_difference(&short, &root, 1)
                .unwrap()
                .contains("also has `parameter b [3] F32`")
        );
    }
}
