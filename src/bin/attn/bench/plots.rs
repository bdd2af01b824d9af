//! The benchmark plots: `timings.png` / `timings.svg` (median time and TFLOP/s against sequence length,
//! one panel row per dtype, head dim and mask, one line per kernel) and `memory.png` (peak memory of
//! one call against sequence length, one panel per dtype and head dim).
//!
//! Only timed records are drawn; failed, skipped and out-of-memory records are in the table and the
//! JSON. Other tools' kernels (PyTorch's `torch-*`, `numpy`) are dashed. Ragged records (`--varlen`) are lines
//! of their own, named by kernel and layout (`flash varlen`, `flash paged:16`), at their mean length.
//! Decode records (`--decode`) are drawn against the context, one panel row per batch size, a line per
//! kernel and split-KV choice (`flash split:auto`), with bandwidth (GB/s) in place of TFLOP/s and the
//! copy bandwidth measured in the same run as a dotted grey line (the ceiling).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use cuda_attention::cli::bench::results::{CopyBandwidth, Record};
use cuda_attention::cli::bench::table::human_bytes;

use crate::draw::{self, write_png};

/// The line colour of a kernel: fixed for the known ones, so every plot uses the same.
pub fn kernel_color(kernel: &str) -> RGBColor {
    match kernel {
        "naive" => RGBColor(214, 39, 40),
        "flash" => RGBColor(31, 119, 180),
        "cpu" => RGBColor(90, 90, 90),
        "emulator-naive" => RGBColor(255, 127, 14),
        "emulator-flash" => RGBColor(23, 190, 207),
        "torch-flash" => RGBColor(44, 160, 44),
        "torch-efficient" => RGBColor(148, 103, 189),
        "torch-cudnn" => RGBColor(140, 86, 75),
        "torch-math" => RGBColor(227, 119, 194),
        "numpy" => RGBColor(188, 189, 34),
        other => {
            let index = other.bytes().fold(0usize, |h, b| h * 31 + b as usize);
            let (r, g, b) = Palette99::COLORS[index % Palette99::COLORS.len()];
            RGBColor(r, g, b)
        }
    }
}

/// Numbers for tick labels: up to three significant digits, no trailing zeros.
fn tick(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 {
        return "0".into();
    }
    if magnitude >= 100.0 {
        return format!("{value:.0}");
    }
    if magnitude < 1e-3 {
        return format!("{value:.0e}");
    }
    let digits = (2.0 - magnitude.log10().floor()).max(0.0) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Timed records grouped into panels by `key`, then by series (kernel and layout, [`Record::series`],
/// in order of first appearance), as (x, value) points sorted by x: the sequence length, or a decode
/// record's context ([`Record::x_position`]).
type Panels<K> = BTreeMap<K, Vec<(String, Vec<(f64, f64)>)>>;

fn panels<K: Ord>(
    records: &[&Record],
    key: impl Fn(&Record) -> K,
    value: impl Fn(&Record) -> Option<f64>,
) -> Panels<K> {
    let mut panels: Panels<K> = BTreeMap::new();
    for r in records {
        let Some(y) = value(r).filter(|y| y.is_finite() && *y > 0.0) else {
            continue;
        };
        let lines = panels.entry(key(r)).or_default();
        let series = r.series();
        let index = match lines.iter().position(|(k, _)| *k == series) {
            Some(index) => index,
            None => {
                lines.push((series, Vec::new()));
                lines.len() - 1
            }
        };
        let points = &mut lines[index].1;
        let x = r.x_position() as f64;
        match points.iter_mut().find(|(at, _)| *at == x) {
            Some(point) => point.1 = point.1.max(y),
            None => points.push((x, y)),
        }
    }
    for lines in panels.values_mut() {
        for (_, points) in lines.iter_mut() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    panels
}

/// The x axis of every panel: its range and key points (the sequence lengths of all records, log scale)
/// and its description.
struct SeqAxis {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
    description: &'static str,
}

fn seq_axis(records: &[&Record]) -> SeqAxis {
    let description = if records.iter().any(|r| r.context.is_some()) {
        "context length (keys per sequence; decode)"
    } else if records.iter().any(|r| r.seq_lens.is_some()) {
        "sequence length (ragged batches: their mean length)"
    } else {
        "sequence length"
    };
    let mut seqs: Vec<f64> = records.iter().map(|r| r.x_position() as f64).collect();
    seqs.sort_by(f64::total_cmp);
    seqs.dedup();
    if seqs.is_empty() {
        seqs.push(1.0);
    }
    let (lo, hi) = (seqs[0], seqs[seqs.len() - 1]);
    SeqAxis {
        range: lo / 1.25..hi * 1.25,
        keys: seqs,
        description,
    }
}

/// The y range covering `lines`, padded; log scale when asked.
fn value_range(lines: &[(String, Vec<(f64, f64)>)], log: bool) -> std::ops::Range<f64> {
    let values = lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !lo.is_finite() {
        return if log { 0.1..10.0 } else { 0.0..1.0 };
    }
    if log {
        lo / 1.6..hi * 1.6
    } else {
        0.0..hi * 1.15
    }
}

/// How a chart's y axis is scaled, and where its log ticks go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum YScale {
    Linear,
    /// Log scale, ticks at 1, 2, 5 x 10^k.
    Decades,
    /// Log scale, ticks at powers of two (bytes).
    PowersOfTwo,
}

/// Log-axis ticks inside `range`: 1-2-5 decades, thinned to at most 12.
fn decade_ticks(range: &std::ops::Range<f64>) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(range.start.log10().floor());
    while decade <= range.end {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= range.start && t <= range.end {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    if ticks.len() > 12 {
        ticks.retain(|t| (t.log10() - t.log10().round()).abs() < 1e-9);
    }
    ticks
}

/// Log-axis ticks inside `range` at powers of two, every other one (or more) when there are many.
fn power_of_two_ticks(range: &std::ops::Range<f64>) -> Vec<f64> {
    let (lo, hi) = (
        range.start.log2().ceil() as i32,
        range.end.log2().floor() as i32,
    );
    let stride = ((hi - lo + 1) as usize).div_ceil(10).max(1);
    (lo..=hi).step_by(stride).map(|k| 2f64.powi(k)).collect()
}

/// Errors of a drawing backend, as text.
fn text<E: std::fmt::Display>(e: E) -> String {
    format!("drawing a plot: {e}")
}

/// A horizontal line drawn across a chart: its value and its legend.
type Reference<'a> = Option<(f64, &'a str)>;

/// One chart: lines of (seq, value) points, log x, log or linear y, and a reference line if given.
#[allow(clippy::too_many_arguments)]
fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_label: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    x_axis: &SeqAxis,
    y_scale: YScale,
    y_format: &dyn Fn(f64) -> String,
    legend_note: &dyn Fn(&str) -> String,
    reference: Reference<'_>,
) -> Result<(), String> {
    // The reference joins the y range as one more point.
    let mut ranged = lines.to_vec();
    if let Some((y, label)) = reference {
        ranged.push((label.to_string(), vec![(x_axis.range.start, y)]));
    }
    let y_range = value_range(&ranged, y_scale != YScale::Linear);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75);
    let x_spec = x_axis
        .range
        .clone()
        .log_scale()
        .with_key_points(x_axis.keys.clone());
    // Two coordinate types (log or linear y) share the drawing code through this macro.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_axis.description)
                .y_desc(y_label)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| y_format(*y))
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(text)?;
            for (kernel, points) in lines {
                let color = kernel_color(kernel);
                let style = color.stroke_width(2);
                let series = if kernel.starts_with("torch") || kernel == "numpy" {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
                } else {
                    chart.draw_series(LineSeries::new(points.clone(), style))
                };
                series
                    .map_err(text)?
                    .label(legend_note(kernel))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(text)?;
            }
            if let Some((y, label)) = reference {
                let grey = RGBColor(120, 120, 120);
                let ends = vec![(x_axis.range.start, y), (x_axis.range.end, y)];
                chart
                    .draw_series(DashedLineSeries::new(ends, 2, 4, grey.stroke_width(2)))
                    .map_err(text)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], grey.stroke_width(2))
                    });
            }
            if !lines.is_empty() {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 13))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .map_err(text)?;
            }
        }};
    }
    if y_scale != YScale::Linear {
        let ticks = if y_scale == YScale::Decades {
            decade_ticks(&y_range)
        } else {
            power_of_two_ticks(&y_range)
        };
        draw!(builder
            .build_cartesian_2d(x_spec, y_range.log_scale().with_key_points(ticks))
            .map_err(text)?);
    } else {
        draw!(builder.build_cartesian_2d(x_spec, y_range).map_err(text)?);
    }
    Ok(())
}

fn mask_words(causal: bool) -> &'static str {
    if causal {
        "causal"
    } else {
        "non-causal"
    }
}

/// Rows of panels the timing figure has (at least one, to say there is nothing).
fn timing_rows(records: &[&Record]) -> usize {
    let times = panels(records, Record::config_key, Record::median_ms);
    times.len().max(1)
}

fn draw_timings<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    records: &[&Record],
    title: &str,
    copy: Option<&CopyBandwidth>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(text)?;
    let root = draw::titled(&root, title, 20)?;
    let times = panels(records, Record::config_key, Record::median_ms);
    // TFLOP/s, or for decode panels the bandwidth.
    let throughput = panels(records, Record::config_key, |r| match r.context {
        Some(_) => r.bandwidth_gb_s,
        None => r.timing.as_ref().map(|t| t.tflops),
    });
    let x_axis = seq_axis(records);
    if times.is_empty() {
        root.draw(&Text::new(
            "no kernel was timed (see the table: skipped, failed or out of memory)",
            (40, 40),
            ("sans-serif", 18),
        ))
        .map_err(text)?;
        return root.present().map_err(text);
    }
    let areas = root.split_evenly((times.len(), 2));
    for (row, (config, lines)) in times.iter().enumerate() {
        let (dtype, head_dim, causal, batch) = config;
        let mut name = format!("{dtype}, head_dim {head_dim}, {}", mask_words(*causal));
        if let Some(batch) = batch {
            name += &format!(", batch {batch}");
        }
        let (rate_caption, rate_label) = match batch {
            Some(_) => ("bandwidth (bytes of K, V, Q, O / time)", "GB/s"),
            None => ("throughput", "TFLOP/s"),
        };
        let ceiling = copy.map(|c| {
            (
                c.bandwidth_gb_s,
                format!("{} copy, {:.0} GB/s", c.space, c.bandwidth_gb_s),
            )
        });
        let reference = match (batch, &ceiling) {
            (Some(_), Some((y, label))) => Some((*y, label.as_str())),
            _ => None,
        };
        let no_note = |k: &str| k.to_string();
        draw_chart(
            &areas[2 * row],
            &format!("{name}: median time"),
            "median time (ms)",
            lines,
            &x_axis,
            YScale::Decades,
            &tick,
            &no_note,
            None,
        )?;
        let empty = Vec::new();
        let rates = throughput.get(config).unwrap_or(&empty);
        // Log scale when the values (and the ceiling) span more than 30x.
        let spread = rates
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .chain(reference.map(|(y, _)| y))
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
                (lo.min(y), hi.max(y))
            });
        draw_chart(
            &areas[2 * row + 1],
            &format!("{name}: {rate_caption}"),
            rate_label,
            rates,
            &x_axis,
            if spread.1 > 30.0 * spread.0 {
                YScale::Decades
            } else {
                YScale::Linear
            },
            &tick,
            &no_note,
            reference,
        )?;
    }
    root.present().map_err(text)
}

/// Writes the timing figure as PNG and SVG; decode panels draw `copy`'s bandwidth as their ceiling.
pub fn write_timings(
    records: &[&Record],
    title: &str,
    copy: Option<&CopyBandwidth>,
    png: &Path,
    svg: &Path,
) -> Result<(), String> {
    draw::register_font();
    let size = (1400, 60 + 430 * timing_rows(records) as u32);
    write_png(png, size, |root| draw_timings(root, records, title, copy))
        .map_err(|e| format!("{}: {e}", png.display()))?;
    draw_timings(
        SVGBackend::new(svg, size).into_drawing_area(),
        records,
        title,
        copy,
    )
    .map_err(|e| format!("{}: {e}", svg.display()))
}

/// Writes the memory figure as PNG: peak bytes of one call against seq, per dtype and head dim.
pub fn write_memory(records: &[&Record], title: &str, png: &Path) -> Result<(), String> {
    draw::register_font();
    let peaks = panels(
        records,
        |r| {
            let (dtype, head_dim, _, batch) = r.config_key();
            (dtype, head_dim, batch)
        },
        |r| {
            r.timing.as_ref()?;
            r.memory.as_ref().map(|m| m.peak_bytes as f64)
        },
    );
    let spaces: BTreeMap<String, String> = records
        .iter()
        .filter_map(|r| r.memory.as_ref().map(|m| (r.series(), m.space.clone())))
        .collect();
    let size = (1000, 60 + 420 * peaks.len().max(1) as u32);
    let draw = |root: DrawingArea<BitMapBackend<'_>, Shift>| -> Result<(), String> {
        root.fill(&WHITE).map_err(text)?;
        let root = draw::titled(&root, title, 20)?;
        if peaks.is_empty() {
            root.draw(&Text::new(
                "no kernel was timed: no memory to show",
                (40, 40),
                ("sans-serif", 18),
            ))
            .map_err(text)?;
            return root.present().map_err(text);
        }
        let x_axis = seq_axis(records);
        let areas = root.split_evenly((peaks.len(), 1));
        let note = |kernel: &str| match spaces.get(kernel).map(String::as_str) {
            Some("host") => format!("{kernel} (host memory)"),
            _ => kernel.to_string(),
        };
        for (area, ((dtype, head_dim, batch), lines)) in areas.iter().zip(&peaks) {
            let held = match batch {
                Some(batch) => format!("decode, batch {batch}"),
                None => "batch x seq held constant".into(),
            };
            draw_chart(
                area,
                &format!("{dtype}, head_dim {head_dim}: peak memory of one call ({held})"),
                "bytes",
                lines,
                &x_axis,
                YScale::PowersOfTwo,
                &|bytes| human_bytes(bytes.max(0.0) as u64),
                &note,
                None,
            )?;
        }
        root.present().map_err(text)
    };
    write_png(png, size, draw).map_err(|e| format!("{}: {e}", png.display()))
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_keep_three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (0.015, "0.015"),
            (0.02, "0.02"),
            (0.005, "0.005"),
            (0.0125, "0.0125"),
            (1.5, "1.5"),
            (20.0, "20"),
            (12.5, "12.5"),
            (250.0, "250"),
            (0.0002, "2e-4"),
        ];
        for (value, text) in cases {
            assert_eq!(tick(value), text, "{value}");
        }
    }
}
