//! The fused kernels against a naive step-by-step reference, their gradients against
//! central differences, and their independence from the thread count.

use super::*;
use crate::seeded_rng;

const MODES: [RecurrentMode; 4] = [
    RecurrentMode::RnnTanh,
    RecurrentMode::RnnRelu,
    RecurrentMode::Lstm,
    RecurrentMode::Gru,
];

/// One problem: the input, the weights and the initial states.
struct Problem {
    mode: RecurrentMode,
    x: Tensor<f64>,
    w_ih: Tensor<f64>,
    w_hh: Tensor<f64>,
    b_ih: Option<Tensor<f64>>,
    b_hh: Option<Tensor<f64>>,
    h0: Option<Tensor<f64>>,
    c0: Option<Tensor<f64>>,
}

impl Problem {
    #[allow(clippy::too_many_arguments)]
    fn new(
        mode: RecurrentMode,
        (l, n, input, h): (usize, usize, usize, usize),
        bias: bool,
        states: bool,
        seed: u64,
    ) -> Self {
        let mut rng = seeded_rng(seed);
        let gh = mode.gates() * h;
        let bound = 1.0 / (h as f64).sqrt();
        let mut u = |shape: &[usize]| Tensor::uniform(shape, -bound, bound, &mut rng).unwrap();
        let w_ih = u(&[gh, input]);
        let w_hh = u(&[gh, h]);
        let b_ih = bias.then(|| u(&[gh]));
        let b_hh = bias.then(|| u(&[gh]));
        let h0 = states.then(|| u(&[n, h]));
        let c0 = (states && mode == RecurrentMode::Lstm).then(|| u(&[n, h]));
        let x = Tensor::randn(&[l, n, input], &mut rng);
        Problem {
            mode,
            x,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            h0,
            c0,
        }
    }

    fn weights(&self) -> RecurrentWeights<'_, f64> {
        RecurrentWeights {
            w_ih: &self.w_ih,
            w_hh: &self.w_hh,
            b_ih: self.b_ih.as_ref(),
            b_hh: self.b_hh.as_ref(),
        }
    }

    fn run(&self, reverse: bool, save: bool) -> (Tensor<f64>, Option<RecurrentSaved<f64>>) {
        self.x
            .recurrent_sequence(
                self.mode,
                self.weights(),
                self.h0.as_ref(),
                self.c0.as_ref(),
                reverse,
                save,
            )
            .unwrap()
    }

    /// Every tensor, in the order of [`RecurrentGrads`]' fields.
    fn tensors_mut(&mut self) -> Vec<&mut Tensor<f64>> {
        let mut v = vec![&mut self.x, &mut self.w_ih, &mut self.w_hh];
        v.extend(self.b_ih.as_mut());
        v.extend(self.b_hh.as_mut());
        v.extend(self.h0.as_mut());
        v.extend(self.c0.as_mut());
        v
    }
}

/// The packed output computed one step, one row and one unit at a time.
fn reference(p: &Problem, reverse: bool) -> Vec<f64> {
    let (l, n, input) = (p.x.shape()[0], p.x.shape()[1], p.x.shape()[2]);
    let h = p.w_hh.shape()[1];
    let (x, wi, wh) = (p.x.to_vec(), p.w_ih.to_vec(), p.w_hh.to_vec());
    let bi = p.b_ih.as_ref().map(Tensor::to_vec);
    let bh = p.b_hh.as_ref().map(Tensor::to_vec);
    let mut hs = p.h0.as_ref().map_or(vec![0.0; n * h], Tensor::to_vec);
    let mut cs = p.c0.as_ref().map_or(vec![0.0; n * h], Tensor::to_vec);
    let lstm = p.mode == RecurrentMode::Lstm;
    let mut out = vec![0.0; (l + usize::from(lstm)) * n * h];
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    for s in 0..l {
        let t = if reverse { l - 1 - s } else { s };
        let mut next = vec![0.0; n * h];
        for b in 0..n {
            // a_x[j] = W_ih[j]·x + b_ih[j], a_h[j] = W_hh[j]·h + b_hh[j]
            let ax = |j: usize| {
                (0..input)
                    .map(|k| wi[j * input + k] * x[(t * n + b) * input + k])
                    .sum::<f64>()
                    + bi.as_ref().map_or(0.0, |v| v[j])
            };
            let ah = |j: usize| {
                (0..h).map(|k| wh[j * h + k] * hs[b * h + k]).sum::<f64>()
                    + bh.as_ref().map_or(0.0, |v| v[j])
            };
            for u in 0..h {
                let a = |gate: usize| ax(gate * h + u) + ah(gate * h + u);
                next[b * h + u] = match p.mode {
                    RecurrentMode::RnnTanh => a(0).tanh(),
                    RecurrentMode::RnnRelu => a(0).max(0.0),
                    RecurrentMode::Lstm => {
                        let (i, f, g, o) = (sig(a(0)), sig(a(1)), a(2).tanh(), sig(a(3)));
                        cs[b * h + u] = f * cs[b * h + u] + i * g;
                        o * cs[b * h + u].tanh()
                    }
                    RecurrentMode::Gru => {
                        let r = sig(a(0));
                        let z = sig(a(1));
                        let nn = (ax(2 * h + u) + r * ah(2 * h + u)).tanh();
                        (1.0 - z) * nn + z * hs[b * h + u]
                    }
                };
            }
        }
        hs = next;
        out[t * n * h..][..n * h].copy_from_slice(&hs);
    }
    if lstm {
        out[l * n * h..].copy_from_slice(&cs);
    }
    out
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: got {a}, want {b} (tol {tol})"
        );
    }
}

/// Small sizes; several chunks of steps with a ragged last one (`CHUNK_ROWS / 40 = 6`
/// steps per chunk); several tiles per step with ragged edges.
const SIZES: [(usize, usize, usize, usize); 4] =
    [(3, 2, 3, 5), (1, 1, 1, 1), (9, 40, 3, 6), (4, 67, 5, 70)];

#[test]
fn forward_matches_the_step_by_step_reference() {
    for mode in MODES {
        for (k, &size) in SIZES.iter().enumerate() {
            for (bias, states) in [(true, true), (false, false), (true, false)] {
                let p = Problem::new(mode, size, bias, states, k as u64);
                for reverse in [false, true] {
                    let want = reference(&p, reverse);
                    let what =
                        format!("{mode:?} {size:?} bias {bias} states {states} rev {reverse}");
                    for save in [false, true] {
                        let (out, saved) = p.run(reverse, save);
                        assert_eq!(saved.is_some(), save);
                        assert_close(&out.to_vec(), &want, 1e-12, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn gradients_match_central_differences() {
    // ⟨∂(Σ w ⊙ out), v⟩ against (f(θ + εv) − f(θ − εv)) / 2ε for a random direction v
    // through every input at once.
    for mode in MODES {
        for (k, &size) in SIZES.iter().enumerate() {
            for (bias, states) in [(true, true), (false, false)] {
                for reverse in [false, true] {
                    let mut p = Problem::new(mode, size, bias, states, 10 + k as u64);
                    let mut rng = seeded_rng(99);
                    let (out, saved) = p.run(reverse, true);
                    let w = Tensor::<f64>::randn(out.shape(), &mut rng);
                    let g = Tensor::recurrent_sequence_backward(&w, &saved.unwrap(), ALL_GRADS)
                        .unwrap();
                    let analytic_grads = present(g);
                    let dirs: Vec<Tensor<f64>> = p
                        .tensors_mut()
                        .iter()
                        .map(|t| Tensor::randn(t.shape(), &mut rng))
                        .collect();
                    assert_eq!(analytic_grads.len(), dirs.len());
                    let analytic: f64 = analytic_grads
                        .iter()
                        .zip(&dirs)
                        .map(|(a, v)| a.mul(v).unwrap().sum_all().item().unwrap())
                        .sum();
                    let base: Vec<Tensor<f64>> =
                        p.tensors_mut().iter().map(|t| (*t).clone()).collect();
                    // Small enough that no ReLU pre-activation of the large case crosses its
                    // kink (at 1e-6 one does, and the difference is off by 0.1%).
                    let eps = 1e-7;
                    let mut at = |sign: f64| {
                        for ((t, b), v) in p.tensors_mut().into_iter().zip(&base).zip(&dirs) {
                            *t = b.add(&v.mul_scalar(sign * eps)).unwrap();
                        }
                        let (o, _) = p.run(reverse, false);
                        o.mul(&w).unwrap().sum_all().item().unwrap()
                    };
                    let numerical = (at(1.0) - at(-1.0)) / (2.0 * eps);
                    assert!(
                        (analytic - numerical).abs() <= 1e-6 * (1.0 + numerical.abs()),
                        "{mode:?} {size:?} bias {bias} states {states} rev {reverse}: \
                         analytic {analytic}, numerical {numerical}"
                    );
                }
            }
        }
    }
}

#[test]
fn only_the_requested_gradients_are_computed() {
    let p = Problem::new(RecurrentMode::Gru, (3, 2, 3, 4), true, true, 5);
    let (out, saved) = p.run(false, true);
    let needs = RecurrentGradNeeds {
        w_hh: true,
        h0: true,
        ..Default::default()
    };
    let g = Tensor::recurrent_sequence_backward(&Tensor::ones(out.shape()), &saved.unwrap(), needs)
        .unwrap();
    assert!(g.w_hh.is_some() && g.h0.is_some());
    assert!(g.x.is_none() && g.w_ih.is_none() && g.b_ih.is_none() && g.b_hh.is_none());
    assert!(g.c0.is_none());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for mode in MODES {
        let p = Problem::new(mode, (3, 70, 4, 130), true, true, 7);
        let run = || {
            let (out, saved) = p.run(true, true);
            let g = Tensor::recurrent_sequence_backward(&out, &saved.unwrap(), ALL_GRADS).unwrap();
            let mut all = out.to_vec();
            for t in present(g) {
                all.extend(t.to_vec());
            }
            all
        };
        assert_eq!(on_threads(1, run), on_threads(3, run), "{mode:?}");
    }
}

/// `f` run on a pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The gradients that were computed, in the order of [`RecurrentGrads`]' fields.
fn present<T: Element>(g: RecurrentGrads<T>) -> Vec<Tensor<T>> {
    [g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh, g.h0, g.c0]
        .into_iter()
        .flatten()
        .collect()
}

/// Every gradient `recurrent_sequence_backward` can compute.
const ALL_GRADS: RecurrentGradNeeds = RecurrentGradNeeds {
    gates: false,
    x: true,
    w_ih: true,
    w_hh: true,
    b_ih: true,
    b_hh: true,
    h0: true,
    c0: true,
};

/// The packed output and every gradient (for the upstream gradient `cos(out)`) of `p`
/// run in f32, each converted to f64, in the order of [`RecurrentGrads`]' fields.
fn f32_run(p: &Problem, reverse: bool) -> Vec<Vec<f64>> {
    let c = |t: &Tensor<f64>| t.cast::<f32>();
    let (w_ih, w_hh) = (c(&p.w_ih), c(&p.w_hh));
    let (b_ih, b_hh) = (p.b_ih.as_ref().map(c), p.b_hh.as_ref().map(c));
    let weights = RecurrentWeights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: b_ih.as_ref(),
        b_hh: b_hh.as_ref(),
    };
    let (h0, c0) = (p.h0.as_ref().map(c), p.c0.as_ref().map(c));
    let (out, saved) = c(&p.x)
        .recurrent_sequence(p.mode, weights, h0.as_ref(), c0.as_ref(), reverse, true)
        .unwrap();
    let up = out.map(|v| v.cos());
    let g = Tensor::recurrent_sequence_backward(&up, &saved.unwrap(), ALL_GRADS).unwrap();
    let f64s = |t: Tensor<f32>| t.to_vec().iter().map(|&v| f64::from(v)).collect();
    std::iter::once(f64s(out))
        .chain(present(g).into_iter().map(f64s))
        .collect()
}

/// f32 runs the per-step products through its own kernel where the CPU has AVX-512 (see
/// `panels`): its outputs and gradients against f64's, on sizes with several tiles per
/// step, ragged row and unit blocks, several chunks, and a single tile (the last one with
/// an input projection large enough to be split between threads by rows); with biases
/// and initial states, and without either.
#[test]
fn f32_agrees_with_f64() {
    for (mode, given) in MODES.into_iter().flat_map(|m| [(m, true), (m, false)]) {
        let sizes = [
            (5, 3, 4, 6),
            (4, 67, 5, 70),
            (3, 33, 40, 130),
            (40, 8, 20, 16),
        ];
        for (i, &size) in sizes.iter().enumerate() {
            for reverse in [false, true] {
                let p = Problem::new(mode, size, given, given, 3 + i as u64);
                let (out, saved) = p.run(reverse, true);
                let up = out.map(|v| v.cos());
                let g =
                    Tensor::recurrent_sequence_backward(&up, &saved.unwrap(), ALL_GRADS).unwrap();
                let want: Vec<Vec<f64>> = std::iter::once(out.to_vec())
                    .chain(present(g).iter().map(Tensor::to_vec))
                    .collect();
                let got = f32_run(&p, reverse);
                assert_eq!(got.len(), want.len());
                for (k, (got, want)) in got.iter().zip(&want).enumerate() {
                    let what = format!("{mode:?} {size:?} {given} reverse {reverse}, tensor {k}");
                    assert_close(got, want, 2e-4, &what);
                }
            }
        }
    }
}

/// The f32 kernels, like f64's, give bit-identical results on any number of threads.
#[test]
fn f32_results_do_not_depend_on_the_thread_count() {
    for mode in MODES {
        for size in [(3, 70, 4, 130), (40, 8, 20, 16)] {
            let p = Problem::new(mode, size, true, true, 9);
            let run = || f32_run(&p, false);
            assert_eq!(on_threads(1, run), on_threads(3, run), "{mode:?} {size:?}");
        }
    }
}

#[test]
fn non_contiguous_inputs_are_accepted() {
    let p = Problem::new(RecurrentMode::Lstm, (4, 3, 5, 2), true, true, 4);
    let (want, _) = p.run(false, false);
    // The same sequence, stored batch-first and viewed time-major.
    let x_bf = p.x.transpose(0, 1).unwrap().contiguous();
    let x = x_bf.transpose(0, 1).unwrap();
    assert!(!x.is_contiguous());
    let (got, _) = x
        .recurrent_sequence(
            p.mode,
            p.weights(),
            p.h0.as_ref(),
            p.c0.as_ref(),
            false,
            false,
        )
        .unwrap();
    assert_eq!(got.to_vec(), want.to_vec());
}

#[test]
fn bad_shapes_are_errors() {
    let p = Problem::new(RecurrentMode::Gru, (3, 2, 3, 4), true, true, 6);
    let run = |x: &Tensor<f64>, h0: Option<&Tensor<f64>>, c0: Option<&Tensor<f64>>| {
        x.recurrent_sequence(p.mode, p.weights(), h0, c0, false, false)
            .map(|_| ())
            .unwrap_err()
    };
    let shape_err = |e: TensorError| matches!(e, TensorError::Shape { op: "gru", .. });
    assert!(shape_err(run(&Tensor::zeros(&[3, 3]), None, None)));
    assert!(shape_err(run(&Tensor::zeros(&[0, 2, 3]), None, None)));
    assert!(shape_err(run(&Tensor::zeros(&[3, 2, 4]), None, None)));
    assert!(shape_err(run(&p.x, Some(&Tensor::zeros(&[3, 4])), None)));
    let c0 = Tensor::zeros(&[2, 4]);
    assert!(matches!(
        run(&p.x, None, Some(&c0)),
        TensorError::Invalid { op: "gru", .. }
    ));
    let bad_bias = Tensor::zeros(&[4]);
    let weights = RecurrentWeights {
        b_ih: Some(&bad_bias),
        ..p.weights()
    };
    let err =
        p.x.recurrent_sequence(p.mode, weights, None, None, false, false)
            .map(|_| ())
            .unwrap_err();
    assert!(shape_err(err));
    let (out, saved) = p.run(false, true);
    let wrong = Tensor::zeros(&[out.shape()[0] + 1, 2, 4]);
    let err = Tensor::recurrent_sequence_backward(&wrong, &saved.unwrap(), Default::default())
        .map(|_| ())
        .unwrap_err();
    assert!(shape_err(err));
}

#[test]
fn the_gate_gradients_make_up_the_weight_gradients() {
    // ∂W_ih = Σ_t gates_ih[t]ᵀ x_t and ∂b_hh = Σ_t gates_hh[t], for every mode and
    // direction, on sizes that give several chunks.
    for mode in [
        RecurrentMode::RnnTanh,
        RecurrentMode::Lstm,
        RecurrentMode::Gru,
    ] {
        for reverse in [false, true] {
            let p = Problem::new(mode, (37, 9, 3, 5), true, true, 11);
            let (out, saved) = p.run(reverse, true);
            let g = Tensor::randn(out.shape(), &mut seeded_rng(3));
            let needs = RecurrentGradNeeds {
                gates: true,
                ..ALL_GRADS
            };
            let grads = Tensor::recurrent_sequence_backward(&g, &saved.unwrap(), needs).unwrap();
            let (gi, gh) = (grads.gates_ih.unwrap(), grads.gates_hh.unwrap());
            let (l, n) = (37, 9);
            let gh_width = gi.shape()[2];
            let w_ih = gi
                .reshape([(l * n) as isize, gh_width as isize])
                .unwrap()
                .t()
                .unwrap()
                .matmul(&p.x.reshape([(l * n) as isize, 3]).unwrap())
                .unwrap();
            assert!(
                w_ih.allclose(&grads.w_ih.unwrap(), 1e-10, 1e-10).unwrap(),
                "{mode:?} {reverse}"
            );
            let b_hh = gh.sum(&[0, 1], false).unwrap();
            assert!(
                b_hh.allclose(&grads.b_hh.unwrap(), 1e-10, 1e-10).unwrap(),
                "{mode:?} {reverse}"
            );
        }
    }
}
