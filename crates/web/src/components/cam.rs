//! Panel: where the net looks. The class activation map of a layer (the selected one when it
//! has a spatial map, else the last block's output) for the top class or the class clicked in
//! the prediction, as a jet heat map over the crop the network sees, with an opacity slider
//! and the method (Grad-CAM, Grad-CAM++, EigenCAM). Computed in the worker by the core.

use resnet_core::explain::{heat_map_overlay, CamMethod};
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;

use super::{InputView, Raster, Shared};
use crate::protocol::CamMap;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub view: Option<InputView>,
    pub cam: Option<Shared<CamMap>>,
    /// The layer's name and the class's name, for the caption.
    pub layer: AttrValue,
    pub label: AttrValue,
    pub method: CamMethod,
    /// The heat map's opacity, 0 to 1.
    pub opacity: f32,
    pub trained: bool,
    pub busy: bool,
    pub on_opacity: Callback<f32>,
    pub on_method: Callback<CamMethod>,
}

fn method_label(m: CamMethod) -> &'static str {
    match m {
        CamMethod::GradCam => "Grad-CAM",
        CamMethod::GradCamPlusPlus => "Grad-CAM++",
        CamMethod::EigenCam => "EigenCAM",
    }
}

#[function_component(CamPanel)]
pub fn cam_panel(p: &Props) -> Html {
    // The overlay is blended once per map, view and opacity (not on every render).
    let overlay =
        use_memo((p.cam.clone(), p.view.clone(), (p.opacity * 100.0).round() as u32), |(cam, view, _)| {
            let (Some(cam), Some(view)) = (cam, view) else { return None };
            Some(Shared::new(heat_map_overlay(
                &view.rgba,
                view.side as usize,
                &cam.values,
                (cam.width, cam.height),
                p.opacity,
            )))
        });
    let on_opacity = {
        let cb = p.on_opacity.clone();
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            if let Ok(v) = input.value().parse::<f32>() {
                cb.emit(v / 100.0);
            }
        })
    };
    let on_method = {
        let cb = p.on_method.clone();
        Callback::from(move |e: Event| {
            let select: HtmlSelectElement = e.target_unchecked_into();
            if let Ok(m) = select.value().parse::<CamMethod>() {
                cb.emit(m);
            }
        })
    };
    let body = match (&*overlay, &p.cam, &p.view) {
        (Some(rgba), Some(cam), Some(view)) => html! {
            <>
                <Raster rgba={rgba.clone()} width={view.side} height={view.side}
                    class="pixelated cam-overlay" testid="cam-overlay"
                    title={format!("{} of {} for {}", method_label(p.method), p.layer, p.label)} />
                <p class="caption" data-testid="cam-caption">
                    { format!("{} of {} ({}×{}) for ", method_label(cam.method), p.layer, cam.height, cam.width) }
                    <strong>{ p.label.clone() }</strong>
                    <span class="muted">{ format!(" · {:.1} ms in the worker", cam.ms) }</span>
                </p>
                { if p.trained { html! {} } else { html! {
                    <p class="muted">{ "Random weights: the map shows where this untrained net reacts, not what it has learnt." }</p>
                } } }
            </>
        },
        _ => {
            html! { <p class="muted">{ if p.busy { "computing…" } else { "Classify an image to see where the net looks." } }</p> }
        }
    };
    html! {
        <section class="panel cam" data-testid="cam-panel" aria-label="Where the net looks" data-busy={p.busy.to_string()}>
            <h2>{ "Where the net looks" }</h2>
            { body }
            <div class="cam-controls">
                <label>{ "method " }
                    <select data-testid="cam-method" onchange={on_method}>
                        { for CamMethod::ALL.iter().map(|&m| html! {
                            <option value={m.name()} selected={m == p.method}>{ method_label(m) }</option>
                        }) }
                    </select>
                </label>
                <label>{ "heat map opacity " }
                    <input type="range" min="0" max="100" step="5" data-testid="cam-opacity"
                        value={((p.opacity * 100.0).round() as u32).to_string()} oninput={on_opacity} />
                </label>
            </div>
            <p class="muted hint">{ "Click a class in the prediction to see where the net finds it; pick a conv, ReLU or block in the table to look at that layer." }</p>
        </section>
    }
}
