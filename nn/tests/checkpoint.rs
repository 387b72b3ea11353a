//! Gradient checkpointing trains bit for bit like the plain model, dropout included: the
//! recomputation replays the first pass's masks.

use std::sync::Arc;

use strata_autograd::{Var, no_grad};
use strata_nn::{Dropout, Forward, GELU, Linear, Module, Sequential, checkpoint_sequential};
use strata_tensor::{Tensor, seeded_rng};

fn model() -> Arc<Sequential<f64>> {
    let mut rng = seeded_rng(3);
    Arc::new(
        Sequential::new()
            .push(Linear::new(6, 16, true, &mut rng))
            .push(GELU::default())
            .push(Dropout::new(0.3, 11).unwrap())
            .push(Linear::new(16, 16, true, &mut rng))
            .push(GELU::default())
            .push(Dropout::new(0.3, 12).unwrap())
            .push(Linear::new(16, 2, true, &mut rng)),
    )
}

fn train(model: &Arc<Sequential<f64>>, segments: Option<usize>) -> Vec<Vec<f64>> {
    let mut rng = seeded_rng(5);
    for _ in 0..4 {
        let x = Var::new(Tensor::randn(&[8, 6], &mut rng));
        let y = match segments {
            Some(s) => checkpoint_sequential(model, s, &x).unwrap(),
            None => model.forward(&x).unwrap(),
        };
        model.zero_grad();
        y.square().mean_all().backward().unwrap();
        no_grad(|| {
            for p in model.parameters() {
                let g = p.grad().unwrap();
                p.update_value(|v| v.axpy_(-0.1, &g)).unwrap();
            }
        });
    }
    model.parameters().iter().map(Var::to_vec).collect()
}

#[test]
fn checkpointed_training_equals_plain_training_bit_for_bit() {
    let plain = train(&model(), None);
    for segments in [1, 2, 3, 7] {
        assert_eq!(
            train(&model(), Some(segments)),
            plain,
            "{segments} segments"
        );
    }
}

#[test]
fn zero_segments_is_an_error() {
    let x = Var::new(Tensor::<f64>::zeros(&[1, 6]));
    assert!(checkpoint_sequential(&model(), 0, &x).is_err());
}
