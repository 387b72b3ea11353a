//! Memory stays flat over a long training loop: the graph of every step is released.
//! A counting global allocator measures the live heap of this test binary (one test only,
//! so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use strata_autograd::{Var, no_grad};
use strata_tensor::{Tensor, seeded_rng};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn memory_is_flat_over_ten_thousand_steps() {
    let mut rng = seeded_rng(7);
    let x = Var::new(Tensor::<f32>::randn(&[16, 8], &mut rng));
    let target = Var::new(Tensor::<f32>::randn(&[16, 1], &mut rng));
    let w1 = Var::parameter(Tensor::<f32>::randn(&[8, 12], &mut rng).mul_scalar(0.3));
    let b1 = Var::parameter(Tensor::<f32>::zeros(&[12]));
    let w2 = Var::parameter(Tensor::<f32>::randn(&[12, 1], &mut rng).mul_scalar(0.3));
    let params = [&w1, &b1, &w2];
    let step = || {
        let h = x.matmul(&w1).unwrap().add(&b1).unwrap().tanh();
        let loss = h
            .matmul(&w2)
            .unwrap()
            .sub(&target)
            .unwrap()
            .square()
            .mean_all();
        loss.backward().unwrap();
        no_grad(|| {
            for p in params {
                let g = p.take_grad().unwrap();
                p.update_value(|v| v.axpy_(-0.05, &g)).unwrap();
            }
        });
        loss.item().unwrap()
    };
    let first = step();
    // Warm-up: one-off allocations (thread pools, lazily grown tables) happen here.
    for _ in 0..999 {
        step();
    }
    let live_after_warmup = LIVE.load(Ordering::Relaxed);
    let mut last = 0.0;
    for _ in 0..10_000 {
        last = step();
    }
    let growth = LIVE.load(Ordering::Relaxed) - live_after_warmup;
    assert!(
        growth.abs() < 1024,
        "live heap grew by {growth} bytes over 10,000 steps"
    );
    assert!(last < first, "the loop trains: loss {first} -> {last}");
}
