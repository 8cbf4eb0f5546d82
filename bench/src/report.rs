//! The figures of a run: printed as a table of ours, stock OpenVPN's and the ratio, and
//! written as JSON (`target/bench/latest.json`: one object per figure with scenario,
//! name, unit, ours, stock, ratio, and the machine and its load).

use std::path::Path;

use anyhow::Result;
use serde_json::json;

pub struct Row {
    pub scenario: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub ours: f64,
    /// `None` for figures with no stock counterpart (calibration, the AEAD floor).
    pub stock: Option<f64>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// What `plots::draw` draws.
    pub plots: Vec<crate::plots::Plot>,
}

impl Report {
    pub fn row(
        &mut self,
        scenario: &'static str,
        name: String,
        unit: &'static str,
        ours: f64,
        stock: Option<f64>,
    ) {
        self.rows.push(Row {
            scenario,
            name,
            unit,
            ours,
            stock,
        });
    }

    /// Adds `point` to series `series` of plot `file` (created with the titles given the
    /// first time).
    #[allow(clippy::too_many_arguments)]
    pub fn point(
        &mut self,
        file: &'static str,
        title: &'static str,
        x: &'static str,
        y: &'static str,
        series: String,
        point: (f64, f64),
    ) {
        let index = match self.plots.iter().position(|p| p.file == file) {
            Some(i) => i,
            None => {
                self.plots.push(crate::plots::Plot {
                    file,
                    title,
                    x,
                    y,
                    series: Vec::new(),
                });
                self.plots.len() - 1
            }
        };
        let plot = &mut self.plots[index];
        match plot.series.iter_mut().find(|(name, _)| *name == series) {
            Some((_, points)) => points.push(point),
            None => plot.series.push((series, vec![point])),
        }
    }

    /// The table, grouped by scenario in the order rows came.
    pub fn print(&self) {
        let mut scenario = "";
        for row in &self.rows {
            if row.scenario != scenario {
                scenario = row.scenario;
                println!("\n{scenario}");
                println!("{:<58}{:>12}{:>12}{:>8}", "", "ours", "stock", "ratio");
            }
            match row.stock {
                Some(stock) => {
                    let r = ratio(row.ours, stock);
                    let r = if r.is_finite() {
                        format!("{r:.2}")
                    } else {
                        "-".into()
                    };
                    println!("{:<58}{:>12.3}{:>12.3}{:>8}", row.name, row.ours, stock, r);
                }
                None => println!("{:<58}{:>12.3}{:>12}{:>8}", row.name, row.ours, "-", "-"),
            }
        }
    }

    /// Writes the JSON file, with the machine's cores and load average before the run.
    pub fn write_json(&self, path: &Path, load_before: &str) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let figures: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "name": r.name,
                    "unit": r.unit,
                    "ours": finite(r.ours),
                    "stock": r.stock.and_then(finite),
                    "ratio": r.stock.and_then(|s| finite(ratio(r.ours, s))),
                    "machine": { "cores": cores, "load_before": load_before },
                })
            })
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")?;
        Ok(())
    }
}

fn ratio(ours: f64, stock: f64) -> f64 {
    if stock > 0.0 { ours / stock } else { f64::NAN }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_one_object_per_figure_and_no_nan() {
        let mut r = Report::default();
        r.row("throughput", "x".into(), "kpps", 2.0, Some(1.0));
        r.row("calibration", "y".into(), "kpps", 5.0, None);
        r.row("throughput", "z".into(), "kpps", 1.0, Some(0.0));
        let path = std::env::temp_dir().join(format!("bench-report-{}.json", std::process::id()));
        r.write_json(&path, "0.5").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[0]["ratio"], 2.0);
        assert!(v[1]["stock"].is_null() && v[1]["ratio"].is_null());
        assert!(v[2]["ratio"].is_null(), "a zero stock figure has no ratio");
        assert_eq!(v[0]["machine"]["load_before"], "0.5");
    }
}
