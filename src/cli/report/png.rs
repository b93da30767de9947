//! `--png`: the heatmap as a PNG image, drawn with plotters into an RGB buffer and encoded with
//! png. Labels use the first of a few common system fonts found (plotters' ab_glyph text needs a
//! font file; without one the image is drawn without text and a warning says so).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor;
use plotters::style::{register_font, FontStyle};
use vkdirty::trace::stats::Stats;

use super::view::{colour, scale, View};
use crate::cli::{human_bytes, warn, CliError};

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> bool {
    for p in FONTS {
        if let Ok(bytes) = std::fs::read(p) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

const LABEL_W: u32 = 300;
const PLOT_W: u32 = 1024;
const ROW_H: u32 = 18;
const TOP: u32 = 30;

fn draw(buf: &mut [u8], w: u32, h: u32, st: &Stats, v: &View, text: bool) -> Result<(), String> {
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    let e = |x: DrawingAreaErrorKind<_>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let nb = v.bins.len().max(1) as f64;
    let cw = PLOT_W as f64 / nb;
    let rows = v.rows.len() as u32;
    let x_of = |bin: f64| LABEL_W as i32 + (bin * cw).round() as i32;
    root.draw(&Rectangle::new(
        [(LABEL_W as i32, TOP as i32), ((LABEL_W + PLOT_W) as i32, (TOP + rows * ROW_H) as i32)],
        RGBColor(242, 242, 242).filled(),
    ))
    .map_err(e)?;
    let font = ("sans-serif", 13).into_font();
    for (r, row) in v.rows.iter().enumerate() {
        let y = (TOP + r as u32 * ROW_H) as i32;
        for (i, &(pages, bytes)) in row.cells.iter().enumerate() {
            if pages == 0 && bytes == 0 {
                continue;
            }
            let (cr, cg, cb) = colour(scale(pages.max(1), v.max_cell_pages));
            let (x0, x1) = (x_of(i as f64), x_of(i as f64 + 1.0).max(x_of(i as f64) + 1));
            root.draw(&Rectangle::new([(x0, y), (x1, y + ROW_H as i32 - 1)], RGBColor(cr, cg, cb).filled()))
                .map_err(e)?;
        }
        if text {
            let style = font
                .clone()
                .color(&BLACK)
                .pos(text_anchor::Pos::new(text_anchor::HPos::Right, text_anchor::VPos::Center));
            root.draw(&Text::new(row.label.clone(), (LABEL_W as i32 - 6, y + ROW_H as i32 / 2), style)).map_err(e)?;
        }
    }
    let bottom = (TOP + rows * ROW_H) as i32;
    let step = v.frame_ends.len().div_ceil(120).max(1);
    for (k, &(last, _)) in v.frame_ends.iter().enumerate() {
        if (k + 1) % step != 0 {
            continue;
        }
        let x = x_of(v.pos(last + 1));
        if x <= (LABEL_W + PLOT_W) as i32 {
            root.draw(&PathElement::new(vec![(x, TOP as i32 - 4), (x, bottom)], RGBColor(214, 39, 40))).map_err(e)?;
        }
    }
    // Colour legend.
    let ly = bottom + 30;
    for k in 0..100 {
        let (cr, cg, cb) = colour(k as f64 / 99.0);
        let x = LABEL_W as i32 + k * 2;
        root.draw(&Rectangle::new([(x, ly), (x + 2, ly + 10)], RGBColor(cr, cg, cb).filled())).map_err(e)?;
    }
    if text {
        let first = v.first;
        let last = v.bins.last().map_or(first, |b| b.last);
        let unit = v.columns.name();
        let app = st.summary.session.as_ref().map_or("trace".to_string(), |s| s.app.clone());
        let title = format!(
            "{app}: dirty pages by allocation (rows) and {unit} (columns {first}-{last}, {} per column){}",
            v.width,
            if v.frame_ends.is_empty() { "" } else { "; red: frame ends" }
        );
        root.draw(&Text::new(title, (LABEL_W as i32, 8), font.clone())).map_err(e)?;
        root.draw(&Text::new("1 page".to_string(), (LABEL_W as i32 - 48, ly - 1), font.clone())).map_err(e)?;
        let legend = format!(
            "{} pages per cell (log scale); {} dirty in total",
            v.max_cell_pages,
            human_bytes(st.summary.dirty_bytes)
        );
        root.draw(&Text::new(legend, (LABEL_W as i32 + 208, ly - 1), font.clone())).map_err(e)?;
        root.draw(&Text::new(format!("{unit} {first}"), (LABEL_W as i32, bottom + 6), font.clone())).map_err(e)?;
        let end = format!("{unit} {last}");
        let style =
            font.clone().color(&BLACK).pos(text_anchor::Pos::new(text_anchor::HPos::Right, text_anchor::VPos::Top));
        root.draw(&Text::new(end, ((LABEL_W + PLOT_W) as i32, bottom + 6), style)).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

pub fn write(path: &Path, st: &Stats, v: &View) -> Result<(), CliError> {
    let text = load_font();
    if !text {
        warn("no TrueType font found (fonts-dejavu-core): the PNG has no labels");
    }
    let w = LABEL_W + PLOT_W + 16;
    let h = TOP + v.rows.len().max(1) as u32 * ROW_H + 56;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw(&mut buf, w, h, st, v, text).map_err(|e| CliError::Msg(format!("drawing the heatmap: {e}")))?;
    let ctx = || format!("writing {}", path.display());
    let f = File::create(path).map_err(|e| CliError::io(ctx(), e))?;
    let mut enc = png::Encoder::new(BufWriter::new(f), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let io = |e: png::EncodingError| CliError::Msg(format!("writing {}: {e}", path.display()));
    let mut pw = enc.write_header().map_err(io)?;
    pw.write_image_data(&buf).map_err(io)?;
    pw.finish().map_err(io)?;
    Ok(())
}
