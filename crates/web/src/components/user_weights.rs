//! The user's own weights: a PyTorch `.pth`/`.pt` or safetensors file dropped on the page or
//! chosen in the file input. The `File` goes to the worker as a handle on a broadcast channel
//! (no bytes are copied on the page or serialised into a message; the worker reads them once),
//! and this strip shows the reading's progress, then which file the model runs.

use std::cell::RefCell;

use wasm_bindgen::JsValue;
use web_sys::{BroadcastChannel, File};
use yew::prelude::*;

use crate::protocol::{WeightsFileMessage, WEIGHTS_CHANNEL};

/// File names the page treats as weights rather than images (`checkpoint.pth.tar` is what
/// PyTorch's ImageNet example saves).
pub fn is_weights_file(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [".pth", ".pt", ".safetensors", ".ckpt", ".pth.tar"].iter().any(|ext| name.ends_with(ext))
}

/// What the file input accepts besides images.
pub const ACCEPT: &str = ".pth,.pt,.safetensors,.ckpt,.tar";

thread_local! {
    static CHANNEL: RefCell<Option<BroadcastChannel>> = const { RefCell::new(None) };
}

/// Sends `file` to the worker under `token` (the worker's `LoadFile` with the same token picks
/// it up). A structured clone of a `File` is a new handle to the same bytes.
pub fn post_file(token: u64, file: &File) -> Result<(), String> {
    let msg = js_sys::Object::new();
    let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&msg, &k.into(), v).map(|_| ());
    set(WeightsFileMessage::TOKEN, &JsValue::from_f64(token as f64))
        .and_then(|_| set(WeightsFileMessage::FILE, file.as_ref()))
        .map_err(|e| format!("{e:?}"))?;
    CHANNEL.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(BroadcastChannel::new(WEIGHTS_CHANNEL).map_err(|e| format!("{e:?}"))?);
        }
        c.as_ref()
            .expect("made above")
            .post_message(&msg)
            .map_err(|e| format!("cannot send the file to the worker: {e:?}"))
    })
}

/// A token no other tab's page will use (every tab's worker hears the channel).
pub fn new_token() -> u64 {
    (js_sys::Math::random() * 9.0e15) as u64
}

/// A file on its way into the worker.
#[derive(Clone, Debug, PartialEq)]
pub struct FileLoad {
    pub job: u32,
    pub token: u64,
    /// Kept to post again if the worker did not hear it (a handle, not the bytes).
    pub file: File,
    pub name: AttrValue,
    /// Where the file comes from when the user did not pick it (the hub's pretrained weights).
    pub origin: Option<AttrValue>,
    /// Bytes read, of `total`.
    pub done: f64,
    pub total: f64,
}

/// The model runs the user's file.
#[derive(Clone, Debug, PartialEq)]
pub struct UserFile {
    pub name: AttrValue,
    pub origin: Option<AttrValue>,
    pub arch: &'static str,
    /// Where the tensors fit more than one architecture: which was chosen.
    pub note: Option<AttrValue>,
}

#[derive(Properties, PartialEq)]
pub struct Props {
    pub loading: Option<FileLoad>,
    pub current: Option<UserFile>,
}

#[function_component(UserWeights)]
pub fn user_weights(p: &Props) -> Html {
    let loading = p.loading.as_ref().map(|l| {
        let reading = l.done < l.total;
        html! {
            <p class="user-weights loading" data-testid="weights-loading" role="status">
                <span class="spinner"></span>
                { if reading {
                    format!("reading {}: {:.0} of {:.0} MB ", l.name, l.done / 1e6, l.total / 1e6)
                } else {
                    format!("recognising and building {}… ", l.name)
                } }
                <progress data-testid="weights-progress" max={l.total.max(1.0).to_string()} value={l.done.to_string()}></progress>
            </p>
        }
    });
    let current = p.current.as_ref().map(|u| {
        html! {
            <p class="user-weights" data-testid="user-weights" data-arch={u.arch}>
                <strong>{ u.origin.clone().unwrap_or_else(|| format!("your weights: {}", u.name).into()) }</strong>
                { format!(" — recognised as {}", u.arch) }
                { for u.note.as_ref().map(|n| html! { <span class="muted" data-testid="user-weights-note">{ format!(" ({n})") }</span> }) }
            </p>
        }
    });
    if loading.is_none() && current.is_none() {
        return html! {};
    }
    html! { <div class="user-weights-strip">{ for current }{ for loading }</div> }
}
