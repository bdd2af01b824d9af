//! What every picture `attn` draws shares: the one font, a subset of DejaVu Sans embedded in the binary
//! (see fonts/LICENSE), so that plots need no system font library on the GPU machine or in CI; and the PNG
//! encoding.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// DejaVu Sans, Latin-1 and punctuation subset.
static DEJAVU_SANS: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font as plotters' `sans-serif` (once; later calls do nothing).
pub fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TrueType font (a test draws text with it); a failure would only
            // leave text undrawn, which the plot tests catch.
            let _ = plotters::style::register_font("sans-serif", style, DEJAVU_SANS);
        }
    });
}

/// Lets `draw` paint an RGB canvas of `size` pixels, then writes it to `path` as PNG: plotters draws into
/// memory and the png crate encodes (plotters' own encoder would pull in the whole `image` crate).
pub fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), String> {
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw(BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area())?;
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| failed(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
    writer.write_image_data(&pixels).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))
}

/// Draws `title` centred at the top of `canvas` in the `sans-serif` font of `size` pixels, wrapped at
/// spaces into as many lines as the width needs (plotters' own `titled` draws one line, cut off at the
/// edges), and returns the area below it.
pub fn titled<DB: DrawingBackend>(
    canvas: &DrawingArea<DB, Shift>,
    title: &str,
    size: u32,
) -> Result<DrawingArea<DB, Shift>, String> {
    let style =
        TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let (width, _) = canvas.dim_in_pixel();
    let fits = |line: &str| {
        canvas
            .estimate_text_size(line.trim_end(), &style)
            .map_or(true, |(w, _)| w + 60 <= width)
    };
    let mut lines: Vec<String> = Vec::new();
    for word in title.split_inclusive(' ') {
        match lines.last_mut() {
            Some(line) if fits(&format!("{line}{word}")) => line.push_str(word),
            _ => lines.push(word.to_string()),
        }
    }
    let line_height = size as i32 * 5 / 4;
    for (i, line) in lines.iter().enumerate() {
        canvas
            .draw_text(
                line.trim_end(),
                &style,
                (width as i32 / 2, 5 + i as i32 * line_height),
            )
            .map_err(|e| format!("drawing the title: {e}"))?;
    }
    let (_, below) = canvas.split_vertically(10 + lines.len() as i32 * line_height);
    Ok(below)
}
