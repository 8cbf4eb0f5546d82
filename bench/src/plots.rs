//! PNG plots of a run under `target/bench/`: throughput against packet size, round-trip
//! percentiles against load, and connect-storm rates, one line per server and setting.
//! Text uses the DejaVu Sans font Debian installs (`fonts-dejavu-core`, from setup).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::report::Report;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A plot: title, axis labels, and its series of (x, y) points.
pub struct Plot {
    pub file: &'static str,
    pub title: &'static str,
    pub x: &'static str,
    pub y: &'static str,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws every plot of `report` that has data into `dir`; returns the files written.
pub fn draw(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let font = std::fs::read(FONT).with_context(|| format!("reading the font {FONT}"))?;
    // plotters keeps the font for the process: leak one copy.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    let mut written = Vec::new();
    for plot in &report.plots {
        if plot.series.iter().all(|(_, points)| points.is_empty()) {
            continue;
        }
        let path = dir.join(plot.file);
        draw_one(plot, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw_one(plot: &Plot, path: &Path) -> Result<()> {
    let points = plot.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max * 1.08 + 1e-9, 0.0..y_max * 1.15 + 1e-9)?;
    chart
        .configure_mesh()
        .x_desc(plot.x)
        .y_desc(plot.y)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (name, points)) in plot.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let clean: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(clean.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(clean.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
