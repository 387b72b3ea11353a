use std::time::Instant;
use strata_tensor::{Pool2dParams, Tensor, seeded_rng};
fn main() {
    let mut rng = seeded_rng(0);
    let x = Tensor::<f32>::randn(&[64, 32, 28, 28], &mut rng);
    for _ in 0..3 {
        let t = Instant::now();
        let (y, _) = x.max_pool2d(Pool2dParams::new(2)).unwrap();
        println!("max_pool2d {:?} {:?}", t.elapsed(), y.shape());
    }
    let t = Instant::now();
    let r = x.relu();
    println!("relu {:?} {}", t.elapsed(), r.numel());
}
