//! The fuzz target of optimizer state files: the saved states of every optimizer after a
//! step (L-BFGS after a closure step), mutated (bit flips, extreme header words, truncation, splices, repeated tails),
//! read with `OptimizerState::load` and loaded into every optimizer. Each gives a clear
//! error that leaves the optimizer as it was, or a state that the optimizer takes and
//! gives back unchanged. The budget is `strata_testing::fuzz::budget()` (see `.ci/run`).

use strata_autograd::Var;
use strata_optim::*;
use strata_tensor::Tensor;
use strata_testing::fuzz::{Verdict, fuzz, mutated, scratch, verdict};

use proptest::prelude::*;

fn param() -> Var<f32> {
    Var::parameter(Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3]).unwrap())
}

/// Every optimizer over `p`, stepped once (gradient 2p) so that it has state.
fn optimizers(p: &Var<f32>) -> Vec<Box<dyn Optimizer<f32>>> {
    let params = || vec![p.clone()];
    let mut all: Vec<Box<dyn Optimizer<f32>>> = vec![
        Box::new(
            Sgd::new(
                params(),
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    ..SgdConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(Adam::new(params(), AdamConfig::default()).unwrap()),
        Box::new(
            AdamW::new(
                params(),
                AdamWConfig {
                    amsgrad: true,
                    ..AdamWConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(
            RmsProp::new(
                params(),
                RmsPropConfig {
                    momentum: 0.5,
                    centered: true,
                    ..RmsPropConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(Adagrad::new(params(), AdagradConfig::default()).unwrap()),
        Box::new(Lion::new(params(), LionConfig::default()).unwrap()),
        Box::new(Adamax::new(params(), AdamaxConfig::default()).unwrap()),
        Box::new(NAdam::new(params(), NAdamConfig::default()).unwrap()),
        Box::new(RAdam::new(params(), RAdamConfig::default()).unwrap()),
        Box::new(Asgd::new(params(), AsgdConfig::default()).unwrap()),
    ];
    for opt in &mut all {
        opt.zero_grad();
        p.square().sum_all().backward().unwrap();
        opt.step().unwrap();
    }
    // L-BFGS steps through a closure that re-evaluates the loss.
    let mut lbfgs = Lbfgs::new(params(), LbfgsConfig::default()).unwrap();
    lbfgs
        .step_with(|| -> strata_autograd::Result<f64> {
            p.zero_grad();
            let loss = p.square().sum_all();
            loss.backward()?;
            Ok(loss.item()?.into())
        })
        .unwrap();
    all.push(Box::new(lbfgs));
    all
}

#[test]
fn fuzz_optimizer_state_files() {
    let dir = scratch("optim-state");
    let path = dir.join("optimizer.safetensors");
    let seeds: Vec<Vec<u8>> = optimizers(&param())
        .iter()
        .map(|opt| {
            opt.state_dict().save(&path).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    fuzz("optimizer-state", mutated(seeds), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let state = OptimizerState::<f32>::load(&path);
        let Ok(state) = &state else {
            return verdict(&state);
        };
        prop_assert!(state.hyper.values().all(|v| v.is_finite()));
        let p = param();
        let mut verdicts = Vec::new();
        for mut opt in optimizers(&p) {
            let before = opt.state_dict();
            let loaded = opt.load_state_dict(state);
            let after = opt.state_dict();
            let name = &before.optimizer;
            // Taken whole, or not at all. (A hyper-parameter the file lacks keeps the
            // optimizer's value, as for files of older versions.)
            let kept = if loaded.is_ok() { state } else { &before };
            prop_assert_eq!(&after.optimizer, &kept.optimizer);
            for (k, v) in &after.hyper {
                let want = kept.hyper.get(k).unwrap_or(&before.hyper[k]);
                prop_assert_eq!(v.to_bits(), want.to_bits(), "{} {}", name, k);
            }
            prop_assert_eq!(&after.steps, &kept.steps, "{}", name);
            prop_assert_eq!(&after.group_lrs, &kept.group_lrs, "{}", name);
            if loaded.is_ok() {
                // A taken state steps without a panic (its numbers are the file's).
                opt.zero_grad();
                p.square().sum_all().backward().unwrap();
                let _ = opt.step();
            }
            verdicts.push(verdict(&loaded)?);
        }
        Ok(Verdict::any(verdicts))
    });
    std::fs::remove_dir_all(dir).unwrap();
}
