//! Training curves as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::train::EpochRecord;
use crate::{ModelsError, Result};

/// Draws the train and test loss per epoch (left) and the test accuracy or R² (right)
/// into an SVG file. The drawing is made in memory and written atomically (a new file
/// renamed over `path`: a symbolic link planted there is replaced, not written through).
///
/// # Errors
/// [`ModelsError::Config`] when the file cannot be drawn or written.
pub fn training_curves(history: &[EpochRecord], title: &str, path: &Path) -> Result<()> {
    let err = |e: String| ModelsError::Config(format!("plot {}: {e}", path.display()));
    let mut svg = String::new();
    draw(history, title, &mut svg).map_err(err)?;
    strata_tensor::io::fs::write_atomic(path, svg.as_bytes()).map_err(|e| err(e.to_string()))
}

fn draw(history: &[EpochRecord], title: &str, svg: &mut String) -> std::result::Result<(), String> {
    let err = |e: String| e;
    let root = SVGBackend::with_string(svg, (960, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(480);
    let epochs = history.len().max(1) as f64;
    let x_range = 1.0..epochs.max(2.0);

    let losses: Vec<f64> = history
        .iter()
        .flat_map(|r| [r.train_loss, r.test.loss])
        .filter(|v| v.is_finite())
        .collect();
    let max_loss = losses.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title}: loss"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range.clone(), 0.0..max_loss)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let series = |f: fn(&EpochRecord) -> f64| history.iter().map(move |r| (r.epoch as f64, f(r)));
    chart
        .draw_series(LineSeries::new(series(|r| r.train_loss), &BLUE))
        .map_err(|e| err(e.to_string()))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(series(|r| r.test.loss), &RED))
        .map_err(|e| err(e.to_string()))?
        .label("test")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;

    let metric = |r: &EpochRecord| r.test.accuracy.or(r.test.r2).unwrap_or(0.0);
    let label = if history.first().is_some_and(|r| r.test.accuracy.is_some()) {
        "test accuracy"
    } else {
        "test R²"
    };
    let lo = history.iter().map(metric).fold(1.0f64, f64::min).min(0.0);
    let mut chart = ChartBuilder::on(&right)
        .caption(format!("{title}: {label}"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range, lo..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            history.iter().map(|r| (r.epoch as f64, metric(r))),
            &GREEN,
        ))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
