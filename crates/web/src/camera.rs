//! The webcam: a video stream from getUserMedia, read one frame at a time. The page classifies
//! a frame, and grabs the next only when the answer is on screen, so the camera never queues
//! work in the worker; closing the camera (or dropping it) stops its tracks, which turns the
//! browser's camera indicator off.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{HtmlVideoElement, MediaStream, MediaStreamConstraints, MediaStreamTrack};

use crate::decode::{decode_video, Decoded};

/// The longest side of a frame sent to the worker.
const FRAME_SIDE: u32 = 320;

pub struct Camera {
    stream: MediaStream,
    video: HtmlVideoElement,
}

fn js_err(e: JsValue) -> String {
    // getUserMedia rejects with a DOMException: its name says why (NotAllowedError, …).
    let name = js_sys::Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string());
    let message = js_sys::Reflect::get(&e, &"message".into()).ok().and_then(|n| n.as_string());
    match (name, message) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (Some(n), _) => n,
        _ => format!("{e:?}"),
    }
}

impl Camera {
    /// Asks for the camera (the browser asks the user) and starts its video.
    pub async fn open() -> Result<Camera, String> {
        let devices = gloo::utils::window()
            .navigator()
            .media_devices()
            .map_err(|_| "this browser gives the page no camera (it needs https or localhost)".to_string())?;
        let constraints = MediaStreamConstraints::new();
        constraints.set_video(&JsValue::TRUE);
        let promise = devices.get_user_media_with_constraints(&constraints).map_err(js_err)?;
        let stream: MediaStream = JsFuture::from(promise)
            .await
            .map_err(|e| format!("the camera is not available ({})", js_err(e)))?
            .unchecked_into();
        let video: HtmlVideoElement =
            gloo::utils::document().create_element("video").map_err(js_err)?.unchecked_into();
        video.set_muted(true);
        video.set_attribute("playsinline", "").map_err(js_err)?;
        video.set_src_object(Some(&stream));
        let camera = Camera { stream, video };
        let played = camera.video.play().map_err(js_err)?;
        JsFuture::from(played)
            .await
            .map_err(|e| format!("the camera's video does not play ({})", js_err(e)))?;
        Ok(camera)
    }

    /// The current frame.
    pub async fn frame(&self) -> Result<Decoded, String> {
        decode_video(&self.video, "camera", FRAME_SIDE).await
    }

    fn stop(&self) {
        for track in self.stream.get_tracks().iter() {
            if let Ok(t) = track.dyn_into::<MediaStreamTrack>() {
                t.stop();
            }
        }
        self.video.set_src_object(None);
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}
