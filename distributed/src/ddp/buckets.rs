//! Gradient buckets: which parameters' gradients travel in one all-reduce.

/// One bucket: its parameters (indices into the reducer's parameters, in the order their
/// gradients are expected to become final), where each one's gradient starts in the
/// bucket's flat buffer, and the buffer's length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub members: Vec<usize>,
    pub offsets: Vec<usize>,
    pub numel: usize,
}

/// Cuts parameters into buckets the way PyTorch's `compute_bucket_assignment_by_size`
/// does: walking them in `order` (reverse registration order, which is about the order in
/// which the backward finishes them), a parameter joins the open bucket, and the bucket
/// closes once it holds at least its cap of bytes: `first_cap` for the first bucket (so
/// that the first all-reduce starts early), `cap` for the others. A cap of 0 gives every
/// parameter a bucket of its own.
pub(crate) fn assign(
    order: &[usize],
    numels: &[usize],
    elem_bytes: usize,
    first_cap: usize,
    cap: usize,
) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    let mut open = Bucket {
        members: Vec::new(),
        offsets: Vec::new(),
        numel: 0,
    };
    for &i in order {
        open.members.push(i);
        open.offsets.push(open.numel);
        open.numel += numels[i];
        let limit = if buckets.is_empty() { first_cap } else { cap };
        if open.numel * elem_bytes >= limit {
            buckets.push(std::mem::replace(
                &mut open,
                Bucket {
                    members: Vec::new(),
                    offsets: Vec::new(),
                    numel: 0,
                },
            ));
        }
    }
    if !open.members.is_empty() {
        buckets.push(open);
    }
    buckets
}

/// Bytes in `mb` mebibytes (PyTorch's `bucket_cap_mb` counts 1024 × 1024 bytes).
pub(crate) fn mib(mb: f64) -> usize {
    (mb * 1024.0 * 1024.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_close_at_their_caps_in_the_given_order() {
        // Four f32 parameters of 10, 300, 20 and 500 elements, walked last to first.
        let numels = [10, 300, 20, 500];
        let order = [3, 2, 1, 0];
        let b = assign(&order, &numels, 4, 1000, 1200);
        // 500·4 = 2000 bytes ≥ 1000 closes the first bucket at once; then 20 + 300 = 320
        // elements (1280 bytes ≥ 1200) close the second; 10 is left for the last.
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].members, vec![3]);
        assert_eq!(
            (b[1].members.clone(), b[1].offsets.clone(), b[1].numel),
            (vec![2, 1], vec![0, 20], 320)
        );
        assert_eq!(b[2].members, vec![0]);
        // One bucket for everything, or one each.
        assert_eq!(assign(&order, &numels, 4, usize::MAX, usize::MAX).len(), 1);
        assert_eq!(assign(&order, &numels, 4, 0, 0).len(), 4);
        assert!(assign(&[], &numels, 4, 0, 0).is_empty());
        assert_eq!(mib(25.0), 25 * 1024 * 1024);
    }
}
