//! Plots as PNG, drawn with `plotters`: a [`Figure`] is a row of [`Panel`]s (axes with round
//! tick values, axis labels, a title, an optional legend inside) and an optional shared legend
//! under them. A [`Series`] is a line, markers, or both, with optional vertical error bars.
//! A [`MatrixPlot`] is a confusion matrix.
//!
//! Text is drawn with Noto Sans (Apache-2.0), embedded through the `ttf-noto-sans` crate, so
//! plots render the same on any machine, including containers without system fonts.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

/// Where a panel's legend goes (plotters' own positions).
pub use plotters::chart::SeriesLabelPosition as LegendPos;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours used across plots (colour-blind friendly, Okabe-Ito).
pub mod colors {
    use super::Rgb;
    /// Black.
    pub const BLACK: Rgb = [0, 0, 0];
    /// Grey.
    pub const GREY: Rgb = [150, 150, 150];
    /// Light grey.
    pub const LIGHT_GREY: Rgb = [205, 205, 205];
    /// Orange.
    pub const ORANGE: Rgb = [230, 159, 0];
    /// Sky blue.
    pub const SKY: Rgb = [86, 180, 233];
    /// Bluish green.
    pub const GREEN: Rgb = [0, 158, 115];
    /// Blue.
    pub const BLUE: Rgb = [0, 114, 178];
    /// Vermillion.
    pub const RED: Rgb = [213, 94, 0];
    /// Reddish purple.
    pub const PURPLE: Rgb = [204, 121, 167];
    /// A palette for series.
    pub const SERIES: [Rgb; 6] = [BLUE, RED, GREEN, ORANGE, PURPLE, SKY];
}

mod axis;
mod draw;
mod grid;
mod matrix;
mod panel;
mod series;
#[cfg(test)]
mod tests;

pub use axis::*;
use draw::*;
pub use grid::write_grid;
pub use matrix::MatrixPlot;
pub use panel::*;
pub use series::*;

/// A legend entry of a [`Figure`]'s shared legend.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    /// Text.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// Line and/or marker sample.
    pub mark: Mark,
}

impl LegendEntry {
    /// An entry.
    pub fn new(label: impl Into<String>, color: Rgb, mark: Mark) -> Self {
        Self {
            label: label.into(),
            color,
            mark,
        }
    }
}

/// A PNG image: an optional title, panels side by side, an optional shared legend under them.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Title above everything.
    pub title: Option<String>,
    /// Panels, left to right, equally wide.
    pub panels: Vec<Panel>,
    /// Entries of a legend under the panels (wrapped into rows).
    pub legend: Vec<LegendEntry>,
}

const LEGEND_ROW: u32 = 24;
const LEGEND_GAP: u32 = 28;
const LEGEND_SAMPLE: u32 = 30;

impl Figure {
    /// An empty figure.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            title: None,
            panels: Vec::new(),
            legend: Vec::new(),
        }
    }

    /// With a title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Add a panel.
    pub fn panel(mut self, p: Panel) -> Self {
        self.panels.push(p);
        self
    }

    /// With a shared legend under the panels.
    pub fn legend(mut self, entries: Vec<LegendEntry>) -> Self {
        self.legend = entries;
        self
    }

    /// Draw into an 8-bit RGB buffer (`width * height * 3` bytes, row-major).
    pub fn render(&self) -> Result<Vec<u8>> {
        register_fonts();
        let mut buf = vec![255u8; self.width as usize * self.height as usize * 3];
        {
            let root = Backend(BitMapBackend::with_buffer(
                &mut buf,
                (self.width, self.height),
            ))
            .into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing a plot: {e}"))?;
            root.present().map_err(|e| anyhow!("drawing a plot: {e}"))?;
        }
        Ok(buf)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawErr<DB>> {
        root.fill(&WHITE)?;
        let area = match &self.title {
            Some(t) => root.titled(t, (FAMILY, 20).into_font().style(FontStyle::Bold))?,
            None => root.clone(),
        };
        let font = TextStyle::from((FAMILY, 14).into_font());
        let rows = self.legend_rows(&area, &font)?;
        let legend_h = if rows.is_empty() {
            0
        } else {
            rows.len() as u32 * LEGEND_ROW + 10
        };
        let (_, h) = area.dim_in_pixel();
        let (panels, legend) = area.split_vertically(h.saturating_sub(legend_h));
        if !self.panels.is_empty() {
            let cells = panels.split_evenly((1, self.panels.len()));
            for (p, a) in self.panels.iter().zip(&cells) {
                p.draw(a)?;
            }
        }
        let (w, _) = legend.dim_in_pixel();
        for (r, (entries, width)) in rows.iter().enumerate() {
            let mut x = (w.saturating_sub(*width) / 2) as i32;
            let y = (r as u32 * LEGEND_ROW + LEGEND_ROW / 2) as i32;
            for (e, tw) in entries {
                legend.draw(&Glyph::new(e.mark, rgb(e.color), (x, y)))?;
                legend.draw(&Text::new(
                    e.label.as_str(),
                    (x + LEGEND_SAMPLE as i32, y),
                    font.pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
                x += (LEGEND_SAMPLE + tw + LEGEND_GAP) as i32;
            }
        }
        Ok(())
    }

    /// The shared legend laid out in rows that fit the width: each row's entries with their
    /// text widths, and the row's total width.
    #[allow(clippy::type_complexity)]
    fn legend_rows<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        font: &TextStyle,
    ) -> Result<Vec<(Vec<(&LegendEntry, u32)>, u32)>, DrawErr<DB>> {
        let max_w = area.dim_in_pixel().0.saturating_sub(40);
        let mut rows: Vec<(Vec<(&LegendEntry, u32)>, u32)> = Vec::new();
        for e in &self.legend {
            let (tw, _) = area.estimate_text_size(&e.label, font)?;
            let need = LEGEND_SAMPLE + tw;
            match rows.last_mut() {
                Some((row, width)) if *width + LEGEND_GAP + need <= max_w => {
                    row.push((e, tw));
                    *width += LEGEND_GAP + need;
                }
                _ => rows.push((vec![(e, tw)], need)),
            }
        }
        Ok(rows)
    }

    /// Write as an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        write_png(path, self.width, self.height, &self.render()?)
    }
}

/// Write `pixels` (8-bit RGB, row-major) as a PNG, atomically: a crash never leaves a
/// half-written PNG under the final name.
fn write_png(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    coeff_tuning::io::write_atomic_with(path, |file| {
        let mut enc = png::Encoder::new(file, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(pixels).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)
    })
    .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// Data range with a margin (a fraction of the span on each side), never empty.
pub fn padded_range(values: impl IntoIterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * margin;
    (lo - pad, hi + pad)
}

/// One point series per method over numbered metrics: method `k`'s value of `keys[i]` at
/// `x = i + 1` (offset by `dx` per method so the methods stand side by side), with its
/// standard deviation as the spread when `spread` is set. `table`: method -> metric ->
/// (mean, sd). Methods missing from the table are skipped.
pub fn method_points(
    mut panel: Panel,
    methods: &[&str],
    table: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, (f64, f64)>>,
    keys: &[&str],
    dx: f64,
    spread: bool,
) -> (Panel, Vec<LegendEntry>) {
    let mark = Mark::points(Marker::Disc(5));
    let n = methods.len() as f64;
    let mut legend = Vec::new();
    for (k, method) in methods.iter().enumerate() {
        let Some(row) = table.get(*method) else {
            continue;
        };
        let color = colors::SERIES[k % colors::SERIES.len()];
        let off = dx * (k as f64 - (n - 1.0) / 2.0);
        let pts = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (i as f64 + 1.0 + off, row[*key].0))
            .collect();
        let sd = keys
            .iter()
            .map(|key| if spread { row[*key].1 } else { 0.0 })
            .collect();
        panel = panel.series(Series::new(color, mark, pts).spread(sd));
        legend.push(LegendEntry::new(*method, color, mark));
    }
    (panel, legend)
}
