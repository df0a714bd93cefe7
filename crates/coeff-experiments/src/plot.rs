//! A small raster plotter: scatter and line panels with titles and tick labels, written as PNG.
//!
//! Self-contained (a 5x7 bitmap font, no system fonts), so plots render identically on any
//! machine, including CI containers without fontconfig.

use std::path::Path;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours used across plots (colour-blind friendly, Okabe-Ito).
pub mod colors {
    use super::Rgb;
    /// Black.
    pub const BLACK: Rgb = [0, 0, 0];
    /// Light grey.
    pub const GREY: Rgb = [150, 150, 150];
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

/// An RGB image.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line of the given thickness.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), c: Rgb, thickness: f64) {
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) * 2.0)
            .ceil()
            .max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            self.disc((x, y), thickness / 2.0, c);
        }
    }

    /// A dashed line.
    pub fn dashed(&mut self, a: (f64, f64), b: (f64, f64), c: Rgb, thickness: f64) {
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let n = (len / 6.0).ceil().max(1.0) as usize;
        for k in (0..n).step_by(2) {
            let t0 = k as f64 / n as f64;
            let t1 = ((k + 1) as f64 / n as f64).min(1.0);
            let p = |t: f64| (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            self.line(p(t0), p(t1), c, thickness);
        }
    }

    /// A filled disc.
    pub fn disc(&mut self, center: (f64, f64), r: f64, c: Rgb) {
        let r = r.max(0.5);
        for y in (center.1 - r).floor() as i64..=(center.1 + r).ceil() as i64 {
            for x in (center.0 - r).floor() as i64..=(center.0 + r).ceil() as i64 {
                if (x as f64 - center.0).powi(2) + (y as f64 - center.1).powi(2) <= r * r {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// A ring (hollow circle).
    pub fn ring(&mut self, center: (f64, f64), r: f64, c: Rgb, thickness: f64) {
        for y in
            (center.1 - r - thickness).floor() as i64..=(center.1 + r + thickness).ceil() as i64
        {
            for x in
                (center.0 - r - thickness).floor() as i64..=(center.0 + r + thickness).ceil() as i64
            {
                let d = ((x as f64 - center.0).powi(2) + (y as f64 - center.1).powi(2)).sqrt();
                if (d - r).abs() <= thickness / 2.0 {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// A filled square marker of half-size `r`.
    pub fn square(&mut self, center: (f64, f64), r: f64, c: Rgb) {
        for y in (center.1 - r).round() as i64..=(center.1 + r).round() as i64 {
            for x in (center.0 - r).round() as i64..=(center.0 + r).round() as i64 {
                self.set(x, y, c);
            }
        }
    }

    /// Text in the built-in 5x7 font, `scale` pixels per font pixel, top-left at `(x, y)`.
    /// Lower-case letters are drawn as capitals.
    pub fn text(&mut self, x: f64, y: f64, s: &str, c: Rgb, scale: usize) {
        let mut cx = x.round() as i64;
        for ch in s.chars() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(
                                    cx + (col * scale + dx) as i64,
                                    y.round() as i64 + (r * scale + dy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
            cx += (6 * scale) as i64;
        }
    }

    /// Width in pixels of `s` drawn at `scale`.
    pub fn text_width(s: &str, scale: usize) -> f64 {
        (s.chars().count() * 6 * scale) as f64
    }

    /// Write the image as an 8-bit RGB PNG (atomically, with
    /// [`coeff_tuning::io::write_atomic_with`]).
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        coeff_tuning::io::write_atomic_with(path, |file| {
            let mut enc = png::Encoder::new(file, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(std::io::Error::other)?;
            w.write_image_data(&self.pixels)
                .map_err(std::io::Error::other)?;
            w.finish().map_err(std::io::Error::other)
        })
    }
}

/// A rectangle of the canvas mapped to a data range, with a box, ticks and a title.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Left pixel.
    pub left: f64,
    /// Top pixel.
    pub top: f64,
    /// Width in pixels.
    pub width: f64,
    /// Height in pixels.
    pub height: f64,
    /// Data range on x.
    pub x: (f64, f64),
    /// Data range on y.
    pub y: (f64, f64),
    /// Log-scale y axis.
    pub log_y: bool,
}

impl Frame {
    /// Data -> pixel.
    pub fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = if self.log_y {
            (y.max(1e-300).log10() - self.y.0.log10()) / (self.y.1.log10() - self.y.0.log10())
        } else {
            (y - self.y.0) / (self.y.1 - self.y.0)
        };
        (
            self.left + fx * self.width,
            self.top + (1.0 - fy) * self.height,
        )
    }

    /// Box, four ticks per axis with labels, title above, axis labels.
    pub fn draw_axes(&self, c: &mut Canvas, title: &str, x_label: &str, y_label: &str) {
        self.draw_axes_with_x_ticks(c, title, x_label, y_label, None)
    }

    /// [`Frame::draw_axes`] with the x ticks given as `(data x, label)` (e.g. a log axis
    /// drawn in transformed coordinates, labelled with the original values).
    pub fn draw_axes_with_x_ticks(
        &self,
        c: &mut Canvas,
        title: &str,
        x_label: &str,
        y_label: &str,
        x_ticks: Option<&[(f64, String)]>,
    ) {
        let (l, t, r, b) = (
            self.left,
            self.top,
            self.left + self.width,
            self.top + self.height,
        );
        for (p, q) in [
            ((l, t), (r, t)),
            ((r, t), (r, b)),
            ((r, b), (l, b)),
            ((l, b), (l, t)),
        ] {
            c.line(p, q, colors::BLACK, 1.0);
        }
        let default_x: Vec<(f64, String)> = (0..=4)
            .map(|k| {
                let xv = self.x.0 + k as f64 / 4.0 * (self.x.1 - self.x.0);
                (xv, fmt_tick(xv))
            })
            .collect();
        for (xv, label) in x_ticks.unwrap_or(&default_x) {
            let (px, _) = self.px(*xv, self.y.0.max(1e-300));
            c.line((px, b), (px, b + 4.0), colors::BLACK, 1.0);
            c.text(
                px - Canvas::text_width(label, 1) / 2.0,
                b + 7.0,
                label,
                colors::BLACK,
                1,
            );
        }
        for k in 0..=4 {
            let f = k as f64 / 4.0;
            let yv = if self.log_y {
                10f64.powf(self.y.0.log10() + f * (self.y.1.log10() - self.y.0.log10()))
            } else {
                self.y.0 + f * (self.y.1 - self.y.0)
            };
            let (_, py) = self.px(self.x.0, yv);
            c.line((l - 4.0, py), (l, py), colors::BLACK, 1.0);
            let label = fmt_tick(yv);
            c.text(
                l - 7.0 - Canvas::text_width(&label, 1),
                py - 3.0,
                &label,
                colors::BLACK,
                1,
            );
        }
        c.text(
            l + (self.width - Canvas::text_width(title, 2)) / 2.0,
            t - 22.0,
            title,
            colors::BLACK,
            2,
        );
        c.text(
            l + (self.width - Canvas::text_width(x_label, 1)) / 2.0,
            b + 20.0,
            x_label,
            colors::BLACK,
            1,
        );
        if !y_label.is_empty() {
            c.text(l + 4.0, t + 4.0, y_label, colors::GREY, 1);
        }
    }

    /// A polyline through data points.
    pub fn polyline(&self, c: &mut Canvas, pts: &[(f64, f64)], col: Rgb, thickness: f64) {
        for w in pts.windows(2) {
            c.line(
                self.px(w[0].0, w[0].1),
                self.px(w[1].0, w[1].1),
                col,
                thickness,
            );
        }
    }

    /// A closed dashed polygon through data points.
    pub fn dashed_polygon(&self, c: &mut Canvas, pts: &[(f64, f64)], col: Rgb) {
        for i in 0..pts.len() {
            let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
            c.dashed(self.px(a.0, a.1), self.px(b.0, b.1), col, 1.5);
        }
    }
}

/// A legend: coloured marker + label per entry, stacked from `(x, y)`.
pub fn legend(c: &mut Canvas, x: f64, y: f64, entries: &[(&str, Rgb)]) {
    for (k, (label, col)) in entries.iter().enumerate() {
        let yy = y + k as f64 * 14.0;
        c.square((x + 4.0, yy + 3.0), 4.0, *col);
        c.text(x + 14.0, yy, label, colors::BLACK, 1);
    }
}

/// Data range with a margin, never empty.
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

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '*' => [0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        ' ' => [0; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}
