//! What a panel draws: markers, line styles, series.

use super::*;

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

    pub(super) fn spread_at(&self, i: usize) -> f64 {
        self.spread
            .as_ref()
            .and_then(|s| s.get(i).copied())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(0.0)
    }
}
