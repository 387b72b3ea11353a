//! The fused attention kernels against an obvious loop implementation, and their gradients
//! against central differences of it.

use super::*;
use crate::seeded_rng;

/// Everything one attention call takes.
struct Case {
    q: Tensor<f64>,
    k: Tensor<f64>,
    v: Tensor<f64>,
    mask: Option<(Tensor<f64>, bool)>,
    dropout: Option<Tensor<f64>>,
    params: SdpaParams,
}

impl Case {
    fn new(q: &[usize], k: &[usize], v: &[usize], seed: u64) -> Self {
        let mut rng = seeded_rng(seed);
        Case {
            q: Tensor::randn(q, &mut rng),
            k: Tensor::randn(k, &mut rng),
            v: Tensor::randn(v, &mut rng),
            mask: None,
            dropout: None,
            params: SdpaParams::new(q[q.len() - 1]),
        }
    }

    fn mask(&self) -> Option<SdpaMask<'_, f64>> {
        self.mask.as_ref().map(|(m, keep)| {
            if *keep {
                SdpaMask::Keep(m)
            } else {
                SdpaMask::Additive(m)
            }
        })
    }

    fn run(&self) -> (Tensor<f64>, Tensor<f64>) {
        let (out, probs) = self
            .q
            .sdpa(
                &self.k,
                &self.v,
                self.mask(),
                self.dropout.as_ref(),
                self.params,
                true,
            )
            .unwrap();
        (out, probs.unwrap())
    }

    fn reference(&self) -> (Tensor<f64>, Tensor<f64>) {
        reference(&self.q, &self.k, &self.v, self)
    }
}

/// softmax(q·kᵀ·scale + mask) (⊙ dropout) · v by loops over materialised broadcasts.
fn reference(
    q: &Tensor<f64>,
    k: &Tensor<f64>,
    v: &Tensor<f64>,
    c: &Case,
) -> (Tensor<f64>, Tensor<f64>) {
    let (qn, kn, vn) = (q.ndim(), k.ndim(), v.ndim());
    let batch = broadcast_shapes("t", &q.shape()[..qn - 2], &k.shape()[..kn - 2]).unwrap();
    let batch = broadcast_shapes("t", &batch, &v.shape()[..vn - 2]).unwrap();
    let (l, e) = (q.shape()[qn - 2], q.shape()[qn - 1]);
    let (s, ev) = (k.shape()[kn - 2], v.shape()[vn - 1]);
    let full = |t: &Tensor<f64>, a: usize, b: usize| {
        t.broadcast_to(&with_matrix(&batch, a, b)).unwrap().to_vec()
    };
    let (qs, ks, vs) = (full(q, l, e), full(k, s, e), full(v, s, ev));
    let mask = c.mask.as_ref().map(|(m, keep)| (full(m, l, s), *keep));
    let drop = c.dropout.as_ref().map(Tensor::to_vec);
    let nb = numel(&batch);
    let mut out = vec![0.0; nb * l * ev];
    let mut probs = vec![0.0; nb * l * s];
    for b in 0..nb {
        for i in 0..l {
            let mut z = vec![0.0; s];
            for (j, zj) in z.iter_mut().enumerate() {
                let dot: f64 = (0..e)
                    .map(|x| qs[(b * l + i) * e + x] * ks[(b * s + j) * e + x])
                    .sum();
                *zj = dot * c.params.scale;
                if let Some((m, keep)) = &mask {
                    let mv = m[(b * l + i) * s + j];
                    if *keep && mv == 0.0 {
                        *zj = f64::NEG_INFINITY;
                    } else if !*keep {
                        *zj += mv;
                    }
                }
                if c.params.is_causal && j > i {
                    *zj = f64::NEG_INFINITY;
                }
            }
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let row = &mut probs[(b * l + i) * s..(b * l + i + 1) * s];
            if max == f64::NEG_INFINITY {
                row.fill(if c.params.zero_masked_rows {
                    0.0
                } else {
                    f64::NAN
                });
            } else {
                let total: f64 = z.iter().map(|x| (x - max).exp()).sum();
                for (p, x) in row.iter_mut().zip(&z) {
                    *p = (x - max).exp() / total;
                }
            }
            for y in 0..ev {
                out[(b * l + i) * ev + y] = (0..s)
                    .map(|j| {
                        let p = probs[(b * l + i) * s + j]
                            * drop.as_ref().map_or(1.0, |d| d[(b * l + i) * s + j]);
                        p * vs[(b * s + j) * ev + y]
                    })
                    .sum();
            }
        }
    }
    (
        Tensor::from_vec(out, &with_matrix(&batch, l, ev)).unwrap(),
        Tensor::from_vec(probs, &with_matrix(&batch, l, s)).unwrap(),
    )
}

#[track_caller]
fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// The gradients of `Σ w ⊙ reference(q, k, v)` by central differences.
fn numerical_grads(c: &Case, w: &Tensor<f64>) -> [Tensor<f64>; 3] {
    let f = |q: &Tensor<f64>, k: &Tensor<f64>, v: &Tensor<f64>| {
        reference(q, k, v, c)
            .0
            .mul(w)
            .unwrap()
            .sum_all()
            .item()
            .unwrap()
    };
    let eps = 1e-6;
    let perturb = |t: &Tensor<f64>, i: usize, delta: f64| {
        let mut data = t.to_vec();
        data[i] += delta;
        Tensor::from_vec(data, t.shape()).unwrap()
    };
    let grad_of = |which: usize| {
        let t = [&c.q, &c.k, &c.v][which];
        let g: Vec<f64> = (0..t.numel())
            .map(|i| {
                let mut args = [c.q.clone(), c.k.clone(), c.v.clone()];
                args[which] = perturb(t, i, eps);
                let up = f(&args[0], &args[1], &args[2]);
                args[which] = perturb(t, i, -eps);
                let down = f(&args[0], &args[1], &args[2]);
                (up - down) / (2.0 * eps)
            })
            .collect();
        Tensor::from_vec(g, t.shape()).unwrap()
    };
    [grad_of(0), grad_of(1), grad_of(2)]
}

/// Forward against the reference, backward against central differences.
#[track_caller]
fn check(c: &Case, what: &str) {
    let (out, probs) = c.run();
    let (want_out, want_probs) = c.reference();
    assert_close(&out, &want_out, 1e-12, &format!("{what} output"));
    assert_close(&probs, &want_probs, 1e-12, &format!("{what} probabilities"));
    let w = Tensor::<f64>::randn(out.shape(), &mut seeded_rng(99));
    let grads = Tensor::sdpa_backward(
        &w,
        &c.q,
        &c.k,
        &c.v,
        &out,
        &probs,
        c.dropout.as_ref(),
        c.params,
        [true; 3],
    )
    .unwrap();
    let numerical = numerical_grads(c, &w);
    for (i, name) in ["query", "key", "value"].iter().enumerate() {
        let g = grads[i].as_ref().unwrap();
        assert_close(g, &numerical[i], 1e-6, &format!("{what} {name} gradient"));
    }
    // The probabilities-only kernel and its backward agree with the reference too.
    let p = c.q.sdpa_probs(&c.k, c.mask(), c.params).unwrap();
    assert_close(&p, &want_probs, 1e-12, &format!("{what} sdpa_probs"));
}

#[test]
fn plain_and_different_lengths_and_widths() {
    check(&Case::new(&[2, 3, 4], &[2, 5, 4], &[2, 5, 6], 1), "plain");
    check(&Case::new(&[1, 1], &[1, 1], &[1, 1], 2), "one element");
    check(&Case::new(&[6, 3], &[2, 3], &[2, 5], 3), "2-d");
}

#[test]
fn masks_broadcast_and_causal() {
    let mut c = Case::new(&[2, 3, 4], &[2, 5, 4], &[2, 5, 3], 4);
    let keep = Tensor::from_vec((0..15).map(|i| f64::from(i % 3 != 1)).collect(), &[3, 5]).unwrap();
    c.mask = Some((keep, true));
    check(&c, "keep mask [L, S]");
    c.mask = Some((Tensor::randn(&[2, 1, 5], &mut seeded_rng(5)), false));
    check(&c, "additive mask [B, 1, S]");
    c.mask = None;
    c.params.is_causal = true;
    check(&c, "causal L < S");
    let mut c = Case::new(&[2, 5, 4], &[2, 3, 4], &[2, 3, 2], 6);
    c.params.is_causal = true;
    check(&c, "causal L > S");
    c.params.scale = 0.3;
    check(&c, "explicit scale");
}

#[test]
fn broadcast_batch_dims_strided_operands_and_dropout() {
    check(
        &Case::new(&[3, 2, 4], &[2, 3, 5, 4], &[2, 1, 5, 3], 7),
        "broadcast batch",
    );
    let mut c = Case::new(&[2, 4, 3], &[2, 5, 4], &[2, 5, 2], 8);
    // q is a transposed view [2, 3, 4] of a [2, 4, 3] tensor.
    c.q = c.q.transpose(1, 2).unwrap();
    c.params = SdpaParams::new(4);
    check(&c, "transposed query");
    let mut c = Case::new(&[2, 3, 4], &[2, 5, 4], &[2, 5, 3], 9);
    let keep = Tensor::<f64>::bernoulli(&[2, 3, 5], 0.7, &mut seeded_rng(1)).unwrap();
    c.dropout = Some(keep.mul_scalar(1.0 / 0.7));
    check(&c, "dropout");
}

#[test]
fn fully_masked_rows_give_zeros_or_nan() {
    let mut c = Case::new(&[1, 2, 3], &[1, 4, 3], &[1, 4, 2], 10);
    let mut keep = vec![1.0; 8];
    keep[4..].fill(0.0); // the second query sees no key
    c.mask = Some((Tensor::from_vec(keep, &[2, 4]).unwrap(), true));
    let (out, _) = c.run();
    assert_eq!(&out.to_vec()[2..], &[0.0, 0.0]);
    check(&c, "fully masked row");
    c.params.zero_masked_rows = false;
    let (out, probs) = c.run();
    assert!(out.to_vec()[2..].iter().all(|x| x.is_nan()));
    assert!(probs.to_vec()[4..].iter().all(|x| x.is_nan()));
    assert!(out.to_vec()[..2].iter().all(|x| x.is_finite()));
}

#[test]
fn parallel_problems_match_the_reference() {
    // 8 problems of 64 × 64 × 16: enough work for the batch-parallel path.
    let c = Case::new(&[8, 64, 16], &[8, 64, 16], &[8, 64, 16], 11);
    let (out, probs) = c.run();
    let (want_out, want_probs) = c.reference();
    assert_close(&out, &want_out, 1e-12, "parallel output");
    assert_close(&probs, &want_probs, 1e-12, "parallel probabilities");
    // One large problem: faer threads the products.
    let c = Case::new(&[1, 96, 24], &[1, 80, 24], &[1, 80, 8], 12);
    let (out, _) = c.run();
    assert_close(&out, &c.reference().0, 1e-12, "one large problem");
}

/// `[N, L, E]` / `[L, N, E]` / `[L, E]` seen as `[N, H, L, D]`.
fn split_heads(t: &Tensor<f64>, heads: usize, batch_first: bool) -> Tensor<f64> {
    let t = if t.ndim() == 2 {
        t.unsqueeze(0).unwrap()
    } else if batch_first {
        t.clone()
    } else {
        t.transpose(0, 1).unwrap()
    };
    let (n, l, e) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    t.reshape([n, l, heads, e / heads])
        .unwrap()
        .permute(&[0, 2, 1, 3])
        .unwrap()
}

/// `[N, H, L, D]` back to the token-major shape `like`.
fn merge_heads(t: &Tensor<f64>, like: &[usize], batch_first: bool) -> Tensor<f64> {
    let (n, h, l, d) = (t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]);
    let m = t
        .permute(&[0, 2, 1, 3])
        .unwrap()
        .reshape([n, l, h * d])
        .unwrap();
    let m = if like.len() == 2 || batch_first {
        m
    } else {
        m.transpose(0, 1).unwrap()
    };
    m.reshape(like).unwrap().contiguous()
}

#[test]
fn heads_match_the_general_kernel() {
    let mut rng = seeded_rng(13);
    for &(batch_first, unbatched) in &[(true, false), (false, false), (true, true)] {
        let shape = |len: usize, width: usize| {
            if unbatched {
                vec![len, width]
            } else if batch_first {
                vec![2, len, width]
            } else {
                vec![len, 2, width]
            }
        };
        let layout = HeadLayout {
            num_heads: 3,
            batch_first,
        };
        let params = SdpaParams::new(2);
        let mask = Tensor::<f64>::randn(&[3, 4, 4], &mut rng);
        // Packed: q, k, v are the column blocks of one [.., 12] projection (E = 6).
        let qkv = Tensor::<f64>::randn(&shape(4, 18), &mut rng);
        let blocks = qkv.chunk(3, -1).unwrap();
        let (out, probs) = Tensor::sdpa_heads(
            HeadInputs::Packed(&qkv),
            layout,
            Some(SdpaMask::Additive(&mask)),
            None,
            params,
            true,
        )
        .unwrap();
        let hq: Vec<_> = blocks
            .iter()
            .map(|b| split_heads(b, 3, batch_first))
            .collect();
        let (want, want_probs) = hq[0]
            .sdpa(
                &hq[1],
                &hq[2],
                Some(SdpaMask::Additive(&mask)),
                None,
                params,
                true,
            )
            .unwrap();
        let want_probs = want_probs.unwrap();
        assert_close(
            &out,
            &merge_heads(&want, &shape(4, 6), batch_first),
            1e-12,
            "packed output",
        );
        assert_close(
            &probs.clone().unwrap(),
            &want_probs,
            1e-12,
            "packed probabilities",
        );
        let g = Tensor::<f64>::randn(&shape(4, 6), &mut rng);
        let grads = Tensor::sdpa_heads_backward(
            &g,
            HeadInputs::Packed(&qkv),
            layout,
            &out,
            probs.as_ref().unwrap(),
            None,
            params,
            [true; 3],
        )
        .unwrap();
        let gh = split_heads(&g, 3, batch_first);
        let want_grads = Tensor::sdpa_backward(
            &gh,
            &hq[0],
            &hq[1],
            &hq[2],
            &want,
            &want_probs,
            None,
            params,
            [true; 3],
        )
        .unwrap();
        let merged: Vec<_> = want_grads
            .iter()
            .map(|w| merge_heads(w.as_ref().unwrap(), &shape(4, 6), batch_first))
            .collect();
        let want_packed = Tensor::cat(&merged, -1).unwrap();
        assert_close(
            grads[0].as_ref().unwrap(),
            &want_packed,
            1e-12,
            "packed gradient",
        );

        // Separate projections with S ≠ L, causal.
        let q = Tensor::<f64>::randn(&shape(3, 6), &mut rng);
        let k = Tensor::<f64>::randn(&shape(5, 6), &mut rng);
        let v = Tensor::<f64>::randn(&shape(5, 6), &mut rng);
        let params = SdpaParams {
            is_causal: true,
            ..params
        };
        let inputs = HeadInputs::Separate(&q, &k, &v);
        let (out, probs) = Tensor::sdpa_heads(inputs, layout, None, None, params, true).unwrap();
        let (hq, hk, hv) = (
            split_heads(&q, 3, batch_first),
            split_heads(&k, 3, batch_first),
            split_heads(&v, 3, batch_first),
        );
        let (want, want_probs) = hq.sdpa(&hk, &hv, None, None, params, true).unwrap();
        assert_close(
            &out,
            &merge_heads(&want, &shape(3, 6), batch_first),
            1e-12,
            "separate output",
        );
        let g = Tensor::<f64>::randn(&shape(3, 6), &mut rng);
        let grads = Tensor::sdpa_heads_backward(
            &g,
            inputs,
            layout,
            &out,
            probs.as_ref().unwrap(),
            None,
            params,
            [true, false, true],
        )
        .unwrap();
        let gh = split_heads(&g, 3, batch_first);
        let want_grads = Tensor::sdpa_backward(
            &gh,
            &hq,
            &hk,
            &hv,
            &want,
            want_probs.as_ref().unwrap(),
            None,
            params,
            [true; 3],
        )
        .unwrap();
        assert!(grads[1].is_none());
        for (i, len) in [(0, 3), (2, 5)] {
            let want = merge_heads(want_grads[i].as_ref().unwrap(), &shape(len, 6), batch_first);
            assert_close(
                grads[i].as_ref().unwrap(),
                &want,
                1e-12,
                "separate gradient",
            );
        }
    }
}

#[test]
fn shape_errors_name_the_operands() {
    let q = Tensor::<f32>::zeros(&[2, 3, 4]);
    let k = Tensor::<f32>::zeros(&[2, 5, 4]);
    let p = SdpaParams::new(4);
    let bad_k = Tensor::<f32>::zeros(&[2, 5, 3]);
    let e = q.sdpa(&bad_k, &k, None, None, p, false).unwrap_err();
    assert!(e.to_string().contains("key [2, 5, 3]"), "{e}");
    let bad_v = Tensor::<f32>::zeros(&[2, 6, 4]);
    assert!(q.sdpa(&k, &bad_v, None, None, p, false).is_err());
    assert!(
        q.sdpa(&Tensor::zeros(&[3, 5, 4]), &k, None, None, p, false)
            .is_err()
    );
    assert!(
        Tensor::<f32>::zeros(&[4])
            .sdpa(&k, &k, None, None, p, false)
            .is_err()
    );
    let mask = Tensor::<f32>::zeros(&[3, 4]);
    let e = q
        .sdpa(&k, &k, Some(SdpaMask::Keep(&mask)), None, p, false)
        .unwrap_err();
    assert!(e.to_string().contains("[3, 4]"), "{e}");
    let drop = Tensor::<f32>::ones(&[2, 3, 4]);
    assert!(q.sdpa(&k, &k, None, Some(&drop), p, false).is_err());
    let layout = HeadLayout {
        num_heads: 3,
        batch_first: true,
    };
    let packed = Tensor::<f32>::zeros(&[2, 3, 6]);
    let e =
        Tensor::sdpa_heads(HeadInputs::Packed(&packed), layout, None, None, p, false).unwrap_err();
    assert!(e.to_string().contains("num_heads"), "{e}");
    let e = Tensor::sdpa_heads(
        HeadInputs::Separate(&q, &k, &q),
        layout,
        None,
        None,
        p,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("value [2, 3, 4]"), "{e}");
}
