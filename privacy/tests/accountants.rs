//! The accountants against values computed by Opacus 1.6 (`fixtures/generate.py` writes
//! `fixtures/accountants.json`): RDP to 1e-6 relative, PRV within its stated error bounds,
//! and the noise multipliers Opacus's bisection finds.

use serde_json::Value;
use strata_privacy::{
    Accountant, AccountantKind, PrvAccountant, RdpAccountant, accountant::rdp, noise_multiplier,
};

fn fixtures() -> Value {
    let text = include_str!("fixtures/accountants.json");
    serde_json::from_str(text).expect("the fixture file is JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn history(v: &Value) -> Vec<(f64, f64, u64)> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|h| (f(&h[0]), f(&h[1]), h[2].as_u64().expect("steps")))
        .collect()
}

/// A history, a δ, and Opacus's (lower, estimate, upper) ε.
type PrvCase = (Vec<(f64, f64, u64)>, f64, Vec<f64>);

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn rdp_orders_are_opacus_s() {
    let want: Vec<f64> = fixtures()["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    assert_eq!(rdp::default_orders(), want);
}

#[test]
fn rdp_matches_opacus_to_1e_6_relative() {
    let fx = fixtures();
    let mut worst = 0.0f64;
    for case in fx["single"].as_array().unwrap() {
        let (sigma, q, steps, delta) = (
            f(&case["sigma"]),
            f(&case["q"]),
            case["steps"].as_u64().unwrap(),
            f(&case["delta"]),
        );
        let mut acc = RdpAccountant::new();
        acc.step_many(sigma, q, steps).unwrap();
        let rdp = acc.rdp().unwrap();
        for (k, (got, want)) in rdp.iter().zip(case["rdp"].as_array().unwrap()).enumerate() {
            let r = rel(*got, f(want));
            assert!(
                r < 1e-6,
                "σ {sigma} q {q}: order #{k}: {got} vs {}",
                f(want)
            );
            worst = worst.max(r);
        }
        let (eps, order) = acc.epsilon_and_order(delta).unwrap();
        assert!(
            rel(eps, f(&case["rdp_epsilon"])) < 1e-6,
            "σ {sigma} q {q}: ε {eps}"
        );
        assert_eq!(order, f(&case["rdp_order"]));
    }
    for case in fx["heterogeneous"].as_array().unwrap() {
        let mut acc = RdpAccountant::new();
        for (s, q, n) in history(&case["history"]) {
            acc.step_many(s, q, n).unwrap();
        }
        let eps = acc.epsilon(f(&case["delta"])).unwrap();
        assert!(rel(eps, f(&case["rdp_epsilon"])) < 1e-6, "{eps}");
    }
    assert!(worst < 1e-6);
}

#[test]
fn prv_matches_opacus_within_its_error_bounds() {
    let fx = fixtures();
    let mut cases: Vec<PrvCase> = Vec::new();
    for case in fx["single"].as_array().unwrap() {
        let h = vec![(
            f(&case["sigma"]),
            f(&case["q"]),
            case["steps"].as_u64().unwrap(),
        )];
        let want = case["prv_epsilon"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        cases.push((h, f(&case["delta"]), want));
    }
    for case in fx["heterogeneous"].as_array().unwrap() {
        let want = case["prv_epsilon"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        cases.push((history(&case["history"]), f(&case["delta"]), want));
    }
    for (h, delta, want) in cases {
        let mut acc = PrvAccountant::new();
        for &(s, q, n) in &h {
            acc.step_many(s, q, n).unwrap();
        }
        let got = acc.epsilon_bounds(delta).unwrap();
        // The bounds are ±eps_error (0.01) around the estimate; both implementations
        // compute the same discretisation, so they agree far more closely than that.
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{h:?}: {got:?} vs Opacus {want:?}");
        }
        assert!(got[0] <= want[1] && want[1] <= got[2]);
        assert_eq!(acc.epsilon(delta).unwrap(), got[2]);
    }
}

#[test]
fn noise_multipliers_match_opacus_s_bisection() {
    for case in fixtures()["noise_multiplier"].as_array().unwrap() {
        let (eps, delta, q, steps) = (
            f(&case["target_epsilon"]),
            f(&case["delta"]),
            f(&case["q"]),
            case["steps"].as_u64().unwrap(),
        );
        for kind in [AccountantKind::Rdp, AccountantKind::Prv] {
            let sigma = noise_multiplier(kind, eps, delta, q, steps).unwrap();
            let want = f(&case[kind.name()]);
            assert!(
                (sigma - want).abs() < 1e-12,
                "{kind:?} ε {eps}: σ {sigma} vs {want}"
            );
            // And it does reach the target.
            let mut acc = kind.make();
            acc.step_many(sigma, q, steps).unwrap();
            assert!(acc.epsilon(delta).unwrap() <= eps);
        }
    }
}

#[test]
fn bad_settings_are_errors() {
    let mut acc = RdpAccountant::new();
    assert!(acc.step(f64::NAN, 0.1).is_err());
    assert!(acc.step(1.0, 1.5).is_err());
    assert!(acc.epsilon(0.0).is_err());
    assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
    assert!(noise_multiplier(AccountantKind::Rdp, -1.0, 1e-5, 0.01, 10).is_err());
    assert!(noise_multiplier(AccountantKind::Rdp, 1.0, 1e-5, 0.0, 10).is_err());
    // No noise, no privacy.
    acc.step(0.0, 0.1).unwrap();
    assert_eq!(acc.epsilon(1e-5).unwrap(), f64::INFINITY);
}
