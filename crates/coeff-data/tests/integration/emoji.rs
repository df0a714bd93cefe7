//! The real Twitter emoji package (fetched with npm, pinned, sha256-checked, cached): every
//! entry with Twitter artwork decodes to a 64x64 RGB image on the background, and the ten
//! cat faces the concept experiment holds out are there under their Unicode names.

use coeff_data::emoji::twitter_emoji;

#[test]
fn twitter_emoji_load_with_names_and_artwork() {
    let emoji = twitter_emoji(&coeff_assets::cache_dir(), [1.0, 1.0, 1.0], &mut |m| {
        eprintln!("{m}")
    })
    .unwrap();
    assert_eq!(emoji.len(), 1911);
    for e in &emoji {
        assert_eq!(
            (e.image.channels, e.image.height, e.image.width),
            (3, 64, 64),
            "{}",
            e.name
        );
        assert!(
            e.image.pixels.iter().all(|v| (0.0..=1.0).contains(v)),
            "{}",
            e.name
        );
    }
    let cats: Vec<&str> = emoji
        .iter()
        .filter(|e| e.name.contains("CAT FACE"))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(cats.len(), 10, "{cats:?}");
    assert!(cats.contains(&"GRINNING CAT FACE WITH SMILING EYES"));
    // Corners are transparent in the artwork: they take the background exactly.
    let cat = emoji.iter().find(|e| e.name == "CAT FACE").unwrap();
    assert_eq!(cat.image.pixels[0], 1.0);
    // The face itself is not the background.
    let centre = 32 * 64 + 32;
    assert!(
        cat.image.pixels[2 * 64 * 64 + centre] < 0.9,
        "blue of the centre pixel"
    );
}
