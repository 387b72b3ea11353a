//! The losses added for PyTorch parity against fixtures of `tests/fixtures/generate.py`
//! (`parity_losses`): values and the gradients of `sum(loss · proj)` for every
//! differentiable input, for each reduction.

use strata_autograd::Var;
use strata_nn::loss::{
    self, CTCLoss, GaussianNLLLoss, HingeEmbeddingLoss, MarginRankingLoss,
    MultiLabelSoftMarginLoss, PoissonNLLLoss, Reduction, TripletMarginLoss,
};
use strata_nn::*;
use strata_tensor::Tensor;

use crate::pytorch_fixtures::{REDUCTIONS, assert_close, get, indices, load};

/// Runs `f` on the fixture's `inputs` (as parameters) for each reduction and compares the
/// loss and each input's gradient (where PyTorch gave one).
fn check(
    name: &str,
    inputs: &[&str],
    f: impl Fn(&[Var<f64>], &StateDict<f64>, Reduction) -> Result<Var<f64>>,
) {
    let sd = load(name);
    for (key, reduction) in REDUCTIONS {
        let xs: Vec<Var<f64>> = inputs.iter().map(|k| Var::parameter(get(&sd, k))).collect();
        let loss = f(&xs, &sd, reduction).unwrap();
        assert_close(
            &loss.value(),
            &get(&sd, &format!("{key}.loss")),
            &format!("{name} {key} loss"),
        );
        loss.mul(&Var::new(get(&sd, &format!("{key}.proj"))))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        for (k, x) in inputs.iter().zip(&xs) {
            let want = format!("{key}.grad_{k}");
            if let Some(w) = sd.get(&want) {
                let got = x.grad().unwrap_or_else(|| Tensor::zeros(x.shape()));
                assert_close(&got, w, &format!("{name} {want}"));
            }
        }
    }
}

#[test]
fn pair_losses() {
    check("cosine_embedding", &["x1", "x2"], |v, sd, r| {
        loss::cosine_embedding_loss(&v[0], &v[1], &Var::new(get(sd, "target")), 0.2, r)
    });
    check("cosine_embedding_1d", &["x1", "x2"], |v, _, r| {
        let y = Var::new(Tensor::scalar(-1.0));
        loss::cosine_embedding_loss(&v[0], &v[1], &y, -0.5, r)
    });
    check("margin_ranking", &["x1", "x2", "target"], |v, _, r| {
        MarginRankingLoss {
            margin: 0.3,
            reduction: r,
        }
        .forward(&v[0], &v[1], &v[2])
    });
    let default = TripletMarginLoss::default();
    for (name, options) in [
        ("triplet", default),
        (
            "triplet_p1_swap",
            TripletMarginLoss {
                p: 1.0,
                swap: true,
                margin: 0.5,
                ..default
            },
        ),
        (
            "triplet_p3",
            TripletMarginLoss {
                p: 3.0,
                margin: 2.0,
                eps: 1e-3,
                ..default
            },
        ),
        (
            "triplet_inf",
            TripletMarginLoss {
                p: f64::INFINITY,
                margin: 1.5,
                ..default
            },
        ),
    ] {
        check(name, &["anchor", "positive", "negative"], |v, _, r| {
            TripletMarginLoss {
                reduction: r,
                ..options
            }
            .forward(&v[0], &v[1], &v[2])
        });
    }
    check("hinge_embedding", &["input"], |v, sd, r| {
        HingeEmbeddingLoss {
            margin: 0.8,
            reduction: r,
        }
        .forward(&v[0], &Var::new(get(sd, "target")))
    });
}

#[test]
fn likelihood_losses() {
    check(
        "multilabel_soft_margin",
        &["input", "target"],
        |v, sd, r| {
            MultiLabelSoftMarginLoss {
                weight: Some(get(sd, "weight")),
                reduction: r,
            }
            .forward(&v[0], &v[1])
        },
    );
    check("poisson_nll", &["input", "target"], |v, _, r| {
        PoissonNLLLoss {
            reduction: r,
            ..Default::default()
        }
        .forward(&v[0], &v[1])
    });
    check("poisson_nll_rate_full", &["input", "target"], |v, _, r| {
        let options = PoissonNLLLoss {
            log_input: false,
            full: true,
            eps: 1e-4,
            reduction: r,
        };
        options.forward(&v[0], &v[1])
    });
    for (name, full, eps) in [
        ("gaussian_nll", false, 1e-6),
        ("gaussian_nll_homo_full", true, 1e-3),
        ("gaussian_nll_homo1", false, 1e-6),
    ] {
        check(name, &["input", "target", "var"], |v, _, r| {
            GaussianNLLLoss {
                full,
                eps,
                reduction: r,
            }
            .forward(&v[0], &v[1], &v[2])
        });
    }
}

fn lengths(t: &Tensor<f64>) -> Vec<usize> {
    t.to_vec().iter().map(|&v| v as usize).collect()
}

/// CTC of `log_softmax(logits)` against PyTorch: the loss, the gradient for the logits,
/// and (the log-probabilities made a leaf) PyTorch's gradient for the log-probabilities.
fn check_ctc(name: &str, blank: usize, zero_infinity: bool) {
    let sd = load(name);
    let targets = indices(&get(&sd, "targets"));
    let (il, tl) = (
        lengths(&get(&sd, "input_lengths")),
        lengths(&get(&sd, "target_lengths")),
    );
    let ctc = |lp: &Var<f64>, reduction| {
        CTCLoss {
            blank,
            reduction,
            zero_infinity,
        }
        .forward(lp, &targets, &il, &tl)
        .unwrap()
    };
    for (key, reduction) in REDUCTIONS {
        let proj = Var::new(get(&sd, &format!("{key}.proj")));
        let logits = Var::parameter(get(&sd, "logits"));
        let lp = logits.log_softmax(-1).unwrap();
        let loss = ctc(&lp, reduction);
        assert_close(
            &loss.value(),
            &get(&sd, &format!("{key}.loss")),
            &format!("{name} {key} loss"),
        );
        loss.mul(&proj).unwrap().sum_all().backward().unwrap();
        let what = format!("{name} {key} logits gradient");
        assert_close(
            &logits.grad().unwrap(),
            &get(&sd, &format!("{key}.grad_logits")),
            &what,
        );

        let leaf = Var::parameter(lp.value());
        ctc(&leaf, reduction)
            .mul(&proj)
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let what = format!("{name} {key} log_probs gradient");
        assert_close(
            &leaf.grad().unwrap(),
            &get(&sd, &format!("{key}.grad_log_probs")),
            &what,
        );
    }
}

#[test]
fn ctc_against_pytorch() {
    check_ctc("ctc", 0, false);
    check_ctc("ctc_concat_blank_last", 3, false);
    check_ctc("ctc_zero_infinity", 0, true);
    check_ctc("ctc_unbatched", 0, false);
}
