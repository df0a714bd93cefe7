//! One plot: two axes, a title, series, an optional legend.

use super::*;

/// Most tick labels per axis.
pub(super) const TICKS: usize = 7;

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

    pub(super) fn coords(&self) -> (AxisCoord, AxisCoord) {
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

    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawErr<DB>> {
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

pub(super) fn boxed(f: fn(f64) -> String) -> Box<dyn Fn(f64) -> String> {
    Box::new(f)
}
