//! Saving what the window shows: a screenshot of the whole window arrives as an
//! event a frame or two after it is asked for; the part a plot covers is cut out and
//! written as PNG.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A pending "save the plots" request: where to, and which part of the window (in
/// points, as egui lays out).
#[derive(Debug, Clone)]
pub struct PngRequest {
    pub path: PathBuf,
    pub rect: egui::Rect,
}

/// The pixels of `image` inside `rect` (points; `pixels_per_point` scales them),
/// encoded as PNG.
pub fn crop_png(
    image: &egui::ColorImage,
    rect: egui::Rect,
    pixels_per_point: f32,
) -> Result<Vec<u8>> {
    let [w, h] = image.size;
    let px = |v: f32, max: usize| ((v * pixels_per_point).round().max(0.0) as usize).min(max);
    let (x0, x1) = (px(rect.min.x, w), px(rect.max.x, w));
    let (y0, y1) = (px(rect.min.y, h), px(rect.max.y, h));
    if x1 <= x0 || y1 <= y0 {
        return Err(Error::InvalidSetting(
            "the plots are not on screen: open the Curves tab first".into(),
        ));
    }
    let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
    for y in y0..y1 {
        for c in &image.pixels[y * w + x0..y * w + x1] {
            rgba.extend_from_slice(&c.to_srgba_unmultiplied());
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, (x1 - x0) as u32, (y1 - y0) as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| Error::Engine {
        context: "PNG encoding".into(),
        cause: e.to_string(),
    };
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(&rgba).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use egui::{Color32, ColorImage, Rect, pos2};

    /// A 4×3-point region of a 2× image is 8×6 pixels, and decodes to the colours
    /// that were there.
    #[test]
    fn the_cut_out_decodes_to_the_pixels_inside_the_rect() {
        let (w, h) = (20, 16);
        let pixels = (0..w * h)
            .map(|i| Color32::from_rgb((i % w) as u8, (i / w) as u8, 7))
            .collect();
        let image = ColorImage::new([w, h], pixels);
        let rect = Rect::from_min_max(pos2(2.0, 1.0), pos2(6.0, 4.0));
        let bytes = super::crop_png(&image, rect, 2.0).expect("png");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("header");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("frame");
        assert_eq!((info.width, info.height), (8, 6));
        // The top-left pixel is image pixel (4, 2); the bottom-right (11, 7).
        assert_eq!(&buf[..4], &[4, 2, 7, 255]);
        let last = buf.len() - 4;
        assert_eq!(&buf[last..], &[11, 7, 7, 255]);
        let empty = Rect::from_min_max(pos2(30.0, 30.0), pos2(40.0, 40.0));
        assert!(super::crop_png(&image, empty, 2.0).is_err());
    }
}
