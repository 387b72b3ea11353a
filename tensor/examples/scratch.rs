use std::time::Instant;
use strata_tensor::*;
fn time<F: FnMut()>(mut f: F) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let reps = 50;
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best * 1e6
}
fn main() {
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let pool2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for shift in 10..21 {
        let n = 1usize << shift;
        let mut rng = seeded_rng(1);
        let a = Tensor::<f32>::randn(&[n], &mut rng);
        let b = Tensor::<f32>::randn(&[n], &mut rng);
        let t1 = pool1.install(|| {
            time(|| {
                std::hint::black_box(&a + &b);
            })
        });
        let t2 = pool2.install(|| {
            time(|| {
                std::hint::black_box(&a + &b);
            })
        });
        let e1 = pool1.install(|| {
            time(|| {
                std::hint::black_box(a.exp());
            })
        });
        let e2 = pool2.install(|| {
            time(|| {
                std::hint::black_box(a.exp());
            })
        });
        println!("n=2^{shift:2} add 1t {t1:8.2}us 2t {t2:8.2}us | exp 1t {e1:8.2}us 2t {e2:8.2}us");
    }
}
