//! Deep links: the URL's hash holds what the page shows — model, layer, channel and sample —
//! as `#model=cifar-resnet56&layer=layer2.0.relu&channel=3&sample=cat-0`, so a link restores
//! the view. The page keeps the hash up to date (replacing the history entry, not adding one).

/// What a link restores; each part is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeepLink {
    pub model: Option<String>,
    /// A layer by its name in the layer table.
    pub layer: Option<String>,
    pub channel: Option<usize>,
    /// A sample by its name without `.jpg` (`cat-0`).
    pub sample: Option<String>,
}

/// Names in links are the zoo's and the layer table's: letters, digits, `.`, `_`, `-`.
fn plain(v: &str) -> bool {
    !v.is_empty() && v.len() <= 100 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl DeepLink {
    /// Reads `#key=value&…` (a leading `#` optional); unknown keys and values with other
    /// characters are ignored, as is a malformed channel.
    pub fn parse(hash: &str) -> DeepLink {
        let mut link = DeepLink::default();
        for pair in hash.trim_start_matches('#').split('&') {
            let Some((key, value)) = pair.split_once('=') else { continue };
            if !plain(value) {
                continue;
            }
            match key {
                "model" => link.model = Some(value.into()),
                "layer" => link.layer = Some(value.into()),
                "channel" => link.channel = value.parse().ok(),
                "sample" => link.sample = Some(value.trim_end_matches(".jpg").into()),
                _ => {}
            }
        }
        link
    }

    /// The hash for this link, `#model=…` (the parts that are set, in a fixed order).
    pub fn to_hash(&self) -> String {
        let parts: Vec<String> = [
            self.model.as_ref().map(|m| format!("model={m}")),
            self.layer.as_ref().map(|l| format!("layer={l}")),
            self.channel.map(|c| format!("channel={c}")),
            self.sample.as_ref().map(|s| format!("sample={s}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("#{}", parts.join("&"))
    }

    pub fn is_empty(&self) -> bool {
        *self == DeepLink::default()
    }
}

/// The link in the page's address.
#[cfg(target_arch = "wasm32")]
pub fn current() -> DeepLink {
    let hash = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    DeepLink::parse(&hash)
}

/// Puts `hash` in the address without a new history entry (and without a `hashchange`).
#[cfg(target_arch = "wasm32")]
pub fn write(hash: &str) {
    if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_parts() {
        let link = DeepLink {
            model: Some("cifar-resnet56".into()),
            layer: Some("layer2.0.relu".into()),
            channel: Some(3),
            sample: Some("cat-0".into()),
        };
        let hash = link.to_hash();
        assert_eq!(hash, "#model=cifar-resnet56&layer=layer2.0.relu&channel=3&sample=cat-0");
        assert_eq!(DeepLink::parse(&hash), link);
        assert_eq!(DeepLink::parse("layer=conv1&x=1").layer.as_deref(), Some("conv1"));
        let bad = DeepLink::parse("#model=<script>&channel=-1&sample=dog-2.jpg&layer");
        assert_eq!(bad, DeepLink { sample: Some("dog-2".into()), ..Default::default() });
        assert!(DeepLink::parse("").is_empty());
        assert_eq!(DeepLink::default().to_hash(), "#");
    }
}
