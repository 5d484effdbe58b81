//! The input panel: drop zone, file picker, sample strip, and the exact input the net sees.

use resnet_core::arch::CIFAR10_CLASSES;
use wasm_bindgen::JsCast;
use web_sys::{File, HtmlImageElement, HtmlInputElement};
use yew::prelude::*;

use super::{roving_focus, InputView, Raster};

/// Samples per class in `www/samples/` (`<class>-<i>.jpg`).
pub const SAMPLES_PER_CLASS: usize = 3;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub on_file: Callback<File>,
    pub on_sample: Callback<(HtmlImageElement, String)>,
    /// The current image: name, width, height.
    pub image: Option<(String, u32, u32)>,
    /// The crop the network sees.
    pub view: Option<InputView>,
    pub busy: bool,
    /// The camera classifies: its frames per second.
    pub camera: Option<f64>,
    pub camera_opening: bool,
    /// Start (true) or stop the camera.
    pub on_camera: Callback<bool>,
    /// A file is being dragged over the page.
    pub dragging: bool,
}

#[function_component(DropZone)]
pub fn drop_zone(p: &Props) -> Html {
    let on_change = {
        let cb = p.on_file.clone();
        Callback::from(move |e: Event| {
            let input: HtmlInputElement = e.target_unchecked_into();
            if let Some(f) = input.files().and_then(|l| l.get(0)) {
                cb.emit(f);
            }
            input.set_value(""); // picking the same file again fires again
        })
    };
    // A sample is a button around its picture: Tab reaches the strip, arrows move along it,
    // Enter or Space classifies (a button's click).
    let on_sample = {
        let cb = p.on_sample.clone();
        Callback::from(move |e: MouseEvent| {
            // Yew delegates events: the target is the picture (or the button, by keyboard).
            let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
            let Some(button) = target.closest(".sample").ok().flatten() else { return };
            let (Some(name), Some(img)) =
                (button.get_attribute("data-name"), button.query_selector("img").ok().flatten())
            else {
                return;
            };
            cb.emit((img.unchecked_into(), name));
        })
    };
    let on_sample_key = Callback::from(|e: KeyboardEvent| {
        roving_focus(&e, ".samples", ".sample");
    });
    let current = p.image.as_ref().map(|(n, ..)| n.clone());
    let samples: Vec<(&str, usize, String)> = CIFAR10_CLASSES
        .iter()
        .flat_map(|&class| (0..SAMPLES_PER_CLASS).map(move |i| (class, i, format!("{class}-{i}.jpg"))))
        .collect();
    // The strip's one Tab stop: the sample shown, else the first (a user's own "x.jpg" is none).
    let first_stop = current
        .clone()
        .filter(|n| samples.iter().any(|(.., s)| s == n))
        .unwrap_or_else(|| samples[0].2.clone());
    html! {
        <section class="panel input" aria-label="Input">
            <h2>{ "Input" }</h2>
            <div class={classes!("drop-zone", p.dragging.then_some("dragging"))} data-testid="drop-zone" data-dragging={p.dragging.to_string()}>
                { if p.dragging { html! { <p class="drop-hint">{ "Drop it: anywhere on the page." }</p> } } else { html! {} } }
                <p>{ "Drop an image (or your weights: a PyTorch .pth or .safetensors) anywhere on the page, paste one, or " }
                    <label class="file-button">{ "choose a file" }
                        <input type="file" accept={format!("image/*,{}", super::user_weights::ACCEPT)} data-testid="file-input" onchange={on_change} />
                    </label>
                </p>
                <p class="camera">
                    { match (p.camera, p.camera_opening) {
                        (Some(fps), _) => html! {
                            <>
                                <button type="button" data-testid="camera-button" aria-pressed="true"
                                    onclick={p.on_camera.reform(|_| false)}>{ "stop the camera" }</button>
                                <span class="muted" data-testid="camera-fps" data-fps={format!("{fps:.2}")}>
                                    { if fps > 0.0 { format!(" classifying the camera: {fps:.1} frames/s") } else { " classifying the camera…".to_string() } }
                                </span>
                            </>
                        },
                        (None, true) => html! { <span class="muted"><span class="spinner"></span>{ "asking for the camera…" }</span> },
                        (None, false) => html! {
                            <button type="button" data-testid="camera-button" aria-pressed="false"
                                onclick={p.on_camera.reform(|_| true)}>{ "use the camera" }</button>
                        },
                    } }
                </p>
                { if p.busy { html!{ <p class="hint"><span class="spinner"></span>{ "decoding…" }</p> } } else { html!{} } }
            </div>
            <div class="input-row">
                <figure class="preview">
                    { match &p.view {
                        Some(InputView { rgba, side }) => html! {
                            <Raster rgba={rgba.clone()} width={*side} height={*side}
                                class="pixelated input-preview" testid="input-preview"
                                title={format!("the {side}×{side} input tensor the network sees")} />
                        },
                        None => html! { <div class="input-preview empty" data-testid="input-preview">{
                            if p.image.is_some() { "the crop appears once the model is ready" } else { "no image yet" }
                        }</div> },
                    } }
                    <figcaption>
                        { match (&p.image, &p.view) {
                            (Some((name, w, h)), Some(InputView { side, .. })) => format!("{name} ({w}×{h}) → the {side}×{side} crop the network sees"),
                            (Some((name, w, h)), None) => format!("{name} ({w}×{h})"),
                            _ => "The network's input appears here, pixel for pixel.".to_string(),
                        } }
                    </figcaption>
                </figure>
            </div>
            <h3>{ "Samples from the CIFAR-10 test set" }</h3>
            <div class="samples" role="group" aria-label="Samples: arrow keys move, Enter classifies">
                { for samples.into_iter().map(|(class, i, name)| {
                    let stop = name == first_stop;
                    html! {
                        <button type="button" class="sample" data-testid="sample-image" data-name={name.clone()} data-class={class}
                            title={format!("{class} (click to classify)")} tabindex={if stop { "0" } else { "-1" }}
                            aria-current={(current.as_deref() == Some(name.as_str())).then_some("true")}
                            onclick={on_sample.clone()} onkeydown={on_sample_key.clone()}>
                            <img src={format!("samples/{name}")} alt={format!("{class}, sample {}", i + 1)} width="32" height="32" />
                        </button>
                    }
                }) }
            </div>
        </section>
    }
}
