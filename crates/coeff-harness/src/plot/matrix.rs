//! A confusion matrix as a PNG: one cell per (true class, predicted class), shaded by the
//! share of the row (the class's images) it holds, with the count written in the cell.

use super::*;

/// Largest side of the cell grid, in pixels (cells shrink to fit many classes).
const GRID: u32 = 720;
/// Cells below this side carry no count.
const MIN_TEXT_CELL: u32 = 26;
/// Class names are cut to this many characters.
const NAME_CHARS: usize = 18;

/// A confusion matrix plot: `counts[truth][prediction]`, square, with class names.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixPlot {
    /// Title above the grid.
    pub title: String,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// `counts[truth][prediction]`.
    pub counts: Vec<Vec<usize>>,
}

impl MatrixPlot {
    /// A plot of `counts` (square, one row and column per class).
    pub fn new(title: impl Into<String>, classes: Vec<String>, counts: Vec<Vec<usize>>) -> Self {
        Self {
            title: title.into(),
            classes,
            counts,
        }
    }

    /// Image width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        let (_, _, _, w, h) = self.layout5();
        (w, h)
    }

    fn layout5(&self) -> (u32, u32, u32, u32, u32) {
        let n = self.classes.len().max(1) as u32;
        let cell = (GRID / n).clamp(4, 72);
        let (left, top) = (150, 90);
        (cell, left, top, left + cell * n + 30, top + cell * n + 50)
    }

    /// Draw into an 8-bit RGB buffer (`width * height * 3` bytes, row-major).
    pub fn render(&self) -> Result<Vec<u8>> {
        let n = self.classes.len();
        if n == 0 || self.counts.len() != n || self.counts.iter().any(|r| r.len() != n) {
            return Err(anyhow!(
                "confusion matrix: {} class names but counts of {} rows ({:?} columns)",
                n,
                self.counts.len(),
                self.counts.iter().map(Vec::len).collect::<Vec<_>>()
            ));
        }
        register_fonts();
        let (w, h) = self.size();
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = Backend(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing a confusion matrix: {e}"))?;
            root.present()
                .map_err(|e| anyhow!("drawing a confusion matrix: {e}"))?;
        }
        Ok(buf)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), DrawErr<DB>> {
        let (cell, left, top, w, _) = self.layout5();
        let n = self.classes.len();
        root.fill(&WHITE)?;
        let title = TextStyle::from((FAMILY, 20).into_font().style(FontStyle::Bold));
        let font = TextStyle::from((FAMILY, 13).into_font());
        let axis = TextStyle::from((FAMILY, 15).into_font());
        root.draw(&Text::new(
            self.title.as_str(),
            (w as i32 / 2, 16),
            title.pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        let grid_mid = (left + cell * n as u32 / 2) as i32;
        root.draw(&Text::new(
            "predicted class",
            (grid_mid, 40),
            axis.pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        root.draw(&Text::new(
            "true class",
            (8, top as i32 - 14),
            axis.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        let name = |i: usize| -> String { self.classes[i].chars().take(NAME_CHARS).collect() };
        let show_names = cell >= 12;
        for (t, row) in self.counts.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y0 = (top + t as u32 * cell) as i32;
            if show_names {
                root.draw(&Text::new(
                    name(t),
                    (left as i32 - 6, y0 + cell as i32 / 2),
                    font.pos(Pos::new(HPos::Right, VPos::Center)),
                ))?;
            }
            for (p, &count) in row.iter().enumerate() {
                let x0 = (left + p as u32 * cell) as i32;
                let share = count as f64 / total.max(1) as f64;
                // White to the palette's blue by the row share.
                let mix = |full: u8| (255.0 - share * (255.0 - full as f64)).round() as u8;
                let [r, g, b] = colors::BLUE;
                let fill = RGBColor(mix(r), mix(g), mix(b));
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    rgb(colors::LIGHT_GREY),
                ))?;
                if cell >= MIN_TEXT_CELL {
                    let ink = if share > 0.55 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        count.to_string(),
                        (x0 + cell as i32 / 2, y0 + cell as i32 / 2),
                        font.color(&ink).pos(Pos::new(HPos::Center, VPos::Center)),
                    ))?;
                }
            }
        }
        if show_names {
            // Column names above the grid, as short as the row names' cut allows the cell.
            let chars = ((cell / 7) as usize).clamp(1, NAME_CHARS);
            for p in 0..n {
                let x = (left + p as u32 * cell + cell / 2) as i32;
                let short: String = self.classes[p].chars().take(chars).collect();
                root.draw(&Text::new(
                    short,
                    (x, top as i32 - 14),
                    font.pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }
        Ok(())
    }

    /// Write as an 8-bit RGB PNG (atomically).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let pixels = self.render()?;
        let (w, h) = self.size();
        write_png(path, w, h, &pixels)
    }
}
