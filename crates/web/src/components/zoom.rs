//! One channel of the selected layer enlarged over the input, and what one of its pixels sees:
//! hovering (or moving with the arrow keys) draws the pixel's receptive field on the input,
//! computed from the same description as the layer table; a click (or Enter) asks the worker
//! for the effective receptive field, |∂unit/∂input|, which is much smaller.

use resnet_core::explain::{heat_map_overlay, Erf};
use resnet_core::spec::RfBox;
use resnet_core::Graph;
use yew::prelude::*;

use super::{InputView, Raster, Shared};

#[derive(Properties, PartialEq)]
pub struct Props {
    pub graph: Shared<Graph>,
    pub node: usize,
    pub channel: usize,
    /// The channel's map, RGBA, `width × height`.
    pub map: Shared<Vec<u8>>,
    pub width: usize,
    pub height: usize,
    pub input: InputView,
    /// The last effective receptive field the worker sent (shown when it is of this channel).
    pub erf: Option<Shared<Erf>>,
    pub erf_busy: bool,
    /// A pixel (`y`, `x`) of the map was clicked: its effective receptive field is wanted.
    pub on_unit: Callback<(usize, usize)>,
}

/// `b` as CSS percentages of an input of `h × w` pixels.
fn box_style(b: &RfBox, h: usize, w: usize) -> String {
    let pct = |v: usize, n: usize| 100.0 * v as f64 / n.max(1) as f64;
    format!(
        "left:{:.3}%;top:{:.3}%;width:{:.3}%;height:{:.3}%",
        pct(b.x0, w),
        pct(b.y0, h),
        pct(b.x1 - b.x0, w),
        pct(b.y1 - b.y0, h)
    )
}

/// "21×21 px" and, when the border clips it, "(19×21 inside the image)".
fn box_words(b: &RfBox) -> String {
    let (h, w) = (b.y1 - b.y0, b.x1 - b.x0);
    match (h, w) == (b.size, b.size) {
        true => format!("{0}×{0} px", b.size),
        false => format!("{0}×{0} px ({h}×{w} inside the image)", b.size),
    }
}

#[function_component(UnitZoom)]
pub fn unit_zoom(p: &Props) -> Html {
    let hover = use_state(|| None::<(usize, usize)>);
    let opacity = use_state(|| 0.65f32);
    let (h, w) = (p.height, p.width);
    let g = &p.graph;
    let input_shape = g.input;
    // Yew delegates events to the app's root, so the event's current target is not the stack:
    // the stack's own rectangle gives the pixel.
    let stack = use_node_ref();
    let pick = {
        let stack = stack.clone();
        move |e: &MouseEvent| -> Option<(usize, usize)> {
            let r = stack.cast::<web_sys::Element>()?.get_bounding_client_rect();
            let fx = (e.client_x() as f64 - r.left()) / r.width().max(1.0);
            let fy = (e.client_y() as f64 - r.top()) / r.height().max(1.0);
            let at = |f: f64, n: usize| ((f * n as f64).floor().max(0.0) as usize).min(n - 1);
            ((0.0..=1.0).contains(&fx) && (0.0..=1.0).contains(&fy)).then(move || (at(fy, h), at(fx, w)))
        }
    };
    let on_move = {
        let (hover, pick) = (hover.clone(), pick.clone());
        Callback::from(move |e: MouseEvent| {
            let at = pick(&e);
            if *hover != at {
                hover.set(at);
            }
        })
    };
    let on_leave = {
        let hover = hover.clone();
        Callback::from(move |_: MouseEvent| hover.set(None))
    };
    let on_click = {
        let (hover, cb, pick) = (hover.clone(), p.on_unit.clone(), pick.clone());
        Callback::from(move |e: MouseEvent| {
            if let Some(at) = pick(&e) {
                hover.set(Some(at));
                cb.emit(at);
            }
        })
    };
    // The keyboard's way: arrows move the pixel (from the centre), Enter or Space asks.
    let on_key = {
        let (hover, cb) = (hover.clone(), p.on_unit.clone());
        Callback::from(move |e: KeyboardEvent| {
            let (y, x) = hover.unwrap_or((h / 2, w / 2));
            let next = match e.key().as_str() {
                "ArrowUp" => (y.saturating_sub(1), x),
                "ArrowDown" => ((y + 1).min(h - 1), x),
                "ArrowLeft" => (y, x.saturating_sub(1)),
                "ArrowRight" => (y, (x + 1).min(w - 1)),
                "Enter" | " " => {
                    e.prevent_default();
                    hover.set(Some((y, x)));
                    cb.emit((y, x));
                    return;
                }
                _ => return,
            };
            e.prevent_default();
            hover.set(Some(next));
        })
    };
    let on_opacity = {
        let opacity = opacity.clone();
        Callback::from(move |e: InputEvent| {
            let el: web_sys::HtmlInputElement = e.target_unchecked_into();
            if let Ok(v) = el.value().parse::<f32>() {
                opacity.set((v / 100.0).clamp(0.0, 1.0));
            }
        })
    };
    let rf = hover.and_then(|(y, x)| g.rf_box(None, p.node, y, x).map(|b| (y, x, b)));
    let name = &g.nodes[p.node].name;
    let ch = p.channel;
    let erf = p.erf.as_ref().filter(|e| e.layer == p.node && e.channel == ch);
    let heat = use_memo((erf.cloned(), p.input.clone()), |(erf, input)| {
        erf.as_ref().map(|e| {
            let side = input.side as usize;
            let rgba = heat_map_overlay(&input.rgba, side, &e.values, (e.width, e.height), 0.7);
            Shared::new(rgba)
        })
    });
    let side = p.input.side;
    let (ih, iw) = (input_shape.h, input_shape.w);
    html! {
        <div class="zoom-pair">
            <figure class="overlay" data-testid="activation-zoom">
                <div class="stack unit-picker" ref={stack} tabindex="0" role="application"
                    aria-label={format!("{name}, channel {ch}, {h}×{w} over the input: arrow keys move a pixel, Enter shows what it depends on")}
                    onmousemove={on_move} onmouseleave={on_leave} onclick={on_click} onkeydown={on_key}>
                    <Raster rgba={p.input.rgba.clone()} width={side} height={side} class="pixelated under" />
                    <div class="over" style={format!("opacity:{:.2}", *opacity)}>
                        <Raster rgba={p.map.clone()} width={w as u32} height={h as u32} class="pixelated" />
                    </div>
                    { match &rf {
                        Some((_, _, b)) => html! {
                            <div class="rf-box" data-testid="rf-box" data-size={b.size.to_string()}
                                data-clipped={format!("{}x{}", b.y1 - b.y0, b.x1 - b.x0)}
                                style={box_style(b, ih, iw)}>
                                <span>{ b.size }</span>
                            </div>
                        },
                        None => html! {},
                    } }
                </div>
                <figcaption>
                    { format!("{name} · channel {ch} over the input") }
                    <br/>
                    <span data-testid="rf-caption">{ match &rf {
                        Some((y, x, b)) => format!("pixel ({y}, {x}) sees {} of the input: its receptive field. Click for what it really depends on.", box_words(b)),
                        None => "Point at a pixel to see the input it sees; click it for its effective receptive field.".to_string(),
                    } }</span>
                </figcaption>
                <label class="opacity">{ "map opacity " }
                    <input type="range" min="0" max="100" step="5" data-testid="map-opacity"
                        value={format!("{:.0}", *opacity * 100.0)} oninput={on_opacity} />
                </label>
            </figure>
            { match (erf, heat.as_ref()) {
                (Some(e), Some(rgba)) => {
                    let half = e.mass_side(0.5);
                    let words = if half > 0 {
                        format!(
                            "Half of |∂unit/∂input| lies within {half}×{half} px and 90 % within {0}×{0} px of the {1}×{1} px theoretical field (outlined): the centre counts most.",
                            e.mass_side(0.9), e.rf.size
                        )
                    } else {
                        "This unit is 0 on this image (its ReLU is off), so no gradient reaches the input: click a brighter pixel.".to_string()
                    };
                    html! {
                        <figure class="overlay erf" data-testid="erf" data-layer={e.layer.to_string()}
                            data-unit={format!("{},{},{}", e.channel, e.y, e.x)}
                            data-half={half.to_string()}>
                            <div class="stack">
                                <Raster rgba={rgba.clone()} width={side} height={side} class="pixelated"
                                    label={format!("effective receptive field of unit ({}, {}, {}) over the input", e.channel, e.y, e.x)} />
                                <div class="rf-box outline" style={box_style(&e.rf, ih, iw)}></div>
                            </div>
                            <figcaption>
                                <strong>{ format!("Effective receptive field of ({}, {}, {})", e.channel, e.y, e.x) }</strong>
                                { if p.erf_busy { html! { <span class="spinner" aria-label="computing"></span> } } else { html! {} } }
                                <br/>{ words }
                            </figcaption>
                        </figure>
                    }
                }
                _ if p.erf_busy => html! { <p class="muted"><span class="spinner"></span>{ "computing the effective receptive field…" }</p> },
                _ => html! {},
            } }
        </div>
    }
}
