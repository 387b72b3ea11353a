//! Training curves as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::train::EpochRecord;
use crate::{ModelsError, Result};

/// Draws what a training did into an SVG file: on the left the training loss of every
/// step (faint) and its smoothed trend, with the test loss of each evaluation as marked
/// points; on the right the test accuracy or R² of each evaluation, as marked points.
/// Both share the x axis of optimizer steps, so that a run of one epoch draws a real
/// curve. The drawing is made in memory and written atomically (a new file renamed over
/// `path`: a symbolic link planted there is replaced, not written through).
///
/// # Errors
/// [`ModelsError::Config`] when the file cannot be drawn or written.
pub fn training_curves(history: &[EpochRecord], title: &str, path: &Path) -> Result<()> {
    let err = |e: String| ModelsError::Config(format!("plot {}: {e}", path.display()));
    let mut svg = String::new();
    draw(history, title, &mut svg).map_err(err)?;
    strata_tensor::io::fs::write_atomic(path, svg.as_bytes()).map_err(|e| err(e.to_string()))
}

/// The training loss per step: the epochs' curves, or, for records without one (written
/// before curves were kept), each epoch's mean at its last step.
fn train_points(history: &[EpochRecord]) -> Vec<(f64, f64)> {
    history
        .iter()
        .flat_map(|r| {
            if r.curve.is_empty() {
                vec![(r.step as f64, r.train_loss)]
            } else {
                r.curve.iter().map(|&[s, l]| (s, l)).collect()
            }
        })
        .filter(|(s, l)| s.is_finite() && l.is_finite())
        .collect()
}

/// The trend of `points`: an exponential moving average, debiased at the start as
/// TensorBoard's smoothing is, stronger for longer curves (none for a handful of points).
pub fn smoothed(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let weight = match points.len() {
        0..20 => 0.0,
        20..200 => 0.6,
        _ => 0.9,
    };
    let (mut avg, mut norm) = (0.0, 0.0);
    points
        .iter()
        .map(|&(s, l)| {
            avg = weight * avg + (1.0 - weight) * l;
            norm = weight * norm + (1.0 - weight);
            (s, avg / norm)
        })
        .collect()
}

fn draw(history: &[EpochRecord], title: &str, svg: &mut String) -> std::result::Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, (960, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| s(&e))?;
    let (left, right) = root.split_horizontally(480);
    let train = train_points(history);
    let trend = smoothed(&train);
    let tests: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.step as f64, r.test.loss))
        .filter(|(_, l)| l.is_finite())
        .collect();
    let last_step = train
        .iter()
        .chain(&tests)
        .map(|&(x, _)| x)
        .fold(1.0f64, f64::max);
    let x_range = 0.0..last_step * 1.02;
    let max_loss = train
        .iter()
        .chain(&tests)
        .map(|&(_, l)| l)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title}: loss"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range.clone(), 0.0..max_loss)
        .map_err(|e| s(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .draw()
        .map_err(|e| s(&e))?;
    let faint = BLUE.mix(0.25);
    chart
        .draw_series(LineSeries::new(train.iter().copied(), faint))
        .map_err(|e| s(&e))?;
    chart
        .draw_series(LineSeries::new(trend, &BLUE))
        .map_err(|e| s(&e))?
        .label("train (per step, smoothed)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(tests.iter().copied(), RED.mix(0.5)))
        .map_err(|e| s(&e))?;
    chart
        .draw_series(tests.iter().map(|&p| Circle::new(p, 4, RED.filled())))
        .map_err(|e| s(&e))?
        .label("test")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| s(&e))?;

    let metric = |r: &EpochRecord| r.test.accuracy.or(r.test.r2).unwrap_or(0.0);
    let label = if history.first().is_some_and(|r| r.test.accuracy.is_some()) {
        "test accuracy"
    } else {
        "test R²"
    };
    let points: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.step as f64, metric(r)))
        .filter(|(_, m)| m.is_finite())
        .collect();
    let lo = points
        .iter()
        .map(|&(_, m)| m)
        .fold(1.0f64, f64::min)
        .min(0.0);
    let mut chart = ChartBuilder::on(&right)
        .caption(format!("{title}: {label}"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range, lo..1.0)
        .map_err(|e| s(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .draw()
        .map_err(|e| s(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), GREEN.mix(0.5)))
        .map_err(|e| s(&e))?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, GREEN.filled())))
        .map_err(|e| s(&e))?;
    root.present().map_err(|e| s(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Evaluation;

    fn record(epoch: usize, step: usize, curve: Vec<[f64; 2]>) -> EpochRecord {
        EpochRecord {
            epoch,
            step,
            train_loss: 1.0,
            test: Evaluation {
                loss: 0.5,
                accuracy: Some(0.9),
                r2: None,
            },
            seconds: 1.0,
            samples_per_s: 1.0,
            epsilon: None,
            curve,
        }
    }

    #[test]
    fn one_epoch_draws_its_steps_and_its_test_point() {
        let curve: Vec<[f64; 2]> = (1..=300).map(|s| [s as f64, 2.0 / s as f64]).collect();
        let mut svg = String::new();
        draw(&[record(1, 300, curve)], "cnn", &mut svg).unwrap();
        // The faint raw curve and its trend are polylines of hundreds of points; the test
        // evaluation and the accuracy are marked circles.
        let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        assert!(
            polylines.iter().any(|p| p.matches(',').count() >= 300),
            "no per-step curve"
        );
        assert!(svg.matches("<circle").count() >= 2, "no marked test points");
    }

    #[test]
    fn the_trend_follows_the_points_and_starts_at_the_first() {
        let pts: Vec<(f64, f64)> = (0..400)
            .map(|i| (i as f64, if i < 200 { 2.0 } else { 1.0 }))
            .collect();
        let t = smoothed(&pts);
        assert_eq!(t[0], (0.0, 2.0));
        assert!((t[199].1 - 2.0).abs() < 1e-12);
        assert!((t[399].1 - 1.0).abs() < 1e-6);
        // Records without a curve fall back to the epoch means.
        assert_eq!(train_points(&[record(1, 10, vec![])]), vec![(10.0, 1.0)]);
    }
}
