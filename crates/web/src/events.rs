//! Page-wide inputs that no panel owns: an image dropped or pasted anywhere on the page, and
//! panics, the page's own (Rust's hook) and the worker's (a broadcast channel, since a panicking
//! worker cannot answer its bridge). Each ends up as a message to the app.

use std::cell::RefCell;

use gloo::events::{EventListener, EventListenerOptions};
use wasm_bindgen::JsCast;
use web_sys::{BroadcastChannel, DragEvent, File};
use yew::Callback;

use crate::worker::PANIC_CHANNEL;

thread_local! {
    /// Where a panic on the page goes: the error banner.
    static PANIC_SINK: RefCell<Option<Callback<String>>> = const { RefCell::new(None) };
}

/// Called once at start-up, before the app exists: panics before `set_panic_sink` are dropped.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("internal error: {info}");
        let sink = PANIC_SINK.with(|s| s.borrow().clone());
        if let Some(cb) = sink {
            cb.emit(msg);
        }
    }));
}

pub fn set_panic_sink(cb: Callback<String>) {
    PANIC_SINK.with(|s| *s.borrow_mut() = Some(cb));
}

fn file_of(dt: Option<web_sys::DataTransfer>) -> Option<File> {
    dt?.files()?.get(0)
}

/// A replay file by its name (`epoch-NNN.safetensors`, as `resnet train --snapshots` writes):
/// dropped on the page, it goes to the replay rather than in as weights.
pub fn is_snapshot_file(name: &str) -> bool {
    name.strip_prefix("epoch-")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A drop of several snapshot files (a run's whole folder, selected): all of them.
fn snapshots_of(dt: &web_sys::DataTransfer) -> Option<Vec<File>> {
    let list = dt.files()?;
    let files: Vec<File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
    (files.len() > 1 && files.iter().all(|f| is_snapshot_file(&f.name()))).then_some(files)
}

/// Files dropped or pasted anywhere go to `on_file` (the first of them), several snapshot files
/// dropped together to `on_snapshots`; a drop without a file to `on_error`. The listeners live as
/// long as the returned handles.
pub fn listen_for_files(
    on_file: Callback<File>,
    on_snapshots: Callback<Vec<File>>,
    on_error: Callback<String>,
) -> Vec<EventListener> {
    let doc = gloo::utils::document();
    // Without preventDefault on dragover the browser opens the dropped file itself.
    let opts = EventListenerOptions::enable_prevent_default();
    let over = EventListener::new_with_options(&doc, "dragover", opts, |e| e.prevent_default());
    let drop = {
        let on_file = on_file.clone();
        EventListener::new_with_options(&doc, "drop", opts, move |e| {
            e.prevent_default();
            let dt = e.dyn_ref::<DragEvent>().and_then(|d| d.data_transfer());
            if let Some(files) = dt.as_ref().and_then(snapshots_of) {
                return on_snapshots.emit(files);
            }
            match file_of(dt) {
                Some(f) => on_file.emit(f),
                None => on_error.emit("the drop held no file".into()),
            }
        })
    };
    let paste = EventListener::new(&doc, "paste", move |e| {
        let Some(dt) = e.dyn_ref::<web_sys::ClipboardEvent>().and_then(|c| c.clipboard_data()) else {
            return;
        };
        if let Some(f) = file_of(Some(dt)) {
            on_file.emit(f);
        }
    });
    vec![over, drop, paste]
}

/// Whether a drag with files is over the page: `true` on dragenter, `false` once it leaves the
/// window or is dropped (for the drop zone's feedback).
pub fn listen_for_drags(cb: Callback<bool>) -> Vec<EventListener> {
    let doc = gloo::utils::document();
    let enter = {
        let cb = cb.clone();
        EventListener::new(&doc, "dragenter", move |_| cb.emit(true))
    };
    let leave = {
        let cb = cb.clone();
        EventListener::new(&doc, "dragleave", move |e| {
            // Leaving one element for another fires too; only leaving the page has no target.
            let left = e.dyn_ref::<DragEvent>().is_none_or(|d| d.related_target().is_none());
            if left {
                cb.emit(false);
            }
        })
    };
    let drop = EventListener::new(&doc, "drop", move |_| cb.emit(false));
    vec![enter, leave, drop]
}

/// Links followed in the same tab (the hash edited, a link to another view clicked).
pub fn listen_for_links(cb: Callback<crate::link::DeepLink>) -> EventListener {
    EventListener::new(&gloo::utils::window(), "hashchange", move |_| cb.emit(crate::link::current()))
}

/// The worker's panic messages (it posts them on `PANIC_CHANNEL` from its hook).
pub fn listen_for_worker_panics(cb: Callback<String>) -> Option<(BroadcastChannel, EventListener)> {
    let ch = BroadcastChannel::new(PANIC_CHANNEL).ok()?;
    let l = EventListener::new(&ch, "message", move |e| {
        let text =
            e.dyn_ref::<web_sys::MessageEvent>().and_then(|m| m.data().as_string()).unwrap_or_default();
        cb.emit(text);
    });
    Some((ch, l))
}
