//! The noise and the sampler, statistically, with fixed seeds (so the tolerances, a few
//! standard errors wide, cannot flake): the noise has the stated standard deviation and a
//! Gaussian shape and lies on its grid; Poisson batches have the stated rate.

use strata_privacy::{GaussianNoise, PoissonSampler};

fn moments(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let kurt = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / (var * var);
    (mean, var.sqrt(), kurt)
}

#[test]
fn the_noise_has_the_stated_standard_deviation_and_a_gaussian_shape() {
    let n = 400_000;
    let std = 2.5;
    let mut values = vec![0.0f64; n];
    GaussianNoise::seeded(42)
        .add_noise(&mut values, std)
        .unwrap();
    let (mean, s, kurt) = moments(&values);
    // Standard errors: mean std/√n = 0.004, std std/√(2n) = 0.0028, kurtosis √(24/n) = 0.008.
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((s - std).abs() < 0.015, "std {s}");
    assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    // P(|Z| < 1) = 0.682689, standard error 0.0007.
    let within = values.iter().filter(|v| v.abs() < std).count() as f64 / n as f64;
    assert!((within - 0.682_689).abs() < 0.004, "{within}");
    // The CDF at a few points (Φ from libm's erfc), each within 5 standard errors.
    for z in [-2.5, -1.5, -0.7, 0.0, 0.3, 1.2, 2.0] {
        let phi = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        let below = values.iter().filter(|v| **v < z * std).count() as f64 / n as f64;
        let se = (phi * (1.0 - phi) / n as f64).sqrt();
        assert!(
            (below - phi).abs() < 5.0 * se,
            "P(Z < {z}) = {below}, expected {phi}"
        );
    }
    // The tails are there too: P(|Z| > 3) = 0.0026998.
    let tails = values.iter().filter(|v| v.abs() > 3.0 * std).count() as f64 / n as f64;
    assert!((tails - 0.0027).abs() < 0.0005, "{tails}");
}

#[test]
fn the_noisy_values_lie_on_the_grid_of_the_noise() {
    let std = 0.75;
    let grid = GaussianNoise::grid(std);
    assert_eq!(grid, 2f64.powi(-31)); // ⌊log₂ 0.75⌋ = −1, minus 30
    let mut values: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
    let before = values.clone();
    GaussianNoise::seeded(1)
        .add_noise(&mut values, std)
        .unwrap();
    for (v, b) in values.iter().zip(&before) {
        let steps = v / grid;
        assert_eq!(steps, steps.round(), "{v} is not on the grid");
        assert!((v - b).abs() < 6.0 * std);
    }
    // Too large for exact arithmetic on the grid: an error, not a silent rounding.
    let mut huge = vec![1e300];
    assert!(GaussianNoise::seeded(1).add_noise(&mut huge, std).is_err());
    assert!(
        GaussianNoise::seeded(1)
            .add_noise(&mut [0.0], -1.0)
            .is_err()
    );
}

#[test]
fn seeded_noise_repeats_and_secure_noise_does_not() {
    let draw = |mut g: GaussianNoise| {
        let mut v = vec![0.0; 64];
        g.add_noise(&mut v, 1.0).unwrap();
        v
    };
    assert_eq!(
        draw(GaussianNoise::seeded(3)),
        draw(GaussianNoise::seeded(3))
    );
    assert_ne!(
        draw(GaussianNoise::seeded(3)),
        draw(GaussianNoise::seeded(4))
    );
    let (a, b) = (
        GaussianNoise::secure().unwrap(),
        GaussianNoise::secure().unwrap(),
    );
    assert!(a.is_secure() && b.is_secure());
    assert_ne!(draw(a), draw(b));
    assert_eq!(GaussianNoise::seeded(3).seed(), Some(3));
}

#[test]
fn poisson_batches_have_the_stated_rate() {
    let (len, q) = (10_000, 0.01);
    let mut sampler = PoissonSampler::seeded(len, q, 7).unwrap();
    assert_eq!(sampler.steps_per_epoch(), 100);
    assert_eq!(sampler.expected_batch_size(), 100.0);
    let mut sizes = Vec::new();
    let mut hits = vec![0u32; len];
    for _ in 0..300 {
        let batch = sampler.sample();
        assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|&i| i < len));
        for &i in &batch {
            hits[i] += 1;
        }
        sizes.push(batch.len() as f64);
    }
    let (mean, std, _) = moments(&sizes);
    // Binomial(10 000, 0.01): mean 100 (standard error 0.57 over 300 batches), std 9.95.
    assert!((mean - 100.0).abs() < 2.5, "{mean}");
    assert!((std - 9.95).abs() < 1.5, "{std}");
    // Every index is as likely: the first and second halves get the same share.
    let half: u32 = hits[..len / 2].iter().sum();
    let total: u32 = hits.iter().sum();
    assert!((half as f64 / total as f64 - 0.5).abs() < 0.01);
    // q = 1 keeps everything; an epoch has ⌊1/q⌋ steps; bad rates are errors.
    let mut all = PoissonSampler::seeded(5, 1.0, 0).unwrap();
    assert_eq!(all.sample(), vec![0, 1, 2, 3, 4]);
    assert_eq!(all.epoch().count(), 1);
    assert!(PoissonSampler::seeded(5, 0.0, 0).is_err());
    assert!(PoissonSampler::new(5, 0.5).unwrap().is_secure());
}
