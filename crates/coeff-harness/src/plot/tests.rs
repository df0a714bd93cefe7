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
