//! Axes: range, scale, ticks and tick labels.

use super::*;

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
    pub(super) fn resolve(&self, values: impl Iterator<Item = f64>) -> (f64, f64) {
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
pub(super) struct AxisCoord {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) log: bool,
    pub(super) ticks: Option<Vec<f64>>,
}

impl AxisCoord {
    pub(super) fn t(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }

    pub(super) fn auto_key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
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
    pub(super) fn default_format(&self) -> Box<dyn Fn(f64) -> String> {
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
pub(super) fn log_key_points(lo: f64, hi: f64, max_points: usize) -> Vec<f64> {
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

/// `v` with `decimals` decimals and a typographic minus, none on zero.
pub(super) fn fixed(v: f64, decimals: usize) -> String {
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
