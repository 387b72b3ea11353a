//! A world of one runs the whole machinery: hooks launch the buckets in order during the
//! backward, the averaging divides by one (exactly), and the gradients are bit for bit
//! those of plain training.

use std::sync::{Arc, Mutex};

use strata_autograd::Var;
use strata_distributed::{
    Communicator, DdpConfig, DistributedDataParallel, DistributedError, DistributedSampler,
    Reducer, World, ZeroRedundancyOptimizer,
};
use strata_nn::{Forward, Linear, Module, ReLU, Sequential};
use strata_optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use strata_tensor::{Tensor, seeded_rng};

fn mlp(seed: u64) -> Sequential<f64> {
    let mut rng = seeded_rng(seed);
    Sequential::new()
        .push(Linear::new(5, 40, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(40, 30, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(30, 2, true, &mut rng))
}

fn input() -> Var<f64> {
    Var::new(Tensor::randn(&[8, 5], &mut seeded_rng(1)))
}

#[test]
fn a_process_started_alone_is_a_world_of_one() {
    // The test runner is no MPI launcher.
    let world = World::init().unwrap();
    assert_eq!((world.rank(), world.size()), (0, 1));
    assert!(world.launch().is_none());
    assert!(!world.comm().is_mpi());
}

#[test]
fn buckets_follow_reverse_registration_order_and_their_caps() {
    let model = mlp(0);
    let one = Reducer::new(&model, &Communicator::alone(), &DdpConfig::default()).unwrap();
    assert_eq!(
        one.buckets(),
        vec![vec![
            "4.bias", "4.weight", "2.bias", "2.weight", "0.bias", "0.weight"
        ]]
    );
    drop(one);
    // 40·30 f64 = 9600 bytes closes a bucket of 8 KiB.
    let cap = 8.0 / 1024.0;
    let config = DdpConfig {
        bucket_cap_mb: cap,
        first_bucket_cap_mb: cap,
        ..DdpConfig::default()
    };
    let small = Reducer::new(&model, &Communicator::alone(), &config).unwrap();
    assert_eq!(
        small.buckets(),
        vec![
            vec!["4.bias", "4.weight", "2.bias", "2.weight"],
            vec!["0.bias", "0.weight"]
        ]
    );
    let bad = DdpConfig {
        bucket_cap_mb: -1.0,
        ..DdpConfig::default()
    };
    assert!(matches!(
        Reducer::new(&model, &Communicator::alone(), &bad),
        Err(DistributedError::Config(_))
    ));
}

/// The hooks launch each bucket during the backward, before the layers below it are
/// differentiated: a gradient hook on the first layer's output sees the later buckets
/// already reduced.
#[test]
fn buckets_are_reduced_during_the_backward() {
    let model = mlp(0);
    let config = DdpConfig {
        bucket_cap_mb: 0.0,
        first_bucket_cap_mb: 0.0,
        ..DdpConfig::default()
    };
    let reducer = Reducer::new(&model, &Communicator::alone(), &config).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let h = model.get(0).unwrap().forward(&input()).unwrap();
    let log = seen.clone();
    let probe = Arc::new(reducer);
    let r = probe.clone();
    let _hook = h.register_hook(move |_| {
        *log.lock().unwrap() = Some(r.stats().buckets);
        None
    });
    let y = (1..5).fold(h, |v, i| model.get(i).unwrap().forward(&v).unwrap());
    y.sum_all().backward().unwrap();
    // Four of the six buckets (the last two layers) were back before the first layer's
    // output got its gradient; all six at the end, in one step.
    assert_eq!(*seen.lock().unwrap(), Some(4));
    let stats = probe.stats();
    assert_eq!((stats.steps, stats.buckets), (1, 6));
    assert_eq!(stats.elements, model.num_parameters());
}

#[test]
fn gradients_are_those_of_plain_training_to_the_bit() {
    let plain = mlp(3);
    plain
        .forward(&input())
        .unwrap()
        .square()
        .mean_all()
        .backward()
        .unwrap();
    for cap in [25.0, 0.0, 0.005] {
        let config = DdpConfig {
            bucket_cap_mb: cap,
            first_bucket_cap_mb: cap,
            ..DdpConfig::default()
        };
        let ddp = DistributedDataParallel::new(mlp(3), &Communicator::alone(), config).unwrap();
        ddp.forward(&input())
            .unwrap()
            .square()
            .mean_all()
            .backward()
            .unwrap();
        for (p, q) in ddp.parameters().iter().zip(plain.parameters()) {
            assert_eq!(p.grad().unwrap().to_vec(), q.grad().unwrap().to_vec());
        }
    }
}

#[test]
fn no_sync_accumulates_and_the_next_backward_reduces_the_sum() {
    let plain = mlp(4);
    let ddp =
        DistributedDataParallel::new(mlp(4), &Communicator::alone(), DdpConfig::default()).unwrap();
    for _ in 0..3 {
        plain
            .forward(&input())
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
    }
    for _ in 0..2 {
        ddp.no_sync(|| ddp.forward(&input()).unwrap().sum_all().backward().unwrap());
    }
    assert_eq!(ddp.reducer().stats().steps, 0);
    ddp.forward(&input()).unwrap().sum_all().backward().unwrap();
    assert_eq!(ddp.reducer().stats().steps, 1);
    for (p, q) in ddp.parameters().iter().zip(plain.parameters()) {
        assert_eq!(p.grad().unwrap().to_vec(), q.grad().unwrap().to_vec());
    }
}

struct TwoHeads {
    trunk: Linear<f64>,
    used: Linear<f64>,
    unused: Linear<f64>,
}

impl Module<f64> for TwoHeads {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<f64>, strata_nn::StateKind)) {
        strata_nn::visit_child("trunk", &self.trunk, f);
        strata_nn::visit_child("used", &self.used, f);
        strata_nn::visit_child("unused", &self.unused, f);
    }
}

impl Forward<f64> for TwoHeads {
    fn forward(&self, x: &Var<f64>) -> strata_nn::Result<Var<f64>> {
        self.used.forward(&self.trunk.forward(x)?.tanh())
    }
}

fn two_heads() -> TwoHeads {
    let mut rng = seeded_rng(2);
    TwoHeads {
        trunk: Linear::new(5, 4, true, &mut rng),
        used: Linear::new(4, 2, true, &mut rng),
        unused: Linear::new(4, 2, true, &mut rng),
    }
}

#[test]
fn unused_parameters_are_found_or_reported() {
    let found = DdpConfig {
        find_unused_parameters: true,
        ..DdpConfig::default()
    };
    let ddp = DistributedDataParallel::new(two_heads(), &Communicator::alone(), found).unwrap();
    for _ in 0..2 {
        ddp.zero_grad();
        ddp.forward(&input()).unwrap().sum_all().backward().unwrap();
        assert!(ddp.module().trunk.weight.grad().is_some());
        assert!(ddp.module().unused.weight.grad().is_none());
    }
    assert_eq!(ddp.reducer().stats().steps, 2);
    // A forward under no_grad (an evaluation) marks nothing.
    strata_autograd::no_grad(|| ddp.forward(&input())).unwrap();
    ddp.forward(&input()).unwrap().sum_all().backward().unwrap();
    assert_eq!(ddp.reducer().stats().steps, 3);

    let strict =
        DistributedDataParallel::new(two_heads(), &Communicator::alone(), DdpConfig::default())
            .unwrap();
    strict
        .forward(&input())
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    let err = strict.forward(&input()).unwrap_err().to_string();
    assert!(
        err.contains("unused.weight") && err.contains("find_unused_parameters"),
        "{err}"
    );
    // The reduction was reset: training can go on once the parameters are used.
    assert_eq!(strict.reducer().stats().steps, 0);
}

#[test]
fn dropping_the_reducer_takes_its_hooks_off() {
    let model = mlp(5);
    let reducer = Reducer::new(&model, &Communicator::alone(), &DdpConfig::default()).unwrap();
    model
        .forward(&input())
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(reducer.stats().steps, 1);
    drop(reducer);
    model.zero_grad();
    model
        .forward(&input())
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    let ddp =
        DistributedDataParallel::new(model, &Communicator::alone(), DdpConfig::default()).unwrap();
    let model = ddp.into_inner();
    assert!(model.parameters()[0].grad().is_some());
}

#[test]
fn the_state_dict_keeps_the_module_keys() {
    let ddp =
        DistributedDataParallel::new(mlp(0), &Communicator::alone(), DdpConfig::default()).unwrap();
    let keys: Vec<String> = ddp.state_dict().keys().map(String::from).collect();
    assert_eq!(
        keys,
        [
            "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"
        ]
    );
}

#[test]
fn zero_in_a_world_of_one_is_the_wrapped_optimizer() {
    let plain = mlp(6);
    let sharded = mlp(6);
    let mut adam = Adam::new(plain.parameters(), AdamConfig::default()).unwrap();
    let mut zero = ZeroRedundancyOptimizer::new(
        vec![ParamGroup::new(sharded.parameters())],
        &Communicator::alone(),
        Box::new(|g| Ok(Box::new(Adam::with_groups(g, AdamConfig::default())?))),
    )
    .unwrap();
    for _ in 0..3 {
        adam.zero_grad();
        zero.zero_grad();
        plain
            .forward(&input())
            .unwrap()
            .square()
            .mean_all()
            .backward()
            .unwrap();
        sharded
            .forward(&input())
            .unwrap()
            .square()
            .mean_all()
            .backward()
            .unwrap();
        adam.step().unwrap();
        zero.step().unwrap();
    }
    for (p, q) in sharded.parameters().iter().zip(plain.parameters()) {
        assert_eq!(p.to_vec(), q.to_vec());
    }
    assert_eq!(zero.local_indices().len(), 6);
    // The whole state, loadable into the plain optimizer.
    zero.consolidate_state_dict(0).unwrap();
    let state = zero.state_dict();
    assert_eq!(state.tensors.len(), adam.state_dict().tensors.len());
    let mut fresh = Adam::new(mlp(6).parameters(), AdamConfig::default()).unwrap();
    fresh.load_state_dict(&state).unwrap();
    zero.load_state_dict(&adam.state_dict()).unwrap();
    zero.set_lr(0.5);
    assert_eq!(zero.lr(), 0.5);
}

#[test]
fn the_sampler_of_one_rank_reads_everything() {
    let s = DistributedSampler::new(10, &Communicator::alone()).shuffle(false);
    assert_eq!(s.indices(0), (0..10).collect::<Vec<_>>());
    assert_eq!((s.num_samples(), s.total_size()), (10, 10));
}
