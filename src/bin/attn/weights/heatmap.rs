//! Attention weights as a heatmap PNG: queries down, keys across, viridis from 0 to the largest shown
//! value, a colour bar, and token labels on both axes when given. A matrix larger than the picture is
//! pooled in blocks (max or mean of each block), never truncated, and the title says by how much.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::draw;

/// Most labelled ticks per axis.
const MAX_TICKS: usize = 40;
/// Longest label shown, in characters.
const MAX_LABEL: usize = 14;

/// How a block of weights becomes one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The largest weight of the block: sharp peaks stay visible.
    Max,
    /// The mean weight of the block: the mass of attention is kept.
    Mean,
    /// The sum of the block's weights (the attention map's `--bin-sum`).
    Sum,
}

/// A matrix pooled to at most `max_cells` cells per axis.
pub struct Pooled {
    pub rows: usize,
    pub cols: usize,
    /// Original rows (cols) per cell.
    pub row_factor: usize,
    pub col_factor: usize,
    pub pool: Pool,
    /// Row-major `rows * cols` values.
    pub values: Vec<f32>,
}

/// Pools the row-major `rows x cols` `matrix` in blocks so that neither axis exceeds `max_cells`.
pub fn pool(matrix: &[f32], rows: usize, cols: usize, max_cells: usize, pool: Pool) -> Pooled {
    let max_cells = max_cells.max(1);
    let row_factor = rows.div_ceil(max_cells).max(1);
    let col_factor = cols.div_ceil(max_cells).max(1);
    let (out_rows, out_cols) = (rows.div_ceil(row_factor), cols.div_ceil(col_factor));
    let mut values = vec![0.0f32; out_rows * out_cols];
    for r in 0..out_rows {
        let row_range = r * row_factor..((r + 1) * row_factor).min(rows);
        for c in 0..out_cols {
            let col_range = c * col_factor..((c + 1) * col_factor).min(cols);
            let block = row_range
                .clone()
                .flat_map(|i| matrix[i * cols..][col_range.clone()].iter().copied());
            values[r * out_cols + c] = match pool {
                Pool::Max => block.fold(f32::NEG_INFINITY, f32::max),
                Pool::Mean => {
                    let count = row_range.len() * col_range.len();
                    block.sum::<f32>() / count as f32
                }
                Pool::Sum => block.sum::<f32>(),
            };
        }
    }
    Pooled {
        rows: out_rows,
        cols: out_cols,
        row_factor,
        col_factor,
        pool,
        values,
    }
}

impl Pooled {
    /// "not downsampled", or e.g. "downsampled 4x4 (max of each block)".
    pub fn describe(&self) -> String {
        if self.row_factor == 1 && self.col_factor == 1 {
            "not downsampled".into()
        } else {
            format!(
                "downsampled {}x{} ({} of each block)",
                self.row_factor,
                self.col_factor,
                match self.pool {
                    Pool::Max => "max",
                    Pool::Mean => "mean",
                    Pool::Sum => "sum",
                }
            )
        }
    }
}

/// The label of cell `cell` of an axis pooled by `factor`: the block's first token (or index).
fn label(labels: Option<&[String]>, cell: usize, factor: usize) -> String {
    let index = cell * factor;
    let text = match labels.and_then(|l| l.get(index)) {
        Some(token) => token.clone(),
        None => index.to_string(),
    };
    if text.chars().count() > MAX_LABEL {
        let cut: String = text.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The label at axis position `position` (a cell index when it is an integer), or none between cells.
fn cell_label(labels: Option<&[String]>, position: f64, cells: usize, factor: usize) -> String {
    let cell = position.round();
    if (position - cell).abs() > 1e-6 || cell < 0.0 || cell as usize >= cells {
        return String::new();
    }
    label(labels, cell as usize, factor)
}

fn text<E: std::fmt::Display>(e: E) -> String {
    format!("drawing the heatmap: {e}")
}

/// Writes `pooled` as a PNG heatmap at `path`; `row_labels` / `col_labels` are the query / key tokens of
/// the unpooled matrix.
pub fn write(
    pooled: &Pooled,
    row_labels: Option<&[String]>,
    col_labels: Option<&[String]>,
    title: &str,
    path: &Path,
) -> Result<(), String> {
    draw::register_font();
    let vmax = pooled
        .values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let draw = |canvas: DrawingArea<BitMapBackend<'_>, Shift>| -> Result<(), String> {
        canvas.fill(&WHITE).map_err(text)?;
        let root = draw::titled(&canvas, title, 17)?;
        let (map_area, bar_area) = root.split_horizontally(1030);
        let (rows, cols) = (pooled.rows as f64, pooled.cols as f64);
        let mut chart = ChartBuilder::on(&map_area)
            .margin(12)
            .x_label_area_size(if col_labels.is_some() { 120 } else { 45 })
            .y_label_area_size(if row_labels.is_some() { 130 } else { 60 })
            // Cell (r, c) is centred on (c, -r): integer ticks fall on cell centres, row 0 on top.
            .build_cartesian_2d(-0.5..cols - 0.5, 0.5 - rows..0.5)
            .map_err(text)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("key")
            .y_desc("query")
            .label_style(("sans-serif", 12))
            .x_labels(pooled.cols.min(MAX_TICKS))
            .y_labels(pooled.rows.min(MAX_TICKS))
            // Token labels are drawn below, rotated; indices go on the mesh.
            .x_label_formatter(&|x| match col_labels {
                Some(_) => String::new(),
                None => cell_label(None, *x, pooled.cols, pooled.col_factor),
            })
            .y_label_formatter(&|y| cell_label(row_labels, -y, pooled.rows, pooled.row_factor))
            .draw()
            .map_err(text)?;
        let cells = pooled.values.iter().enumerate().map(|(i, &v)| {
            let (r, c) = ((i / pooled.cols) as f64, (i % pooled.cols) as f64);
            let color = if v.is_finite() {
                ViridisRGB.get_color_normalized(v, 0.0, vmax)
            } else {
                RGBColor(255, 0, 255)
            };
            let y = -r;
            Rectangle::new([(c - 0.5, y + 0.5), (c + 0.5, y - 0.5)], color.filled())
        });
        chart.draw_series(cells).map_err(text)?;
        if col_labels.is_some() {
            // Key tokens read downwards from just under their column.
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center));
            let stride = pooled.cols.div_ceil(MAX_TICKS).max(1);
            for c in (0..pooled.cols).step_by(stride) {
                let (x, y) = chart.backend_coord(&(c as f64, 0.5 - rows));
                let label = label(col_labels, c, pooled.col_factor);
                canvas
                    .draw(&Text::new(label, (x, y + 8), style.clone()))
                    .map_err(text)?;
            }
        }

        // The colour bar: 0 at the bottom, the largest shown value at the top.
        let mut bar = ChartBuilder::on(&bar_area)
            .margin_top(12)
            .margin_bottom(if col_labels.is_some() { 132 } else { 57 })
            .margin_right(5)
            .right_y_label_area_size(70)
            .build_cartesian_2d(0.0..1.0, 0.0..f64::from(vmax))
            .map_err(text)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_style(("sans-serif", 12))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(text)?;
        let steps = 200;
        let step = f64::from(vmax) / f64::from(steps);
        bar.draw_series((0..steps).map(|i| {
            let v = f64::from(i) * step;
            let color = ViridisRGB.get_color_normalized(v as f32, 0.0, vmax);
            Rectangle::new([(0.0, v), (1.0, v + step)], color.filled())
        }))
        .map_err(text)?;
        root.present().map_err(text)
    };
    draw::write_png(path, (1150, 1000), draw).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the key profile (the attention each key receives, summed over the queries) as a line plot at
/// `path`: keys across, attention up.
pub fn write_profile(profile: &[f32], title: &str, path: &Path) -> Result<(), String> {
    draw::register_font();
    let top = profile
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let keys = profile.len().max(1) as f64;
    let draw = |canvas: DrawingArea<BitMapBackend<'_>, Shift>| -> Result<(), String> {
        canvas.fill(&WHITE).map_err(text)?;
        let root = draw::titled(&canvas, title, 17)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..keys - 0.5, 0.0..f64::from(top) * 1.05)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("key")
            .y_desc("attention received (sum over queries)")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(text)?;
        let points = profile
            .iter()
            .enumerate()
            .map(|(j, &v)| (j as f64, f64::from(v)));
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(1)))
            .map_err(text)?;
        root.present().map_err(text)
    };
    draw::write_png(path, (1150, 500), draw).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_keeps_the_whole_matrix() {
        // 5 x 3, pooled to at most 2 cells per axis: blocks of 3 rows and 2 columns, ragged at the end.
        let matrix: Vec<f32> = (0..15).map(|x| x as f32).collect();
        let max = pool(&matrix, 5, 3, 2, Pool::Max);
        assert_eq!(
            (max.rows, max.cols, max.row_factor, max.col_factor),
            (2, 2, 3, 2)
        );
        assert_eq!(max.values, vec![7.0, 8.0, 13.0, 14.0]);
        let mean = pool(&matrix, 5, 3, 2, Pool::Mean);
        assert_eq!(mean.values, vec![3.5, 5.0, 11.0, 12.5]);
        assert_eq!(mean.describe(), "downsampled 3x2 (mean of each block)");
        assert_eq!(
            pool(&matrix, 5, 3, 8, Pool::Max).describe(),
            "not downsampled"
        );
    }
}
