//! The tensor ops added for PyTorch parity against `tests/fixtures/parity_ops.safetensors`
//! (written by `tests/fixtures/generate.py`): the output (and indices) of each case and
//! the gradient of `sum(out · proj)` for each input, through strata's `Var` methods, and
//! the `Tensor` methods' outputs too.

use std::path::PathBuf;

use strata_autograd::{Result, Var, einsum};
use strata_tensor::io::TensorFile;
use strata_tensor::{IndexTensor, Indexing, MatrixNorm, Tensor};

type Case = fn(&[Var<f64>]) -> Result<(Var<f64>, Option<IndexTensor>)>;

fn plain(v: Result<Var<f64>>) -> Result<(Var<f64>, Option<IndexTensor>)> {
    v.map(|v| (v, None))
}

fn indexed(v: Result<(Var<f64>, IndexTensor)>) -> Result<(Var<f64>, Option<IndexTensor>)> {
    v.map(|(v, i)| (v, Some(i)))
}

fn cases() -> Vec<(&'static str, usize, Case)> {
    vec![
        ("flip", 1, |x| plain(x[0].flip(&[0, 2]))),
        ("roll", 1, |x| plain(x[0].roll(&[1, -2], &[0, 2]))),
        ("roll_flat", 1, |x| plain(x[0].roll(&[5], &[]))),
        ("diagonal", 1, |x| plain(x[0].diagonal(1, 0, 2))),
        ("diagonal_neg", 1, |x| plain(x[0].diagonal(-1, -1, -2))),
        ("diag_vec", 1, |x| plain(x[0].diag(-2))),
        ("diag_mat", 1, |x| plain(x[0].diag(1))),
        ("repeat_interleave", 1, |x| {
            plain(x[0].repeat_interleave(&[2, 0, 3], Some(0)))
        }),
        ("repeat_interleave_flat", 1, |x| {
            plain(x[0].repeat_interleave(&[2], None))
        }),
        ("outer", 2, |x| plain(x[0].outer(&x[1]))),
        ("meshgrid_xy", 3, |x| {
            let g = Var::meshgrid(&[&x[0], &x[1], &x[2]], Indexing::Xy)?;
            let mut total = g[0].clone();
            for (k, gk) in g.iter().enumerate().skip(1) {
                total = total.add(&gk.mul_scalar((k + 1) as f64))?;
            }
            plain(Ok(total))
        }),
        ("clamp_tensor", 3, |x| {
            plain(x[0].clamp_tensor(Some(&x[1]), Some(&x[2])))
        }),
        ("clamp_scalar_at_bounds", 1, |x| {
            plain(Ok(x[0].clamp(Some(-0.5), Some(0.5))))
        }),
        ("sort", 1, |x| indexed(x[0].sort(1, false))),
        ("sort_desc", 1, |x| indexed(x[0].sort(0, true))),
        ("topk", 1, |x| indexed(x[0].topk(2, 1, true))),
        ("topk_smallest", 1, |x| indexed(x[0].topk(3, 0, false))),
        ("kthvalue", 1, |x| indexed(x[0].kthvalue(2, 1, false))),
        ("kthvalue_keepdim", 1, |x| {
            indexed(x[0].kthvalue(3, 0, true))
        }),
        ("cumprod", 1, |x| plain(x[0].cumprod(1))),
        ("cumprod_dim0", 1, |x| plain(x[0].cumprod(0))),
        ("logcumsumexp", 1, |x| plain(x[0].logcumsumexp(1))),
        ("matrix_norm_nuc", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::Nuc, false))
        }),
        ("matrix_norm_2", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::Two, false))
        }),
        ("matrix_norm_neg2", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::NegTwo, false))
        }),
        ("svdvals_wide", 1, |x| plain(x[0].svdvals())),
        ("svd_polar_tall", 1, |x| {
            let (u, _, vh) = x[0].svd()?;
            plain(u.matmul(&vh))
        }),
        ("svd_sqrt_gram_wide", 1, |x| {
            let (_, s, vh) = x[0].svd()?;
            plain(vh.transpose(-2, -1)?.matmul(&s.unsqueeze(-1)?.mul(&vh)?))
        }),
        ("vector_norm_2", 1, |x| {
            plain(x[0].vector_norm(2.0, &[0, 2], false))
        }),
        ("vector_norm_1", 1, |x| {
            plain(x[0].vector_norm(1.0, &[0, 2], false))
        }),
        ("vector_norm_3", 1, |x| {
            plain(x[0].vector_norm(3.0, &[0, 2], false))
        }),
        ("vector_norm_half", 1, |x| {
            plain(x[0].vector_norm(0.5, &[0, 2], false))
        }),
        ("vector_norm_inf", 1, |x| {
            plain(x[0].vector_norm(f64::INFINITY, &[0, 2], false))
        }),
        ("vector_norm_neginf", 1, |x| {
            plain(x[0].vector_norm(f64::NEG_INFINITY, &[0, 2], false))
        }),
        ("vector_norm_0", 1, |x| {
            plain(x[0].vector_norm(0.0, &[0, 2], false))
        }),
        ("vector_norm_all_keepdim", 1, |x| {
            plain(x[0].vector_norm(2.5, &[], true))
        }),
        ("matrix_norm_fro", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::Fro, false))
        }),
        ("matrix_norm_1", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::One, false))
        }),
        ("matrix_norm_neg1", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::NegOne, false))
        }),
        ("matrix_norm_inf", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::Inf, false))
        }),
        ("matrix_norm_neginf", 1, |x| {
            plain(x[0].matrix_norm(MatrixNorm::NegInf, false))
        }),
        ("einsum_mm", 2, |x| plain(einsum("ij,jk->ik", x))),
        ("einsum_bmm_ellipsis", 2, |x| {
            plain(einsum("...ij,...jk", x))
        }),
        ("einsum_trace", 1, |x| plain(einsum("bii->b", x))),
        ("einsum_diag", 1, |x| plain(einsum("ii->i", x))),
        ("einsum_three", 3, |x| plain(einsum("ab,bc,cd->ad", x))),
        ("einsum_implicit_upper", 2, |x| plain(einsum("bA,Ab", x))),
        ("einsum_outer_sum", 2, |x| plain(einsum("i,j->", x))),
        ("einsum_attention", 2, |x| {
            plain(einsum("bhqd,bhkd->bhqk", x))
        }),
        ("einsum_bilinear", 3, |x| plain(einsum("bn,anm,bm->ba", x))),
        ("einsum_ellipsis_sum", 1, |x| plain(einsum("...ij->ij", x))),
    ]
}

#[track_caller]
fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        let ok = (g - w).abs() <= 1e-10 + 1e-9 * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: strata {g}, PyTorch {w}");
    }
}

#[test]
fn parity_ops_match_pytorch() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity_ops.safetensors");
    let file = TensorFile::<f64>::read(&path).unwrap();
    let get = |k: &str| {
        file.get(k)
            .unwrap_or_else(|| panic!("fixture lacks {k}"))
            .tensor
            .clone()
    };
    for (name, inputs, f) in cases() {
        let xs: Vec<Var<f64>> = (0..inputs)
            .map(|k| Var::parameter(get(&format!("{name}.in{k}"))))
            .collect();
        let (out, idx) = f(&xs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(
            &out.value(),
            &get(&format!("{name}.out")),
            &format!("{name} output"),
        );
        if let Some(idx) = idx {
            let want: Vec<i64> = get(&format!("{name}.idx"))
                .to_vec()
                .iter()
                .map(|&v| v as i64)
                .collect();
            assert_eq!(idx.to_vec(), want, "{name} indices");
        }
        // The tensor methods give the same output without a graph.
        let consts: Vec<Var<f64>> = xs.iter().map(|x| Var::new(x.value())).collect();
        assert_close(
            &f(&consts).unwrap().0.value(),
            &get(&format!("{name}.out")),
            &format!("{name} output of constants"),
        );
        if !out.needs_grad() {
            continue; // vector_norm_0: a count, no gradient (PyTorch's is zeros)
        }
        out.mul(&Var::new(get(&format!("{name}.proj"))))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        for (k, x) in xs.iter().enumerate() {
            let g = x.grad().unwrap_or_else(|| Tensor::zeros(x.shape()));
            assert_close(
                &g,
                &get(&format!("{name}.grad{k}")),
                &format!("{name} gradient {k}"),
            );
        }
    }
}

/// The `Tensor` methods agree with the `Var` ones on the same fixtures' inputs.
#[test]
fn tensor_methods_agree() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity_ops.safetensors");
    let file = TensorFile::<f64>::read(&path).unwrap();
    let get = |k: &str| file.get(k).unwrap().tensor.clone();
    let x = get("flip.in0");
    assert_close(&x.flip(&[0, 2]).unwrap(), &get("flip.out"), "flip");
    assert_close(
        &x.roll(&[1, -2], &[0, 2]).unwrap(),
        &get("roll.out"),
        "roll",
    );
    assert_close(
        &x.diagonal(1, 0, 2).unwrap(),
        &get("diagonal.out"),
        "diagonal",
    );
    assert_close(
        &get("diag_vec.in0").diag(-2).unwrap(),
        &get("diag_vec.out"),
        "diag",
    );
    assert_close(
        &get("cumprod.in0").cumprod(1).unwrap(),
        &get("cumprod.out"),
        "cumprod",
    );
    assert_close(
        &get("logcumsumexp.in0").logcumsumexp(1).unwrap(),
        &get("logcumsumexp.out"),
        "logcumsumexp",
    );
    assert_close(
        &x.vector_norm(3.0, &[0, 2], false).unwrap(),
        &get("vector_norm_3.out"),
        "vector_norm",
    );
    assert_close(
        &x.matrix_norm(MatrixNorm::Inf, false).unwrap(),
        &get("matrix_norm_inf.out"),
        "matrix_norm",
    );
    let (a, b) = (get("einsum_three.in0"), get("einsum_three.in1"));
    let c = get("einsum_three.in2");
    assert_close(
        &Tensor::einsum("ab,bc,cd->ad", &[a, b, c]).unwrap(),
        &get("einsum_three.out"),
        "einsum",
    );
    let (v, i) = get("topk.in0").topk(2, 1, true).unwrap();
    assert_close(&v, &get("topk.out"), "topk");
    assert_eq!(
        i.to_vec(),
        get("topk.idx")
            .to_vec()
            .iter()
            .map(|&v| v as i64)
            .collect::<Vec<_>>()
    );
}
