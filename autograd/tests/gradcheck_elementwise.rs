//! Gradchecks of the elementwise ops: broadcasting binary ops, tensor–scalar ops,
//! `where_` and `masked_fill`, unary ops and activations, and the operator overloads.
//! Every input comes in a random layout (see `common`), binary operands in shapes that
//! broadcast (e.g. `[3, 1, 4]` with `[2, 4]`).

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::{Result, Var};

type Binary = fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>;
type Unary = fn(&Var<f64>) -> Var<f64>;

/// Two inputs whose shapes broadcast together, in any layouts.
fn pair(a: Values, b: Values) -> BoxedStrategy<(Arg, Arg)> {
    broadcast_shapes(2, 24)
        .prop_flat_map(move |s| (arg(s[0].clone(), a, true), arg(s[1].clone(), b, true)))
        .boxed()
}

/// One input of rank 0..=4 with at most 24 elements, in any layout.
fn single(values: Values) -> BoxedStrategy<Arg> {
    shaped(0..=4, 24, values, true)
}

/// Gradchecks the one-input `op` on `a`.
fn unary(a: &Arg, op: impl Fn(&Var<f64>) -> Var<f64>) -> TestResult {
    check(|v| Ok(op(&a.apply(&v[0])?)), &[a.tensor()])
}

/// A scalar operand in [-2, 2].
fn scalar() -> BoxedStrategy<f64> {
    (-2.0..2.0f64).boxed()
}

/// A scalar with `|s|` in [0.1, 2]: a divisor.
fn nonzero_scalar() -> BoxedStrategy<f64> {
    (0.1..2.0f64, any::<bool>())
        .prop_map(|(m, neg)| if neg { -m } else { m })
        .boxed()
}

/// `0.1·k + 0.05` for `k` in `range`: a bound that [`grid_low`] values never come
/// closer to than 0.03.
fn between_grid(range: std::ops::Range<i32>) -> BoxedStrategy<f64> {
    range.prop_map(|k| f64::from(k) * 0.1 + 0.05).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn add((a, b) in pair(smooth, smooth), t in tracked()) {
        check_pair(&a, &b, t, Var::add)?;
    }

    #[test]
    fn sub((a, b) in pair(smooth, smooth), t in tracked()) {
        check_pair(&a, &b, t, Var::sub)?;
    }

    #[test]
    fn mul((a, b) in pair(smooth, smooth), t in tracked()) {
        check_pair(&a, &b, t, Var::mul)?;
    }

    // The denominator stays at least 0.1 away from the pole at 0.
    #[test]
    fn div((a, b) in pair(smooth, nonzero), t in tracked()) {
        check_pair(&a, &b, t, Var::div)?;
    }

    // A positive base (at least 0.1): x^e is real and smooth in both x and e there.
    #[test]
    fn pow((a, b) in pair(positive, smooth), t in tracked()) {
        check_pair(&a, &b, t, Var::pow)?;
    }

    // Operands on two interleaved grids never tie (see `grid_low`).
    #[test]
    fn maximum((a, b) in pair(grid_low, grid_high), swap in any::<bool>(), t in tracked()) {
        if swap {
            check_pair(&b, &a, t, Var::maximum)?;
        } else {
            check_pair(&a, &b, t, Var::maximum)?;
        }
    }

    #[test]
    fn minimum((a, b) in pair(grid_low, grid_high), swap in any::<bool>(), t in tracked()) {
        if swap {
            check_pair(&b, &a, t, Var::minimum)?;
        } else {
            check_pair(&a, &b, t, Var::minimum)?;
        }
    }

    #[test]
    fn add_scalar(a in single(smooth), s in scalar()) {
        unary(&a, |x| x.add_scalar(s))?;
    }

    #[test]
    fn sub_scalar(a in single(smooth), s in scalar()) {
        unary(&a, |x| x.sub_scalar(s))?;
    }

    #[test]
    fn rsub_scalar(a in single(smooth), s in scalar()) {
        unary(&a, |x| x.rsub_scalar(s))?;
    }

    #[test]
    fn mul_scalar(a in single(smooth), s in scalar()) {
        unary(&a, |x| x.mul_scalar(s))?;
    }

    #[test]
    fn div_scalar(a in single(smooth), s in nonzero_scalar()) {
        unary(&a, |x| x.div_scalar(s))?;
    }

    // A positive base (at least 0.1) with any real exponent, including the ones the
    // kernel special-cases (±0.5, ±1, ±2, 3) and 0, whose gradient is 0.
    #[test]
    fn pow_scalar_real_exponent(
        a in single(positive),
        e in prop_oneof![
            3 => -2.5..2.5f64,
            2 => prop::sample::select(vec![-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]),
        ],
    ) {
        unary(&a, |x| x.pow_scalar(e))?;
    }

    // Integer exponents are defined for negative bases too; the base stays 0.1 away from
    // 0, where negative exponents have a pole.
    #[test]
    fn pow_scalar_integer_exponent(a in single(nonzero), e in -2i32..=3) {
        unary(&a, |x| x.pow_scalar(f64::from(e)))?;
    }

    #[test]
    fn where_(
        (cond, a, b) in broadcast_shapes(3, 24).prop_flat_map(|s| (
            mask(s[0].clone()),
            arg(s[1].clone(), smooth, true),
            arg(s[2].clone(), smooth, true),
        )),
        t in tracked(),
    ) {
        check_pair(&a, &b, t, |x, y| Var::where_(&cond, x, y))?;
    }

    #[test]
    fn masked_fill(
        (a, m, fill) in shape(1..=3, 24).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..=r, proptest::collection::vec(prop::bool::weighted(0.3), r))
        })
        .prop_flat_map(|(s, lead, ones)| {
            let m: Vec<usize> = (lead..s.len()).map(|k| if ones[k] { 1 } else { s[k] }).collect();
            (arg(s, smooth, true), mask(m), scalar())
        }),
    ) {
        check(|v| a.apply(&v[0])?.masked_fill(&m, fill), &[a.tensor()])?;
    }

    #[test]
    fn exp(a in single(smooth)) {
        unary(&a, Var::exp)?;
    }

    // sqrt, rsqrt and log: inputs at least 0.1, away from the singularity at 0.
    #[test]
    fn sqrt(a in single(positive)) {
        unary(&a, Var::sqrt)?;
    }

    #[test]
    fn rsqrt(a in single(positive)) {
        unary(&a, Var::rsqrt)?;
    }

    #[test]
    fn log(a in single(positive)) {
        unary(&a, Var::log)?;
    }

    #[test]
    fn log1p(a in single(above_minus_one)) {
        unary(&a, Var::log1p)?;
    }

    // relu, abs and leaky_relu have their kink at 0; recip its pole.
    #[test]
    fn relu(a in single(nonzero)) {
        unary(&a, Var::relu)?;
    }

    #[test]
    fn abs(a in single(nonzero)) {
        unary(&a, Var::abs)?;
    }

    #[test]
    fn leaky_relu(a in single(nonzero), slope in 0.0..0.5f64) {
        unary(&a, |x| x.leaky_relu(slope))?;
    }

    #[test]
    fn recip(a in single(nonzero)) {
        unary(&a, Var::recip)?;
    }

    #[test]
    fn sigmoid(a in single(smooth)) {
        unary(&a, Var::sigmoid)?;
    }

    #[test]
    fn tanh(a in single(smooth)) {
        unary(&a, Var::tanh)?;
    }

    #[test]
    fn gelu(a in single(smooth)) {
        unary(&a, Var::gelu)?;
    }

    #[test]
    fn gelu_tanh(a in single(smooth)) {
        unary(&a, Var::gelu_tanh)?;
    }

    #[test]
    fn silu(a in single(smooth)) {
        unary(&a, Var::silu)?;
    }

    #[test]
    fn sin(a in single(smooth)) {
        unary(&a, Var::sin)?;
    }

    #[test]
    fn cos(a in single(smooth)) {
        unary(&a, Var::cos)?;
    }

    #[test]
    fn neg(a in single(smooth)) {
        unary(&a, Var::neg)?;
    }

    #[test]
    fn square(a in single(smooth)) {
        unary(&a, Var::square)?;
    }

    #[test]
    fn expm1(a in single(smooth)) {
        unary(&a, Var::expm1)?;
    }

    // softplus switches to the identity where beta·x > threshold, with a jump in the
    // derivative: the threshold is beta times a point between the grid values (or
    // PyTorch's default 20, out of reach).
    #[test]
    fn softplus(
        a in single(grid_low),
        beta in prop::sample::select(vec![0.5, 1.0, 2.0]),
        at in prop::option::of(between_grid(-10..15)),
    ) {
        let threshold = at.map_or(20.0, |c| beta * c);
        unary(&a, |x| x.softplus(beta, threshold))?;
    }

    // The bounds lie between the grid values, so no input sits on one; min > max
    // (everything becomes max, zero gradient) is drawn too.
    #[test]
    fn clamp(
        a in single(grid_low),
        min in prop::option::of(between_grid(-15..5)),
        max in prop::option::of(between_grid(-5..15)),
    ) {
        unary(&a, |x| x.clamp(min, max))?;
    }

    // sign, floor, ceil and round are piecewise constant: a zero gradient, checked away
    // from their jumps at 0, integers and halves.
    #[test]
    fn sign(a in single(fractional)) {
        unary(&a, Var::sign)?;
    }

    #[test]
    fn floor(a in single(fractional)) {
        unary(&a, Var::floor)?;
    }

    #[test]
    fn ceil(a in single(fractional)) {
        unary(&a, Var::ceil)?;
    }

    #[test]
    fn round(a in single(fractional)) {
        unary(&a, Var::round)?;
    }

    // An input with a dim of size 0 through unary ops, and against a partner that
    // broadcasts to it (which must get a zero gradient).
    #[test]
    fn empty_inputs(
        (a, b) in empty_shape(1..=3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), proptest::collection::vec(any::<bool>(), r))
        })
        .prop_flat_map(|(s, ones)| {
            let partner: Vec<usize> = s
                .iter()
                .zip(&ones)
                .map(|(&d, &one)| if one || d == 0 { 1 } else { d })
                .collect();
            (arg(s, smooth, true), arg(partner, nonzero, true))
        }),
    ) {
        let unary_ops: [Unary; 6] =
            [Var::exp, Var::relu, Var::tanh, Var::square, Var::recip, Var::neg];
        for op in unary_ops {
            unary(&a, op)?;
        }
        let binary_ops: [Binary; 5] = [Var::add, Var::sub, Var::mul, Var::div, Var::maximum];
        for op in binary_ops {
            check_pair(&a, &b, Tracked::Both, op)?;
            check_pair(&b, &a, Tracked::Both, op)?;
        }
    }

    // Every operator overload once, on a broadcast pair; the divisors (y and s) stay at
    // least 0.1 away from 0.
    #[test]
    fn operator_overloads((a, b) in pair(smooth, nonzero), s in nonzero_scalar()) {
        check(
            |v| {
                let x = a.apply(&v[0])?;
                let y = b.apply(&v[1])?;
                let r = &(&(&x + &y) * &(&x - &y)) / &y;
                let r = &(&(&(&r + s) - s) * s) / s;
                let r = &(&(s + &r) + &(s - &r)) + &(s * &r);
                let r = -&r + -(x.clone());
                let r = (r.clone() + y.clone()) * (x.clone() - y.clone()) / y.clone();
                Ok(r)
            },
            &[a.tensor(), b.tensor()],
        )?;
    }
}
