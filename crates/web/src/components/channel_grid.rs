//! Every channel of a layer in one canvas: the tiles of a `TileAtlas`, each scaled to the same
//! size, a grid that fills the panel's width. A click, or the arrow keys once it has the focus,
//! picks the channel shown enlarged; to assistive technology it is a slider over the channels.
//!
//! The grid scrolls inside its box, and the canvas holds only the rows near the view (a screen
//! above and below): resnet50's 2,048 channels as one 767×9,300 px canvas cost 80 ms to draw and
//! as much again for the compositor to take each frame.

use gloo::events::EventListener;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlElement, ImageData};
use yew::prelude::*;

use super::Shared;
use crate::grid::{channel_at, covers, moved, window, GAP, TILE};
use crate::viz::TileAtlas;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub atlas: Shared<TileAtlas>,
    pub node: usize,
    /// What the slider is called: the layer, its maps and their range.
    pub label: AttrValue,
    pub active: usize,
    pub on_channel: Callback<usize>,
    /// The input's three channels are R, G and B.
    pub input_rgb: bool,
}

/// "channel 0", or for the input's colour channels "channel 0: R (normalised)".
pub fn channel_title(input_rgb: bool, n: usize) -> String {
    match (input_rgb, n) {
        (true, 0..=2) => format!("channel {n}: {} (normalised)", ["R", "G", "B"][n]),
        _ => format!("channel {n}"),
    }
}

#[function_component(ChannelGrid)]
pub fn channel_grid(p: &Props) -> Html {
    let scroller = use_node_ref();
    let canvas = use_node_ref();
    // Columns that fit the panel: measured once mounted and again when the window resizes.
    let cols = use_state(|| 8usize);
    {
        let (scroller, cols) = (scroller.clone(), cols.clone());
        use_effect_with((), move |_| {
            let fit = move || {
                if let Some(el) = scroller.cast::<HtmlElement>() {
                    let width = el.client_width().max(0) as u32;
                    let n = ((width + GAP) / (TILE + GAP)).max(1) as usize;
                    if n != *cols {
                        cols.set(n);
                    }
                }
            };
            fit();
            let listener = EventListener::new(&gloo::utils::window(), "resize", move |_| fit());
            move || drop(listener)
        });
    }
    let cols = (*cols).min(p.atlas.channels.max(1));
    let channels = p.atlas.channels;
    let rows = channels.div_ceil(cols);
    // The view's top and height (CSS px), followed as the grid scrolls; the rows held follow
    // them only once the view leaves those rows.
    let view = use_state(|| (0i32, 480i32));
    let held = window(view.0, view.1, rows);
    let onscroll = {
        let (view, scroller) = (view.clone(), scroller.clone());
        Callback::from(move |_: Event| {
            if let Some(el) = scroller.cast::<HtmlElement>() {
                let now = (el.scroll_top(), el.client_height().max(1));
                if !covers(held, now.0, now.1, rows) || now.1 != view.1 {
                    view.set(now);
                }
            }
        })
    };
    // The atlas as a picture at its own resolution, made once per atlas; each redraw scales tiles
    // from it.
    let source = use_memo(p.atlas.clone(), |atlas| atlas_picture(atlas));
    {
        let canvas = canvas.clone();
        use_effect_with((source.clone(), p.atlas.clone(), cols, held), move |(source, atlas, cols, held)| {
            if let (Some(c), Some(source)) = (canvas.cast::<HtmlCanvasElement>(), source.as_ref()) {
                draw(&c, source, atlas, *cols, *held);
            }
        });
    }
    // The active tile stays in the grid's scrolled view (the page itself does not move).
    {
        let scroller = scroller.clone();
        use_effect_with((p.active, cols, p.node), move |&(active, cols, _)| {
            if let Some(el) = scroller.cast::<HtmlElement>() {
                let top = (active / cols) as i32 * (TILE + GAP) as i32;
                let (from, height) = (el.scroll_top(), el.client_height());
                if top < from {
                    el.set_scroll_top(top);
                } else if top + TILE as i32 > from + height {
                    el.set_scroll_top(top + TILE as i32 - height);
                }
            }
        });
    }
    let step = TILE + GAP;
    // The channel under the pointer, from the whole grid's corner: right even in the instant
    // before the canvas follows a scroll.
    let area = use_node_ref();
    let pointed = {
        let area = area.clone();
        move |e: &MouseEvent| {
            let rect = area.cast::<HtmlElement>()?.get_bounding_client_rect();
            let (x, y) = (e.client_x() as f64 - rect.left(), e.client_y() as f64 - rect.top());
            channel_at(x.floor() as i32, y.floor() as i32, cols, channels)
        }
    };
    let onclick = {
        let (f, pointed) = (p.on_channel.clone(), pointed.clone());
        Callback::from(move |e: MouseEvent| {
            if let Some(c) = pointed(&e) {
                f.emit(c);
            }
        })
    };
    let onmousemove = {
        let rgb = p.input_rgb;
        Callback::from(move |e: MouseEvent| {
            let title = pointed(&e).map(|c| channel_title(rgb, c)).unwrap_or_default();
            if let Some(el) = e.target_dyn_into::<web_sys::Element>() {
                let _ = el.set_attribute("title", &title);
            }
        })
    };
    let below = held.0 as u32 * step;
    let onkeydown = {
        let (f, at) = (p.on_channel.clone(), p.active);
        Callback::from(move |e: KeyboardEvent| {
            if let Some(c) = moved(&e.key(), at, cols, channels) {
                e.prevent_default();
                if c != at {
                    f.emit(c);
                }
            }
        })
    };
    let (w, h) = (cols as u32 * step - GAP, (rows as u32 * step).saturating_sub(GAP));
    let drawn_h = (((held.1 - held.0) as u32) * step).saturating_sub(GAP);
    let active = p.active.min(channels.saturating_sub(1));
    let marker = format!(
        "left: {}px; top: {}px; width: {TILE}px; height: {TILE}px",
        (active % cols) as u32 * step,
        (active / cols) as u32 * step
    );
    html! {
        <div class="activation-grid" ref={scroller} data-testid="activation-grid" data-node={p.node.to_string()}
            data-channels={channels.to_string()} data-cols={cols.to_string()} data-tile={TILE.to_string()}
            data-gap={GAP.to_string()} data-active={active.to_string()} data-rows={rows.to_string()}
            data-held={format!("{}-{}", held.0, held.1)} {onscroll}>
            <div class="tiles-area" ref={area} style={format!("width: {w}px; height: {h}px")} {onclick} {onmousemove}>
            <canvas ref={canvas} class="tiles" data-testid="activation-tiles" width={w.to_string()} height={drawn_h.to_string()}
                style={format!("top: {below}px; width: {w}px; height: {drawn_h}px")} tabindex="0" role="slider"
                aria-label={p.label.clone()} aria-valuemin="0" aria-valuemax={channels.saturating_sub(1).to_string()}
                aria-valuenow={active.to_string()} aria-valuetext={channel_title(p.input_rgb, active)}
                {onkeydown}></canvas>
            <div class="tile-active" data-testid="active-tile" style={marker}></div>
            </div>
        </div>
    }
}

/// The atlas at its own resolution, in a canvas of its own (none for an empty or malformed one).
fn atlas_picture(atlas: &TileAtlas) -> Option<HtmlCanvasElement> {
    let (aw, ah) = ((atlas.cols * atlas.tile_w) as u32, (atlas.rows * atlas.tile_h) as u32);
    if atlas.rgba.len() != (aw * ah * 4) as usize || aw == 0 || ah == 0 {
        return None;
    }
    let source: HtmlCanvasElement = gloo::utils::document().create_element("canvas").ok()?.unchecked_into();
    source.set_width(aw);
    source.set_height(ah);
    let data = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&atlas.rgba), aw, ah).ok()?;
    context(&source)?.put_image_data(&data, 0.0, 0.0).ok()?;
    Some(source)
}

fn context(c: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    c.get_context("2d").ok().flatten().map(|x| x.unchecked_into())
}

/// Rows `held` of the grid, `cols` tiles to a row, each scaled (nearest neighbour) to `TILE` px.
fn draw(
    canvas: &HtmlCanvasElement,
    source: &HtmlCanvasElement,
    atlas: &TileAtlas,
    cols: usize,
    held: (usize, usize),
) {
    let step = TILE + GAP;
    canvas.set_width(cols as u32 * step - GAP);
    canvas.set_height((((held.1 - held.0) as u32) * step).saturating_sub(GAP));
    let Some(to) = context(canvas) else { return };
    to.set_image_smoothing_enabled(false);
    let (tw, th) = (atlas.tile_w as f64, atlas.tile_h as f64);
    for c in (held.0 * cols)..(held.1 * cols).min(atlas.channels) {
        let (sx, sy) = atlas.origin(c);
        let (dx, dy) = ((c % cols) as u32 * step, (c / cols - held.0) as u32 * step);
        let _ = to.draw_image_with_html_canvas_element_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
            source,
            sx as f64,
            sy as f64,
            tw,
            th,
            dx as f64,
            dy as f64,
            TILE as f64,
            TILE as f64,
        );
    }
}
