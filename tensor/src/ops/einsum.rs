//! `einsum`: Einstein summation over any equation PyTorch accepts (letters `a-zA-Z`, one
//! `...` per operand, an explicit `->` output or the implicit one), reduced to the ops
//! every operand type has: repeated labels of one operand become diagonals, labels used
//! nowhere else are summed early, and operands are contracted left to right, each pair
//! as one batched matrix product (`[batch, M, K] @ [batch, K, N]`).
//!
//! The plan is written once over [`EinsumOperand`], so strata-autograd runs the same
//! steps on vars and gets every derivative from the ops it calls.

use crate::{Element, Result, Tensor, TensorError};

const OP: &str = "einsum";
/// Label ids: 0..52 for letters (`A`-`Z`, then `a`-`z`, PyTorch's order for the implicit
/// output), 52.. for the dimensions the ellipsis covers, right-aligned.
const ELLIPSIS_BASE: usize = 52;

/// What `einsum` needs of an operand; implemented by `Tensor` here and by `Var` in
/// strata-autograd. Not a stable API.
#[doc(hidden)]
pub trait EinsumOperand: Sized + Clone {
    /// The error of the operand's ops.
    type Error: From<TensorError>;
    /// The shape.
    fn dims(&self) -> Vec<usize>;
    /// `permute`.
    fn permute_to(&self, order: &[isize]) -> std::result::Result<Self, Self::Error>;
    /// `reshape`.
    fn reshape_to(&self, shape: &[usize]) -> std::result::Result<Self, Self::Error>;
    /// `diagonal(0, d1, d2)`: the diagonal moves to the end.
    fn diagonal_of(&self, d1: usize, d2: usize) -> std::result::Result<Self, Self::Error>;
    /// `sum` over `dims`, dropping them.
    fn sum_over(&self, dims: &[isize]) -> std::result::Result<Self, Self::Error>;
    /// `broadcast_to`.
    fn broadcast_as(&self, shape: &[usize]) -> std::result::Result<Self, Self::Error>;
    /// Batched `matmul` of `[B, M, K]` and `[B, K, N]`.
    fn bmm(&self, other: &Self) -> std::result::Result<Self, Self::Error>;
}

fn letter_id(c: char) -> Option<usize> {
    match c {
        'A'..='Z' => Some(c as usize - 'A' as usize),
        'a'..='z' => Some(26 + c as usize - 'a' as usize),
        _ => None,
    }
}

/// One side of the equation: its labels, with the position of the ellipsis if any.
struct Term {
    labels: Vec<usize>,
    ellipsis: Option<usize>,
}

fn parse_term(text: &str, what: &str) -> Result<Term> {
    let mut labels = Vec::new();
    let mut ellipsis = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            if ellipsis.is_some() {
                return Err(TensorError::invalid(
                    OP,
                    format!("{what} '{text}' has more than one ellipsis"),
                ));
            }
            ellipsis = Some(labels.len());
            rest = &rest[3..];
            continue;
        }
        let id = letter_id(c).ok_or_else(|| {
            TensorError::invalid(
                OP,
                format!("{what} '{text}': '{c}' is not a letter a-z or A-Z (or '...')"),
            )
        })?;
        labels.push(id);
        rest = &rest[c.len_utf8()..];
    }
    Ok(Term { labels, ellipsis })
}

/// An operand with one label per dimension.
struct Labelled<O> {
    value: O,
    labels: Vec<usize>,
}

/// Evaluates `equation` on `operands` (see the module docs and [`Tensor::einsum`]).
///
/// # Errors
/// [`TensorError::Invalid`] for a malformed equation or one that does not fit the
/// operands' ranks; [`TensorError::Shape`] when a label's sizes differ (other than 1); the
/// operand ops' errors.
#[doc(hidden)]
pub fn einsum<O: EinsumOperand>(
    equation: &str,
    operands: &[O],
) -> std::result::Result<O, O::Error> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms = lhs
        .split(',')
        .enumerate()
        .map(|(i, t)| parse_term(t, &format!("operand {i}")))
        .collect::<Result<Vec<_>>>()?;
    if terms.len() != operands.len() {
        return Err(TensorError::invalid(
            OP,
            format!(
                "the equation '{equation}' has {} operand(s), {} given",
                terms.len(),
                operands.len()
            ),
        )
        .into());
    }
    // The ellipsis dimensions of each operand, and how many the widest covers.
    let mut covered = Vec::with_capacity(terms.len());
    for (i, (term, op)) in terms.iter().zip(operands).enumerate() {
        let nd = op.dims().len();
        let named = term.labels.len();
        let e = match term.ellipsis {
            Some(_) if nd >= named => nd - named,
            None if nd == named => 0,
            _ => {
                return Err(TensorError::invalid(
                    OP,
                    format!(
                        "operand {i} has {nd} dimension(s), its subscripts name {named}{}",
                        if term.ellipsis.is_some() {
                            " (plus '...')"
                        } else {
                            ""
                        }
                    ),
                )
                .into());
            }
        };
        covered.push(e);
    }
    let widest = covered.iter().copied().max().unwrap_or(0);
    // Every operand labelled per dimension; ellipsis dims right-aligned, missing ones
    // added as size 1 at the front of the ellipsis.
    let mut items: Vec<Labelled<O>> = Vec::with_capacity(operands.len());
    for ((term, op), &e) in terms.iter().zip(operands).zip(&covered) {
        let mut labels = Vec::new();
        let mut shape = Vec::new();
        let dims = op.dims();
        let at = term.ellipsis.unwrap_or(term.labels.len());
        labels.extend(&term.labels[..at]);
        shape.extend(&dims[..at]);
        if term.ellipsis.is_some() {
            labels.extend((0..widest).map(|k| ELLIPSIS_BASE + k));
            shape.extend(std::iter::repeat_n(1, widest - e));
            shape.extend(&dims[at..at + e]);
        }
        labels.extend(&term.labels[at..]);
        shape.extend(&dims[at + e..]);
        let value = if shape == dims {
            op.clone()
        } else {
            op.reshape_to(&shape)?
        };
        items.push(Labelled { value, labels });
    }
    // The output labels.
    let any_ellipsis = terms.iter().any(|t| t.ellipsis.is_some());
    let output: Vec<usize> = match rhs {
        Some(r) => {
            let term = parse_term(r, "the output")?;
            let mut out = term.labels.clone();
            if let Some(at) = term.ellipsis {
                if !any_ellipsis {
                    return Err(TensorError::invalid(
                        OP,
                        "the output has '...' but no operand does",
                    )
                    .into());
                }
                out.splice(at..at, (0..widest).map(|k| ELLIPSIS_BASE + k));
            }
            for (k, &l) in out.iter().enumerate() {
                if out[..k].contains(&l) {
                    return Err(TensorError::invalid(
                        OP,
                        format!(
                            "the output subscript '{}' appears more than once",
                            label_name(l)
                        ),
                    )
                    .into());
                }
                if !items.iter().any(|it| it.labels.contains(&l)) {
                    return Err(TensorError::invalid(
                        OP,
                        format!("the output subscript '{}' is in no operand", label_name(l)),
                    )
                    .into());
                }
            }
            out
        }
        None => {
            let mut counts = [0usize; ELLIPSIS_BASE];
            for t in &terms {
                for &l in &t.labels {
                    counts[l] += 1;
                }
            }
            let mut out: Vec<usize> = (0..widest).map(|k| ELLIPSIS_BASE + k).collect();
            out.extend((0..ELLIPSIS_BASE).filter(|&l| counts[l] == 1));
            out
        }
    };
    // Sizes per label must agree (1 broadcasts).
    let mut sizes = std::collections::BTreeMap::new();
    for it in &items {
        for (&l, n) in it.labels.iter().zip(it.value.dims()) {
            let e = sizes.entry(l).or_insert(n);
            if *e != n && n != 1 {
                if *e == 1 {
                    *e = n;
                } else {
                    return Err(TensorError::shape(
                        OP,
                        format!(
                            "subscript '{}' has size {n} in one operand and {} in another",
                            label_name(l),
                            *e
                        ),
                    )
                    .into());
                }
            }
        }
    }
    // Repeated labels within an operand become diagonals.
    for it in &mut items {
        while let Some((i, j)) = first_repeat(&it.labels) {
            let (ni, nj) = (it.value.dims()[i], it.value.dims()[j]);
            if ni != nj {
                return Err(TensorError::shape(
                    OP,
                    format!(
                        "subscript '{}' repeats in one operand with sizes {ni} and {nj}",
                        label_name(it.labels[i])
                    ),
                )
                .into());
            }
            it.value = it.value.diagonal_of(i, j)?;
            let l = it.labels[i];
            it.labels.retain(|&x| x != l);
            it.labels.push(l);
        }
    }
    // Contract left to right, summing each label once nothing later needs it.
    let mut acc = items.remove(0);
    acc = sum_unneeded(acc, &output, &items)?;
    while !items.is_empty() {
        let next = items.remove(0);
        let next = sum_unneeded(
            next,
            &output,
            std::slice::from_ref(&acc).iter().chain(&items),
        )?;
        acc = contract(acc, next, &output, &items, &sizes)?;
    }
    let acc = sum_unneeded(acc, &output, &[])?;
    let order: Vec<isize> = output
        .iter()
        .map(|l| acc.labels.iter().position(|x| x == l).expect("kept") as isize)
        .collect();
    if order.iter().enumerate().all(|(k, &p)| p == k as isize) {
        return Ok(acc.value);
    }
    acc.value.permute_to(&order)
}

fn label_name(l: usize) -> String {
    match l {
        0..26 => char::from(b'A' + l as u8).to_string(),
        26..52 => char::from(b'a' + (l - 26) as u8).to_string(),
        _ => "...".to_string(),
    }
}

fn first_repeat(labels: &[usize]) -> Option<(usize, usize)> {
    (0..labels.len()).find_map(|i| {
        labels[i + 1..]
            .iter()
            .position(|&l| l == labels[i])
            .map(|j| (i, i + 1 + j))
    })
}

/// Sums the labels of `it` that neither the output nor any of `others` has.
fn sum_unneeded<'a, O: EinsumOperand + 'a>(
    it: Labelled<O>,
    output: &[usize],
    others: impl IntoIterator<Item = &'a Labelled<O>> + Clone,
) -> std::result::Result<Labelled<O>, O::Error> {
    let needed =
        |l: &usize| output.contains(l) || others.clone().into_iter().any(|o| o.labels.contains(l));
    let dims: Vec<isize> = (0..it.labels.len())
        .filter(|&k| !needed(&it.labels[k]))
        .map(|k| k as isize)
        .collect();
    if dims.is_empty() {
        return Ok(it);
    }
    let labels = it.labels.iter().copied().filter(|l| needed(l)).collect();
    Ok(Labelled {
        value: it.value.sum_over(&dims)?,
        labels,
    })
}

/// Contracts `a` with `b`: shared labels still needed (by the output or `rest`) are
/// batch dimensions, the other shared ones are summed by the matrix product.
fn contract<O: EinsumOperand>(
    a: Labelled<O>,
    b: Labelled<O>,
    output: &[usize],
    rest: &[Labelled<O>],
    sizes: &std::collections::BTreeMap<usize, usize>,
) -> std::result::Result<Labelled<O>, O::Error> {
    let later = |l: &usize| output.contains(l) || rest.iter().any(|o| o.labels.contains(l));
    let batch: Vec<usize> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && later(l))
        .collect();
    let summed: Vec<usize> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && !later(l))
        .collect();
    let a_only: Vec<usize> = a
        .labels
        .iter()
        .copied()
        .filter(|l| !b.labels.contains(l))
        .collect();
    let b_only: Vec<usize> = b
        .labels
        .iter()
        .copied()
        .filter(|l| !a.labels.contains(l))
        .collect();
    let size = |l: &usize| sizes[l];
    let prod = |ls: &[usize]| ls.iter().map(size).product::<usize>();
    let arrange = |it: &Labelled<O>, order: &[usize], full: Vec<usize>, flat: [usize; 3]| {
        let perm: Vec<isize> = order
            .iter()
            .map(|l| it.labels.iter().position(|x| x == l).expect("labelled") as isize)
            .collect();
        let v = it.value.permute_to(&perm)?;
        let v = if v.dims() == full {
            v
        } else {
            v.broadcast_as(&full)?
        };
        v.reshape_to(&flat)
    };
    let a_order: Vec<usize> = [&batch[..], &a_only, &summed].concat();
    let b_order: Vec<usize> = [&batch[..], &summed, &b_only].concat();
    let (nb, m, k, n) = (prod(&batch), prod(&a_only), prod(&summed), prod(&b_only));
    let av = arrange(&a, &a_order, a_order.iter().map(size).collect(), [nb, m, k])?;
    let bv = arrange(&b, &b_order, b_order.iter().map(size).collect(), [nb, k, n])?;
    let out_labels: Vec<usize> = [&batch[..], &a_only, &b_only].concat();
    let out_shape: Vec<usize> = out_labels.iter().map(size).collect();
    let value = av.bmm(&bv)?.reshape_to(&out_shape)?;
    Ok(Labelled {
        value,
        labels: out_labels,
    })
}

impl<T: Element> EinsumOperand for Tensor<T> {
    type Error = TensorError;
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn permute_to(&self, order: &[isize]) -> Result<Self> {
        self.permute(order)
    }
    fn reshape_to(&self, shape: &[usize]) -> Result<Self> {
        self.reshape(shape)
    }
    fn diagonal_of(&self, d1: usize, d2: usize) -> Result<Self> {
        self.diagonal(0, d1 as isize, d2 as isize)
    }
    fn sum_over(&self, dims: &[isize]) -> Result<Self> {
        self.sum(dims, false)
    }
    fn broadcast_as(&self, shape: &[usize]) -> Result<Self> {
        self.broadcast_to(shape)
    }
    fn bmm(&self, other: &Self) -> Result<Self> {
        self.matmul(other)
    }
}

impl<T: Element> Tensor<T> {
    /// Einstein summation, like `torch.einsum(equation, *operands)`: letters label
    /// dimensions, a label shared by operands multiplies along it, labels missing from the
    /// output (after `->`, or implicitly: the labels used once, sorted, uppercase first)
    /// are summed; `...` stands for the remaining dimensions (broadcast across operands);
    /// a label repeated in one operand takes the diagonal. Pairs of operands contract
    /// left to right as batched matrix products.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![5.0f32, 6.0, 7.0, 8.0], &[2, 2])?;
    /// assert_eq!(Tensor::einsum("ij,jk->ik", &[a.clone(), b])?.to_vec(), vec![19.0, 22.0, 43.0, 50.0]);
    /// assert_eq!(Tensor::einsum("ii", std::slice::from_ref(&a))?.to_vec(), vec![5.0]); // the trace
    /// assert_eq!(Tensor::einsum("ij->ji", &[a])?.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for a malformed equation or one that does not fit the
    /// operands; [`TensorError::Shape`] when a label's sizes disagree.
    pub fn einsum(equation: &str, operands: &[Tensor<T>]) -> Result<Tensor<T>> {
        einsum(equation, operands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: usize, shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec((0..n).map(|i| (i as f64 * 0.37).sin()).collect(), shape).unwrap()
    }

    #[test]
    fn equations_and_their_errors() {
        let a = t(6, &[2, 3]);
        let b = t(12, &[3, 4]);
        let mm = Tensor::einsum("ij,jk", &[a.clone(), b.clone()]).unwrap();
        assert!(mm.allclose(&a.matmul(&b).unwrap(), 1e-12, 1e-12).unwrap());
        // Outer product, broadcast batch, trace of a batch, sum of everything.
        assert_eq!(
            Tensor::einsum("i,j->ij", &[t(2, &[2]), t(3, &[3])])
                .unwrap()
                .shape(),
            [2, 3]
        );
        let x = t(24, &[2, 3, 4]);
        let y = t(8, &[1, 4, 2]);
        assert_eq!(
            Tensor::einsum("...ij,...jk->...ik", &[x.clone(), y])
                .unwrap()
                .shape(),
            [2, 3, 2]
        );
        let sq = t(18, &[2, 3, 3]);
        let tr = Tensor::einsum("bii->b", std::slice::from_ref(&sq))
            .unwrap()
            .to_vec();
        let want: Vec<f64> = (0..2)
            .map(|b| (0..3).map(|i| sq.to_vec()[b * 9 + i * 3 + i]).sum())
            .collect();
        assert!(tr.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12));
        assert!(
            (Tensor::einsum("ijk->", std::slice::from_ref(&x))
                .unwrap()
                .to_vec()[0]
                - x.sum_all().to_vec()[0])
                .abs()
                < 1e-12
        );
        let err = |e: &str, ops: &[Tensor<f64>]| Tensor::einsum(e, ops).unwrap_err().to_string();
        assert!(err("ij,jk", std::slice::from_ref(&a)).contains("2 operand(s), 1 given"));
        assert!(err("ijk", std::slice::from_ref(&a)).contains("name 3"));
        assert!(err("i1", std::slice::from_ref(&a)).contains("'1' is not a letter"));
        assert!(err("ij->ii", std::slice::from_ref(&a)).contains("more than once"));
        assert!(err("ij->k", std::slice::from_ref(&a)).contains("in no operand"));
        assert!(err("ij,ij->", &[a.clone(), b]).contains("size"));
        assert!(err("......", &[a]).contains("more than one ellipsis"));
    }
}
