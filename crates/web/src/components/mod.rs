//! One component per panel, plus the canvas they all draw pixels with and the shared handle
//! every large buffer travels in.

pub mod activations;
pub mod cam;
pub mod diagram;
pub mod drop_zone;
pub mod error_banner;
pub mod filters;
pub mod footer;
pub mod header;
pub mod layer_table;
pub mod prediction;
pub mod residual_stream;
pub mod user_weights;
pub mod zoom;

use std::rc::Rc;

use resnet_core::{Graph, Summary};
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData};
use yew::prelude::*;

/// The props of the two views of the whole net (the layer table and the diagram): both show
/// every layer, mark the selected one and select on click.
#[derive(Properties, PartialEq)]
pub struct LayerProps {
    pub graph: Shared<Graph>,
    pub summary: Shared<Summary>,
    pub selected: usize,
    pub on_select: Callback<usize>,
    /// The last run (its per-layer times), where there is one.
    #[prop_or_default]
    pub result: Option<Shared<crate::protocol::RunResult>>,
}

/// Shared, immutable data in props: equal when it is the same allocation. Yew compares props
/// on every render; `Rc<T>`'s own `==` would compare every f32 of a map or a filter bank. So a
/// buffer is wrapped once, when it arrives, and new data always comes in a new `Shared`.
pub struct Shared<T>(pub Rc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Rc::new(value))
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Shared::new(T::default())
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The crop the network sees, as RGBA (converted once per run: the input panel and the
/// activation overlay both draw it).
#[derive(Clone, PartialEq)]
pub struct InputView {
    pub rgba: Shared<Vec<u8>>,
    pub side: u32,
}

#[derive(Properties, PartialEq)]
pub struct RasterProps {
    /// RGBA pixels, `width × height`; redrawn when it is a new buffer.
    pub rgba: Shared<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    #[prop_or_default]
    pub class: Classes,
    #[prop_or_default]
    pub testid: Option<AttrValue>,
    #[prop_or_default]
    pub title: Option<AttrValue>,
    #[prop_or_default]
    pub onclick: Option<Callback<MouseEvent>>,
    #[prop_or_default]
    pub onmouseenter: Option<Callback<MouseEvent>>,
}

/// A canvas showing raw pixels at their own resolution; CSS enlarges it (pixelated).
#[function_component(Raster)]
pub fn raster(p: &RasterProps) -> Html {
    let canvas = use_node_ref();
    {
        let canvas = canvas.clone();
        use_effect_with((p.rgba.clone(), p.width, p.height), move |(rgba, w, h)| {
            if let Some(c) = canvas.cast::<HtmlCanvasElement>() {
                draw(&c, rgba, *w, *h);
            }
        });
    }
    html! {
        <canvas ref={canvas} class={p.class.clone()} width={p.width.to_string()} height={p.height.to_string()}
            data-testid={p.testid.clone()} title={p.title.clone()}
            onclick={p.onclick.clone()} onmouseenter={p.onmouseenter.clone()}></canvas>
    }
}

fn draw(c: &HtmlCanvasElement, rgba: &[u8], w: u32, h: u32) {
    if rgba.len() != (w * h * 4) as usize || w == 0 || h == 0 {
        return;
    }
    c.set_width(w);
    c.set_height(h);
    let Some(ctx) = c.get_context("2d").ok().flatten() else { return };
    let ctx: CanvasRenderingContext2d = ctx.unchecked_into();
    if let Ok(data) = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w, h) {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
}

/// A colour bar with its end values.
#[derive(Properties, PartialEq)]
pub struct ColourBarProps {
    pub scale: crate::viz::Scale,
}

#[function_component(ColourBar)]
pub fn colour_bar(p: &ColourBarProps) -> Html {
    let rgba = use_memo(p.scale, |s| Shared::new(s.bar(128)));
    html! {
        <span class="colour-bar" data-testid="colour-scale">
            <span class="tick">{ format!("{:.3}", p.scale.lo()) }</span>
            <Raster rgba={(*rgba).clone()} width={128} height={1} class="bar" />
            <span class="tick">{ format!("{:.3}", p.scale.hi) }</span>
        </span>
    }
}
