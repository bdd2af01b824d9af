//! The one font of every picture `attn` draws: a subset of DejaVu Sans embedded in the binary (see
//! fonts/LICENSE), so that plots need no system font library on the GPU machine or in CI.

use std::sync::Once;

use plotters::style::{register_font, FontStyle};

/// DejaVu Sans, Latin-1 and punctuation subset.
static DEJAVU_SANS: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font as plotters' `sans-serif` (once; later calls do nothing).
pub fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TrueType font (a test draws text with it); a failure would only
            // leave text undrawn, which the plot tests catch.
            let _ = register_font("sans-serif", style, DEJAVU_SANS);
        }
    });
}
