//! Plots as PNG, drawn with `plotters`: a [`Figure`] is a row of [`Panel`]s (axes with round
//! tick values, axis labels, a title, an optional legend inside) and an optional shared legend
//! under them. A [`Series`] is a line, markers, or both, with optional vertical error bars.
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

/// The font family every text of a plot uses (plotters' default family name).
const FAMILY: &str = "sans-serif";

/// Register the embedded font under [`FAMILY`] (once per process): plotters measures text
/// with it (legend boxes); [`Backend`] draws it.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, ttf_noto_sans::REGULAR),
            (FontStyle::Bold, ttf_noto_sans::BOLD),
        ] {
            assert!(
                register_font(FAMILY, style, bytes).is_ok(),
                "the embedded Noto Sans font does not parse"
            );
        }
    });
}

/// The embedded font of a style: bold, or regular for anything else.
fn font_of(style: FontStyle) -> ab_glyph::FontRef<'static> {
    let bytes = match style {
        FontStyle::Bold => ttf_noto_sans::BOLD,
        _ => ttf_noto_sans::REGULAR,
    };
    ab_glyph::FontRef::try_from_slice(bytes).expect("the embedded Noto Sans font parses")
}

/// Text laid out on a baseline at y = 0 from x = 0: the positioned glyphs and the advance width.
/// The font has no superscript minus (U+207B): it is drawn as a smaller hyphen, centred on the
/// superscript digits.
fn layout_text(
    font: &ab_glyph::FontRef<'static>,
    size: f64,
    text: &str,
) -> (Vec<ab_glyph::Glyph>, f32) {
    use ab_glyph::{Font, ScaleFont};
    let f = font.as_scaled(size as f32);
    let centre = |c: char, scale: f32| {
        font.outline_glyph(font.glyph_id(c).with_scale(scale))
            .map_or(0.0, |g| (g.px_bounds().min.y + g.px_bounds().max.y) / 2.0)
    };
    let (mut x, mut prev, mut glyphs) = (0f32, None, Vec::new());
    for c in text.chars() {
        if c == '⁻' && f.glyph_id(c).0 == 0 {
            let small = 0.75 * size as f32;
            let id = font.glyph_id('-');
            let dy = centre('¹', size as f32) - centre('-', small);
            glyphs.push(id.with_scale_and_position(small, ab_glyph::point(x, dy)));
            x += font.as_scaled(small).h_advance(id);
            prev = None;
            continue;
        }
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            x += f.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(f.scale(), ab_glyph::point(x, 0.0)));
        x += f.h_advance(id);
        prev = Some(id);
    }
    (glyphs, x)
}

/// Height of a text box: what plotters' own font code assumes (`size / 1.24`), so the layout
/// of labels and legends computed from either agrees.
fn text_box_height(size: f64) -> i32 {
    (size / 1.24) as i32
}

/// The bitmap backend, with text drawn straight with `ab_glyph`: plotters 0.3.7's own
/// `ab_glyph` text drawing drops each glyph's side bearing, which spaces letters unevenly.
struct Backend<'a>(BitMapBackend<'a>);

type BackendResult<T = ()> =
    Result<T, DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl DrawingBackend for Backend<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> BackendResult {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> BackendResult {
        self.0.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, dim: (u32, u32), src: &[u8]) -> BackendResult {
        self.0.blit_bitmap(pos, dim, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> BackendResult<(u32, u32)> {
        let (_, w) = layout_text(&font_of(style.style()), style.size(), text);
        Ok((w.ceil() as u32, text_box_height(style.size()) as u32))
    }

    /// The text box is `estimate_text_size` big, placed by the style's anchor and rotated by its
    /// transform like plotters' default; the cap height is centred in it.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> BackendResult {
        use ab_glyph::Font;
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = font_of(style.style());
        let size = style.size();
        let (glyphs, width) = layout_text(&font, size, text);
        let (width, height) = (width.ceil() as i32, text_box_height(size));
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let cap = font
            .outline_glyph(font.glyph_id('H').with_scale(size as f32))
            .map_or(0.7 * size as f32, |g| -g.px_bounds().min.y);
        let baseline = ((height as f32 + cap) / 2.0).round() as i32;
        let trans = style.transform();
        let (w, h) = self.get_size();
        let mut result = Ok(());
        for g in glyphs {
            let Some(outline) = font.outline_glyph(g) else {
                continue;
            };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (x, y) = trans.transform(
                    b.min.x as i32 + gx as i32 + dx,
                    baseline + b.min.y as i32 + gy as i32 + dy,
                );
                let (x, y) = (pos.0 + x, pos.1 + y);
                if coverage > 0.0
                    && result.is_ok()
                    && x >= 0
                    && y >= 0
                    && x < w as i32
                    && y < h as i32
                {
                    let c = BackendColor {
                        alpha: color.alpha * coverage.min(1.0) as f64,
                        rgb: color.rgb,
                    };
                    result = self.0.draw_pixel((x, y), c);
                }
            });
        }
        result
    }
}

/// A point marker; the number is its radius (half-side for squares) in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    /// A filled disc.
    Disc(u32),
    /// A hollow circle.
    Ring(u32),
    /// A filled square.
    Square(u32),
}

/// A line's look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineStyle {
    /// Width in pixels.
    pub width: u32,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// How a series (or a legend entry) is drawn: a line through its points, a marker at each
/// point, or both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    /// The line, if any.
    pub line: Option<LineStyle>,
    /// The marker, if any.
    pub marker: Option<Marker>,
}

impl Mark {
    /// A solid line.
    pub fn line(width: u32) -> Self {
        Self {
            line: Some(LineStyle {
                width,
                dashed: false,
            }),
            marker: None,
        }
    }

    /// A dashed line.
    pub fn dashed(width: u32) -> Self {
        Self {
            line: Some(LineStyle {
                width,
                dashed: true,
            }),
            marker: None,
        }
    }

    /// Markers only.
    pub fn points(marker: Marker) -> Self {
        Self {
            line: None,
            marker: Some(marker),
        }
    }

    /// A solid line with a marker at each point.
    pub fn line_points(width: u32, marker: Marker) -> Self {
        Self {
            marker: Some(marker),
            ..Self::line(width)
        }
    }
}

/// Data drawn in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label (shown when the panel has a legend).
    pub label: Option<String>,
    /// Colour.
    pub color: Rgb,
    /// Line and/or markers.
    pub mark: Mark,
    /// `(x, y)` in data units.
    pub points: Vec<(f64, f64)>,
    /// Half-length of a vertical error bar at each point (e.g. the standard deviation over
    /// seeds). `None`, or a zero / non-finite entry, draws no bar.
    pub spread: Option<Vec<f64>>,
}

impl Series {
    /// A series without label or error bars.
    pub fn new(color: Rgb, mark: Mark, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: None,
            color,
            mark,
            points,
            spread: None,
        }
    }

    /// With a legend label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// With vertical error bars of half-length `spread[i]` at point `i`.
    pub fn spread(mut self, spread: Vec<f64>) -> Self {
        self.spread = Some(spread);
        self
    }

    fn spread_at(&self, i: usize) -> f64 {
        self.spread
            .as_ref()
            .and_then(|s| s.get(i).copied())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(0.0)
    }
}

/// One axis of a panel.
#[derive(Debug, Clone)]
pub struct Axis {
    /// Label under (x) or beside (y) the axis; empty for none.
    pub label: String,
    /// Data range; `None`: the data's range with a margin.
    pub range: Option<(f64, f64)>,
    /// Logarithmic (base 10) scale.
    pub log: bool,
    /// Tick positions; `None`: plotters picks round values.
    pub ticks: Option<Vec<f64>>,
    /// Tick label format; `None`: decimals to suit the tick step (powers of ten as `10⁴` on a
    /// log axis spanning two decades or more).
    pub format: Option<fn(f64) -> String>,
}

impl Axis {
    /// A linear axis with an automatic range and ticks.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            range: None,
            log: false,
            ticks: None,
            format: None,
        }
    }

    /// Logarithmic scale.
    pub fn log(mut self) -> Self {
        self.log = true;
        self
    }

    /// A fixed data range.
    pub fn range(mut self, (lo, hi): (f64, f64)) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// Ticks at these values only.
    pub fn ticks(mut self, ticks: Vec<f64>) -> Self {
        self.ticks = Some(ticks);
        self
    }

    /// A tick label format.
    pub fn format(mut self, f: fn(f64) -> String) -> Self {
        self.format = Some(f);
        self
    }

    /// The range to draw: the given one, or the data's (`values`, plus margin).
    fn resolve(&self, values: impl Iterator<Item = f64>) -> (f64, f64) {
        if let Some(r) = self.range {
            return r;
        }
        if self.log {
            let (lo, hi) = padded_range(values.filter(|v| *v > 0.0).map(f64::log10), 0.05);
            (10f64.powf(lo), 10f64.powf(hi))
        } else {
            padded_range(values, 0.06)
        }
    }
}

/// The coordinate of one axis: linear or log10, with plotters' round key points unless ticks
/// are given.
#[derive(Debug, Clone)]
struct AxisCoord {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Option<Vec<f64>>,
}

impl AxisCoord {
    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }

    fn auto_key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if !self.log {
            return RangedCoordf64::from(self.lo..self.hi).key_points(hint);
        }
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        log_key_points(
            self.lo.min(self.hi),
            self.lo.max(self.hi),
            hint.max_num_points(),
        )
    }

    /// The tick labels' format when none is given.
    fn default_format(&self) -> Box<dyn Fn(f64) -> String> {
        if self.ticks.is_some() {
            Box::new(plain)
        } else if self.log {
            if self.hi / self.lo >= 100.0 {
                Box::new(|v| power_of_ten(v).unwrap_or_else(|| plain(v)))
            } else {
                Box::new(plain)
            }
        } else {
            let ticks = self
                .ticks
                .clone()
                .unwrap_or_else(|| self.auto_key_points(TICKS));
            let step = ticks
                .windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .filter(|d| *d > 0.0)
                .fold(f64::INFINITY, f64::min);
            let decimals = if step.is_finite() {
                (-step.log10() - 1e-9).ceil().clamp(0.0, 6.0) as usize
            } else {
                2
            };
            Box::new(move |v| fixed(v, decimals))
        }
    }
}

impl Ranged for AxisCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.t(self.lo), self.t(self.hi));
        if b == a {
            return (limit.0 + limit.1) / 2;
        }
        let f = ((self.t(*value) - a) / (b - a)).clamp(-10.0, 10.0);
        (limit.0 as f64 + f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match &self.ticks {
            Some(_) if hint.weight().allow_light_points() => Vec::new(),
            Some(t) => {
                let (lo, hi) = (self.lo.min(self.hi), self.lo.max(self.hi));
                t.iter()
                    .copied()
                    .filter(|v| (lo..=hi).contains(v))
                    .collect()
            }
            None => self.auto_key_points(hint),
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Ticks of a log axis: powers of ten (every few decades when there are many), or 1-2-5 (then
/// 1..9) times a power of ten when the range spans too few decades for two ticks.
fn log_key_points(lo: f64, hi: f64, max_points: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return Vec::new();
    }
    let (e0, e1) = (
        (lo.log10() - 1e-9).ceil() as i32,
        (hi.log10() + 1e-9).floor() as i32,
    );
    let inside = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    if e1 - e0 + 1 >= 3 {
        let step = ((e1 - e0 + 1) as usize).div_ceil(max_points.max(1)).max(1);
        return (e0..=e1).step_by(step).map(|e| 10f64.powi(e)).collect();
    }
    for mantissas in [
        &[1.0, 2.0, 5.0][..],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ] {
        let v: Vec<f64> = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(inside)
            .collect();
        if v.len() >= 3 || mantissas.len() == 9 {
            return v;
        }
    }
    unreachable!()
}

/// Most tick labels per axis.
const TICKS: usize = 7;

/// A plot: two axes, a title, series, an optional legend inside.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// What is drawn, in order (later on top).
    pub series: Vec<Series>,
    /// Where the labelled series' legend goes; `None` for no legend in the panel.
    pub legend: Option<LegendPos>,
    /// One data unit is as long on x as on y (the ranges are widened to fit); linear axes only.
    pub equal_aspect: bool,
}

impl Panel {
    /// An empty panel.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Self {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            legend: None,
            equal_aspect: false,
        }
    }

    /// Add a series.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    /// Show the labelled series' legend at `pos`.
    pub fn legend(mut self, pos: LegendPos) -> Self {
        self.legend = Some(pos);
        self
    }

    /// Keep one data unit equally long on both axes.
    pub fn equal_aspect(mut self) -> Self {
        self.equal_aspect = true;
        self
    }

    fn coords(&self) -> (AxisCoord, AxisCoord) {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = self.x.resolve(pts().map(|p| p.0));
        let (y0, y1) = self.y.resolve(self.series.iter().flat_map(|s| {
            s.points.iter().enumerate().flat_map(|(i, p)| {
                let e = s.spread_at(i);
                [p.1 - e, p.1 + e]
            })
        }));
        (
            AxisCoord {
                lo: x0,
                hi: x1,
                log: self.x.log,
                ticks: self.x.ticks.clone(),
            },
            AxisCoord {
                lo: y0,
                hi: y1,
                log: self.y.log,
                ticks: self.y.ticks.clone(),
            },
        )
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), DrawErr<DB>> {
        let area = if self.title.is_empty() {
            area.clone()
        } else {
            area.titled(&self.title, (FAMILY, 18).into_font().style(FontStyle::Bold))?
        };
        let (mut xc, mut yc) = self.coords();
        let builder = |xc: AxisCoord, yc: AxisCoord| {
            ChartBuilder::on(&area)
                .margin(6)
                .margin_right(18)
                .x_label_area_size(if self.x.label.is_empty() { 26 } else { 46 })
                .y_label_area_size(if self.y.label.is_empty() { 50 } else { 68 })
                .build_cartesian_2d(xc, yc)
        };
        if self.equal_aspect && !self.x.log && !self.y.log {
            let (w, h) = builder(xc.clone(), yc.clone())?
                .plotting_area()
                .dim_in_pixel();
            let (sx, sy) = ((xc.hi - xc.lo) / w as f64, (yc.hi - yc.lo) / h as f64);
            let s = sx.max(sy);
            for (c, px) in [(&mut xc, w), (&mut yc, h)] {
                let (mid, half) = ((c.lo + c.hi) / 2.0, s * px as f64 / 2.0);
                (c.lo, c.hi) = (mid - half, mid + half);
            }
        }
        let x_fmt = self.x.format.map_or_else(|| xc.default_format(), boxed);
        let y_fmt = self.y.format.map_or_else(|| yc.default_format(), boxed);
        let mut chart = builder(xc, yc)?;
        chart
            .configure_mesh()
            .x_labels(TICKS)
            .y_labels(TICKS)
            .x_desc(self.x.label.as_str())
            .y_desc(self.y.label.as_str())
            .x_label_formatter(&|v| x_fmt(*v))
            .y_label_formatter(&|v| y_fmt(*v))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .bold_line_style(RGBColor(232, 232, 232))
            .light_line_style(TRANSPARENT)
            .axis_style(BLACK)
            .draw()?;
        {
            let plot = chart.plotting_area().strip_coord_spec();
            let (w, h) = plot.dim_in_pixel();
            plot.draw(&Rectangle::new(
                [(0, 0), (w as i32 - 1, h as i32 - 1)],
                BLACK.stroke_width(1),
            ))?;
        }
        for s in &self.series {
            let color = rgb(s.color);
            let bars = s.points.iter().enumerate().filter_map(|(i, &(x, y))| {
                let e = s.spread_at(i);
                (e > 0.0)
                    .then(|| ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(1), 8))
            });
            chart.draw_series(bars)?;
            if let Some(l) = s.mark.line {
                let style = color.stroke_width(l.width);
                if l.dashed {
                    chart.draw_series(DashedLineSeries::new(s.points.clone(), 7, 5, style))?;
                } else {
                    chart.draw_series(LineSeries::new(s.points.clone(), style))?;
                }
            }
            if let Some(m) = s.mark.marker {
                let pts = s.points.iter().copied();
                match m {
                    Marker::Disc(r) => {
                        chart.draw_series(pts.map(|p| Circle::new(p, r, color.filled())))?;
                    }
                    Marker::Ring(r) => {
                        chart.draw_series(pts.map(|p| Circle::new(p, r, color.stroke_width(2))))?;
                    }
                    Marker::Square(r) => {
                        let r = r as i32;
                        chart.draw_series(pts.map(|p| {
                            EmptyElement::at(p) + Rectangle::new([(-r, -r), (r, r)], color.filled())
                        }))?;
                    }
                }
            }
            if let (Some(label), Some(_)) = (&s.label, &self.legend) {
                let mark = s.mark;
                chart
                    .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
                    .label(label.as_str())
                    .legend(move |p| Glyph::new(mark, color, p));
            }
        }
        if let Some(pos) = &self.legend {
            chart
                .configure_series_labels()
                .position(pos.clone())
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(170, 170, 170))
                .draw()?;
        }
        Ok(())
    }
}

fn boxed(f: fn(f64) -> String) -> Box<dyn Fn(f64) -> String> {
    Box::new(f)
}

type DrawErr<DB> = DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>;

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// A legend's sample of a mark: 24 px wide, from `at` (its vertical centre) to the right.
struct Glyph {
    at: [BackendCoord; 1],
    mark: Mark,
    color: RGBColor,
}

impl Glyph {
    fn new(mark: Mark, color: RGBColor, at: BackendCoord) -> Self {
        Self {
            at: [at],
            mark,
            color,
        }
    }
}

impl<'b> PointCollection<'b, BackendCoord> for &'b Glyph {
    type Point = &'b BackendCoord;
    type IntoIter = &'b [BackendCoord];
    fn point_iter(self) -> Self::IntoIter {
        &self.at
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Glyph {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let c = self.color;
        if let Some(l) = self.mark.line {
            let style = c.stroke_width(l.width);
            if l.dashed {
                backend.draw_line((x, y), (x + 9, y), &style)?;
                backend.draw_line((x + 14, y), (x + 23, y), &style)?;
            } else {
                backend.draw_line((x, y), (x + 23, y), &style)?;
            }
        }
        let m = (x + 12, y);
        match self.mark.marker {
            Some(Marker::Disc(r)) => backend.draw_circle(m, r.min(6), &c.filled(), true)?,
            Some(Marker::Ring(r)) => backend.draw_circle(m, r.min(6), &c.stroke_width(2), false)?,
            Some(Marker::Square(r)) => {
                let r = r.min(5) as i32;
                backend.draw_rect((m.0 - r, m.1 - r), (m.0 + r, m.1 + r), &c.filled(), true)?
            }
            None => {}
        }
        Ok(())
    }
}

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
        let pixels = self.render()?;
        // Atomically: a crash never leaves a half-written PNG under the final name.
        coeff_tuning::io::write_atomic_with(path, |file| {
            let mut enc = png::Encoder::new(file, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(std::io::Error::other)?;
            w.write_image_data(&pixels).map_err(std::io::Error::other)?;
            w.finish().map_err(std::io::Error::other)
        })
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }
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

/// `v` with `decimals` decimals and a typographic minus, none on zero.
fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(digits) if digits.chars().all(|c| c == '0' || c == '.') => digits.to_string(),
        Some(digits) => format!("−{digits}"),
        None => s,
    }
}

/// `v` with as few decimals as it needs (up to 4 significant digits).
pub fn plain(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{}", v.abs());
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = fixed(v, digits);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `10⁴`, `10⁻³` for a power of ten, `None` otherwise.
pub fn power_of_ten(v: f64) -> Option<String> {
    let e = v.log10().round();
    if !(v > 0.0 && ((v / 10f64.powf(e)) - 1.0).abs() < 1e-9) {
        return None;
    }
    const SUP: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let digits: String = (e.abs() as u64)
        .to_string()
        .chars()
        .map(|c| SUP[c as usize - '0' as usize])
        .collect();
    Some(format!("10{}{digits}", if e < 0.0 { "⁻" } else { "" }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode a PNG: (width, height, RGB pixels).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn dark_pixels(px: &[u8], width: u32, rows: Range<u32>) -> usize {
        px.chunks(3)
            .enumerate()
            .filter(|(i, c)| rows.contains(&(*i as u32 / width)) && c.iter().all(|v| *v < 100))
            .count()
    }

    fn sample() -> Figure {
        let line = |k: f64| {
            (1..=16)
                .map(|s| (s as f64, 40.0 + k * (s as f64).ln()))
                .collect()
        };
        Figure::new(700, 400)
            .title("A title")
            .panel(
                Panel::new(
                    "left",
                    Axis::new("shots").log().ticks(vec![1.0, 4.0, 16.0]),
                    Axis::new("accuracy %"),
                )
                .series(
                    Series::new(
                        colors::BLUE,
                        Mark::line_points(2, Marker::Disc(4)),
                        line(3.0),
                    )
                    .label("with spread")
                    .spread(vec![1.5; 16]),
                )
                .series(Series::new(colors::RED, Mark::dashed(2), line(5.0)).label("dashed"))
                .legend(LegendPos::LowerRight),
            )
            .panel(
                Panel::new("right", Axis::new(""), Axis::new("").log())
                    .series(Series::new(
                        colors::GREEN,
                        Mark::points(Marker::Ring(5)),
                        vec![(0.0, 1e-3), (1.0, 1e-1), (2.0, 10.0)],
                    ))
                    .equal_aspect(),
            )
            .legend(vec![
                LegendEntry::new("disc", colors::BLUE, Mark::points(Marker::Disc(4))),
                LegendEntry::new("square", colors::ORANGE, Mark::points(Marker::Square(4))),
            ])
    }

    #[test]
    fn a_figure_is_written_as_a_png_with_text_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        sample().save_png(&path).unwrap();
        let (w, h, px) = decode(&path);
        assert_eq!((w, h), (700, 400));
        assert_eq!(px.len(), 700 * 400 * 3);
        // The title (first 30 rows) is drawn: text renders without system fonts.
        assert!(dark_pixels(&px, w, 0..30) > 50, "no title text");
        // The data's colours are there (blue line, red dashes).
        let has = |c: Rgb| px.chunks(3).filter(|p| *p == c).count();
        assert!(has(colors::BLUE) > 100, "no blue series");
        assert!(has(colors::RED) > 50, "no red series");
        // Not blank: a good share of non-white pixels, many distinct colours (antialiased text).
        let non_white = px.chunks(3).filter(|p| p.iter().any(|v| *v < 250)).count();
        assert!(non_white > 5_000, "{non_white} non-white pixels");
    }

    #[test]
    fn the_embedded_font_is_used() {
        register_fonts();
        let mut buf = vec![255u8; 200 * 40 * 3];
        {
            let root = Backend(BitMapBackend::with_buffer(&mut buf, (200, 40))).into_drawing_area();
            let (w, _) = root
                .estimate_text_size("Accuracy", &(FAMILY, 20).into_font().into())
                .unwrap();
            assert!((60..120).contains(&w), "text width {w}");
            root.draw(&Text::new("Accuracy", (5, 5), (FAMILY, 20).into_font()))
                .unwrap();
            root.present().unwrap();
        }
        assert!(buf.chunks(3).filter(|p| p[0] < 128).count() > 100);
    }

    #[test]
    fn the_font_has_every_character_the_plots_use() {
        use ab_glyph::Font;
        let font = font_of(FontStyle::Normal);
        let missing: String = "±Σ⁰¹²³⁴⁵⁶⁷⁸⁹−()%_^,:."
            .chars()
            .filter(|c| font.glyph_id(*c).0 == 0)
            .collect();
        assert_eq!(missing, "");
    }

    #[test]
    fn tick_labels() {
        assert_eq!(power_of_ten(1e4).as_deref(), Some("10⁴"));
        assert_eq!(power_of_ten(1e-3).as_deref(), Some("10⁻³"));
        assert_eq!(power_of_ten(1.0).as_deref(), Some("10⁰"));
        assert_eq!(power_of_ten(3e4), None);
        assert_eq!(plain(4.0), "4");
        assert_eq!(plain(0.25), "0.25");
        assert_eq!(plain(1234.6), "1235");
        assert_eq!(fixed(-0.0001, 2), "0.00");
        assert_eq!(fixed(-1.5, 1), "−1.5");
        assert_eq!(plain(-0.25), "−0.25");
        let c = AxisCoord {
            lo: 20.3,
            hi: 70.9,
            log: false,
            ticks: None,
        };
        let kp = c.auto_key_points(TICKS);
        assert!(kp.iter().all(|v| (v / 10.0).fract() == 0.0), "{kp:?}");
        let f = c.default_format();
        assert_eq!(f(30.0), "30");
        let c = AxisCoord {
            lo: 0.31,
            hi: 0.77,
            log: false,
            ticks: None,
        };
        assert_eq!(c.default_format()(0.5), "0.5");
    }

    #[test]
    fn log_ticks() {
        assert_eq!(
            log_key_points(1e-3, 10.0, 7),
            vec![1e-3, 1e-2, 1e-1, 1.0, 10.0]
        );
        assert_eq!(log_key_points(1e3, 1e8, 7).len(), 6);
        assert_eq!(log_key_points(1e-8, 1e8, 7).len(), 6);
        let few = log_key_points(0.15, 0.9, 7);
        assert_eq!((few.len(), few[0]), (8, 0.2), "{few:?}");
        assert_eq!(log_key_points(0.3, 7.0, 7), vec![0.5, 1.0, 2.0, 5.0]);
    }

    #[test]
    fn automatic_ranges_have_a_margin() {
        let (lo, hi) = Axis::new("").log().resolve([1e-4, 1.0].into_iter());
        assert!((lo.log10() + 4.2).abs() < 1e-9 && (hi.log10() - 0.2).abs() < 1e-9);
        assert_eq!(Axis::new("").resolve([0.0, 10.0].into_iter()), (-0.6, 10.6));
        assert_eq!(
            Axis::new("").range((1.0, 2.0)).resolve([5.0].into_iter()),
            (1.0, 2.0)
        );
    }
}
