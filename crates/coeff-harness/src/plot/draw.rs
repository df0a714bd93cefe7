//! Text and glyph drawing: the embedded font, the bitmap backend that draws text straight with
//! `ab_glyph`, and legend samples.

use super::*;

/// The font family every text of a plot uses (plotters' default family name).
pub(super) const FAMILY: &str = "sans-serif";

/// Register the embedded font under [`FAMILY`] (once per process): plotters measures text
/// with it (legend boxes); [`Backend`] draws it.
pub(super) fn register_fonts() {
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
pub(super) fn font_of(style: FontStyle) -> ab_glyph::FontRef<'static> {
    let bytes = match style {
        FontStyle::Bold => ttf_noto_sans::BOLD,
        _ => ttf_noto_sans::REGULAR,
    };
    ab_glyph::FontRef::try_from_slice(bytes).expect("the embedded Noto Sans font parses")
}

/// Text laid out on a baseline at y = 0 from x = 0: the positioned glyphs and the advance width.
/// The font has no superscript minus (U+207B): it is drawn as a smaller hyphen, centred on the
/// superscript digits.
pub(super) fn layout_text(
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
pub(super) fn text_box_height(size: f64) -> i32 {
    (size / 1.24) as i32
}

/// The bitmap backend, with text drawn straight with `ab_glyph`: plotters 0.3.7's own
/// `ab_glyph` text drawing drops each glyph's side bearing, which spaces letters unevenly.
pub(super) struct Backend<'a>(pub(super) BitMapBackend<'a>);

pub(super) type BackendResult<T = ()> =
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

pub(super) type DrawErr<DB> = DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>;

pub(super) fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// A legend's sample of a mark: 24 px wide, from `at` (its vertical centre) to the right.
pub(super) struct Glyph {
    pub(super) at: [BackendCoord; 1],
    pub(super) mark: Mark,
    pub(super) color: RGBColor,
}

impl Glyph {
    pub(super) fn new(mark: Mark, color: RGBColor, at: BackendCoord) -> Self {
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
