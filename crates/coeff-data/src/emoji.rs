//! Twitter's emoji artwork (npm `emoji-datasource-twitter@16.0.0`: Twemoji, artwork CC-BY 4.0
//! by Twitter, Inc. and other contributors; the package's code MIT by iamcal): 1,911 emoji as
//! 64x64 RGBA PNGs (`img/twitter/64/<image>`), with their Unicode names, short names and
//! categories (`emoji.json`). Skin-tone variants are not read.
//!
//! The tarball is fetched with npm (pinned, sha256-checked, cached) and read in memory; each
//! PNG is composited onto a fixed background colour, so an emoji becomes a `[3, 64, 64]` RGB
//! image in `[0, 1]`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use coeff_assets::{fetch_npm_tarball, NpmPackage};

use crate::error::{format, Result};
use crate::image::Image;

/// The pinned package.
pub const EMOJI_TWITTER: NpmPackage = NpmPackage {
    package: "emoji-datasource-twitter",
    version: "16.0.0",
    sha256: "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
};

/// Where the 64 px images are in the tarball.
const IMAGE_DIR: &str = "package/img/twitter/64/";
/// The metadata file in the tarball.
const METADATA: &str = "package/emoji.json";
/// Larger members are refused before they are read (the real ones are < 10 kB and 1.5 MB).
const MAX_MEMBER_BYTES: u64 = 64 << 20;

/// One emoji.
#[derive(Debug, Clone, PartialEq)]
pub struct Emoji {
    /// Unicode name, e.g. `GRINNING CAT FACE WITH SMILING EYES`.
    pub name: String,
    /// Short name, e.g. `smile_cat`.
    pub short_name: String,
    /// Code points, e.g. `1F638`.
    pub unified: String,
    /// Category, e.g. `Smileys & Emotion`.
    pub category: String,
    /// Subcategory, e.g. `cat-face`.
    pub subcategory: String,
    /// The artwork on the background, `[3, 64, 64]` in `[0, 1]`.
    pub image: Image,
}

/// Fetch (if needed) and read every emoji that has Twitter artwork, in the package's sort
/// order, composited onto `background` (RGB in `[0, 1]`).
pub fn twitter_emoji(
    cache: &Path,
    background: [f32; 3],
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Emoji>> {
    let (path, bytes) = fetch_npm_tarball(&EMOJI_TWITTER, cache, log)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut metadata = None;
    let mut pngs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| format(&path, format!("not a gzipped tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format(&path, format!("unreadable tar entry: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format(&path, format!("bad tar entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let wanted = name == METADATA || (name.starts_with(IMAGE_DIR) && name.ends_with(".png"));
        if !wanted {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_MEMBER_BYTES {
            return Err(format(
                &path.join(&name),
                format!("{size} bytes, more than the {MAX_MEMBER_BYTES} allowed"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| format(&path.join(&name), format!("unreadable: {e}")))?;
        if name == METADATA {
            metadata = Some(data);
        } else {
            pngs.insert(name[IMAGE_DIR.len()..].to_string(), data);
        }
    }
    let meta_path = path.join(METADATA);
    let metadata = metadata.ok_or_else(|| format(&meta_path, "missing from the tarball"))?;
    let entries = parse_metadata(&meta_path, &metadata)?;
    entries
        .into_iter()
        .map(|e| {
            let png_path = path.join(IMAGE_DIR).join(&e.image);
            let png = pngs.get(&e.image).ok_or_else(|| {
                format(
                    &png_path,
                    "missing from the tarball (emoji.json says it has Twitter artwork)",
                )
            })?;
            Ok(Emoji {
                image: decode_over(&png_path, png, background)?,
                name: e.name,
                short_name: e.short_name,
                unified: e.unified,
                category: e.category,
                subcategory: e.subcategory,
            })
        })
        .collect()
}

struct Entry {
    name: String,
    short_name: String,
    unified: String,
    category: String,
    subcategory: String,
    image: String,
    sort_order: i64,
}

/// The entries of `emoji.json` with Twitter artwork, in sort order.
fn parse_metadata(path: &Path, raw: &[u8]) -> Result<Vec<Entry>> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format(path, format!("not JSON: {e}")))?;
    let rows = value
        .as_array()
        .ok_or_else(|| format(path, "not a JSON list"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let field = |key: &str| -> Result<String> {
            row.get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| format(path, format!("entry {i}: field `{key}` is not a string")))
        };
        if row.get("has_img_twitter").and_then(|v| v.as_bool()) != Some(true) {
            continue;
        }
        let image = field("image")?;
        if image.contains('/') || image.contains("..") || !image.ends_with(".png") {
            return Err(format(
                path,
                format!("entry {i}: image `{image}` is not a plain .png file name"),
            ));
        }
        out.push(Entry {
            name: field("name")?,
            short_name: field("short_name")?,
            unified: field("unified")?,
            category: field("category")?,
            subcategory: field("subcategory")?,
            image,
            sort_order: row
                .get("sort_order")
                .and_then(|v| v.as_i64())
                .unwrap_or(i64::MAX),
        });
    }
    out.sort_by_key(|e| e.sort_order);
    Ok(out)
}

/// Decode an RGBA PNG and composite it onto `background`: `rgb * a + background * (1 - a)`.
fn decode_over(path: &Path, png: &[u8], background: [f32; 3]) -> Result<Image> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| format(path, format!("cannot decode: {e}")))?
        .to_rgba8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut pixels = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        for c in 0..3 {
            pixels[c * h * w + y as usize * w + x as usize] =
                p[c] as f32 / 255.0 * a + background[c] * (1.0 - a);
        }
    }
    Ok(Image {
        channels: 3,
        height: h,
        width: w,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_rgba(pixels: &[[u8; 4]], w: u32, h: u32) -> Vec<u8> {
        let mut img = image::RgbaImage::new(w, h);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgba(pixels[i]);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn transparent_pixels_take_the_background_and_opaque_ones_keep_their_colour() {
        let png = png_rgba(&[[255, 0, 0, 255], [0, 0, 255, 0], [0, 255, 0, 51]], 3, 1);
        let img = decode_over(Path::new("x.png"), &png, [1.0, 1.0, 1.0]).unwrap();
        let px = |c: usize, x: usize| img.pixels[c * 3 + x];
        assert_eq!((px(0, 0), px(1, 0), px(2, 0)), (1.0, 0.0, 0.0));
        assert_eq!((px(0, 1), px(1, 1), px(2, 1)), (1.0, 1.0, 1.0));
        assert!((px(1, 2) - 1.0).abs() < 1e-6 && (px(0, 2) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn metadata_errors_name_the_entry_and_field() {
        let p = Path::new("emoji.json");
        let err = parse_metadata(p, br#"[{"has_img_twitter": true, "image": "a.png"}]"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("entry 0") && err.contains("`name`"), "{err}");
        let err = parse_metadata(
            p,
            br#"[{"has_img_twitter": true, "image": "../x.png", "name": "A"}]"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("../x.png"), "{err}");
        let ok = parse_metadata(
            p,
            br#"[{"has_img_twitter": false, "image": "a.png"},
                 {"has_img_twitter": true, "image": "b.png", "name": "B", "short_name": "b",
                  "unified": "62", "category": "C", "subcategory": "s", "sort_order": 2},
                 {"has_img_twitter": true, "image": "c.png", "name": "C", "short_name": "c",
                  "unified": "63", "category": "C", "subcategory": "s", "sort_order": 1}]"#,
        )
        .unwrap();
        assert_eq!(
            ok.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["C", "B"]
        );
    }
}
