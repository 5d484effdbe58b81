//! One component per panel, plus the canvas they all draw pixels with and the shared handle
//! every large buffer travels in.

pub mod activations;
pub mod cam;
pub mod channel_grid;
pub mod degradation;
pub mod diagram;
pub mod drop_zone;
pub mod error_banner;
pub mod filters;
pub mod footer;
pub mod header;
pub mod hub_weights;
pub mod layer_table;
pub mod prediction;
pub mod replay;
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
    /// What a screen reader says for the picture (default: `title`); `role` is then "img".
    #[prop_or_default]
    pub label: Option<AttrValue>,
    /// A tile that acts (a filter): its role, focus order and keys.
    #[prop_or_default]
    pub role: Option<AttrValue>,
    #[prop_or_default]
    pub tabindex: Option<AttrValue>,
    #[prop_or_default]
    pub onkeydown: Option<Callback<KeyboardEvent>>,
    #[prop_or_default]
    pub onfocus: Option<Callback<FocusEvent>>,
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
    let label = p.label.clone().or_else(|| p.title.clone());
    let role = p.role.clone().or_else(|| label.as_ref().map(|_| AttrValue::from("img")));
    html! {
        <canvas ref={canvas} class={p.class.clone()} width={p.width.to_string()} height={p.height.to_string()}
            data-testid={p.testid.clone()} title={p.title.clone()} aria-label={label} role={role}
            aria-hidden={(p.label.is_none() && p.title.is_none()).then_some("true")}
            tabindex={p.tabindex.clone()} onkeydown={p.onkeydown.clone()} onfocus={p.onfocus.clone()}
            onclick={p.onclick.clone()} onmouseenter={p.onmouseenter.clone()}></canvas>
    }
}

/// Arrow keys (and Home/End) within a group of controls that is one Tab stop: moves the focus
/// to the next or previous element matching `items` inside the target's closest `group`.
/// Returns the element focused, if the key was one of those.
pub fn roving_focus(e: &KeyboardEvent, group: &str, items: &str) -> Option<web_sys::HtmlElement> {
    let here: web_sys::Element = e.target_dyn_into()?;
    let all = here.closest(group).ok().flatten()?.query_selector_all(items).ok()?;
    let n = all.length();
    let at = (0..n).find(|&i| all.item(i).is_some_and(|x| x.is_same_node(Some(&here))))?;
    let to = match e.key().as_str() {
        "ArrowRight" | "ArrowDown" => (at + 1).min(n - 1),
        "ArrowLeft" | "ArrowUp" => at.saturating_sub(1),
        "Home" => 0,
        "End" => n - 1,
        _ => return None,
    };
    e.prevent_default();
    let el: web_sys::HtmlElement = all.item(to)?.dyn_into().ok()?;
    let _ = el.focus();
    Some(el)
}

/// The keys of one control in a `roving_focus` group: Enter or Space emits `value`, arrows
/// (and Home/End) move the focus within `group`'s `items`.
pub fn group_keys<T: Clone + 'static>(
    on: Callback<T>,
    value: T,
    group: &'static str,
    items: &'static str,
) -> Callback<KeyboardEvent> {
    Callback::from(move |e: KeyboardEvent| {
        if matches!(e.key().as_str(), "Enter" | " ") {
            e.prevent_default();
            on.emit(value.clone());
        } else {
            roving_focus(&e, group, items);
        }
    })
}

/// A `<select>`'s `onchange` that hands the chosen option's value to `cb`.
pub fn select_value(cb: Callback<String>) -> Callback<Event> {
    Callback::from(move |e: Event| {
        let sel: web_sys::HtmlSelectElement = e.target_unchecked_into();
        cb.emit(sel.value())
    })
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
