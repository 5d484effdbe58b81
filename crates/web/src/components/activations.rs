//! Panel 3: one layer's activation maps, every channel, on one colour scale; click one to see it
//! enlarged over the input. For a residual block: x, F(x), the shortcut and H(x) = relu(F(x) + x)
//! side by side, on a shared scale, so the sum can be read off the pictures.

use std::collections::HashMap;

use gloo::timers::callback::Timeout;
use resnet_core::spec::{Block, Graph, ShortcutKind};
use resnet_core::Summary;
use yew::prelude::*;

use super::channel_grid::ChannelGrid;
use super::zoom::UnitZoom;
use super::{ColourBar, InputView, Raster, Shared};
use crate::grid::TILE;
use crate::protocol::FeatureMap;
use crate::viz::thousands;
use crate::viz::{map_rgba, vector_strip, Scale, TileAtlas, VectorStrip};

/// The maps fetched so far, by node.
pub type Maps = Shared<HashMap<usize, Shared<FeatureMap>>>;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub graph: Shared<Graph>,
    pub summary: Shared<Summary>,
    pub selected: usize,
    pub maps: Maps,
    /// `maps` are the last run's: a new one is on its way.
    #[prop_or_default]
    pub stale: bool,
    /// The input crop, for the overlay.
    pub view: Option<InputView>,
    pub has_result: bool,
    pub on_select: Callback<usize>,
    /// The channel shown enlarged (and in the residual view).
    pub channel: usize,
    pub on_channel: Callback<usize>,
    pub erf: Option<Shared<resnet_core::explain::Erf>>,
    pub erf_busy: bool,
    /// A pixel (`y`, `x`) of the enlarged channel was clicked.
    pub on_unit: Callback<(usize, usize)>,
    /// The dataset's class names: the logits are labelled with them.
    pub labels: Option<&'static [&'static str]>,
}

/// What the panel draws for one layer: a tile per channel, or, for a vector (C×1×1: flatten,
/// global pools, linear layers, the logits), every value in one canvas.
enum Drawn {
    Tiles(Scale, Shared<TileAtlas>),
    /// The strip, and its pixels (taken out of it, in the handle `Raster` compares).
    Vector(Scale, Shared<VectorStrip>, Shared<Vec<u8>>),
}

/// The channel maps of one layer as RGBA tiles on the layer's own scale; a vector as one strip.
fn draw(map: &FeatureMap) -> Drawn {
    let scale = Scale::fit(&map.data);
    if map.shape[1] * map.shape[2] == 1 {
        let mut strip = vector_strip(&map.data, scale);
        let rgba = Shared::new(std::mem::take(&mut strip.rgba));
        return Drawn::Vector(scale, Shared::new(strip), rgba);
    }
    Drawn::Tiles(scale, Shared::new(TileAtlas::new(&map.data, map.shape, scale, TILE as usize)))
}

#[function_component(Activations)]
pub fn activations(p: &Props) -> Html {
    let map = p.maps.get(&p.selected).cloned();
    // Colouring every channel is the expensive part: once per map, not per render, and in a
    // task of its own: a VGG layer's 3.2 M values arriving from the worker and drawn in the same
    // task held the main thread for ~140 ms.
    let drawn = use_state(|| None::<(Shared<FeatureMap>, Shared<Drawn>)>);
    {
        let drawn = drawn.clone();
        use_effect_with(map.clone(), move |m| {
            let pending = m.clone().filter(|m| drawn.as_ref().is_none_or(|(d, _)| d != m));
            let timer =
                pending.map(|m| Timeout::new(0, move || drawn.set(Some((m.clone(), Shared::new(draw(&m)))))));
            move || drop(timer)
        });
    }
    let grid = drawn.as_ref().filter(|(d, _)| Some(d) == map.as_ref()).map(|(_, g)| g.clone());
    let grid = grid.as_deref();
    let shapes = p.summary.node_shapes();
    let [c, h, w] = shapes[p.selected];
    let ch = p.channel.min(c.saturating_sub(1));
    // The enlarged channel, coloured on the layer's scale.
    let scale = match grid {
        Some(Drawn::Tiles(s, _)) => Some(*s),
        _ => None,
    };
    let big = use_memo((map.clone(), ch, scale), |(m, ch, scale)| match (m, scale) {
        (Some(m), Some(scale)) if *ch < m.shape[0] => Some(Shared::new(map_rgba(m.channel(*ch), *scale))),
        _ => None,
    });
    let g = &p.graph;
    let on_layer = {
        let cb = p.on_select.clone();
        Callback::from(move |e: Event| {
            let sel: web_sys::HtmlSelectElement = e.target_unchecked_into();
            if let Ok(n) = sel.value().parse() {
                cb.emit(n);
            }
        })
    };
    // The select shows the selection whatever changed it: once a user has moved through it, a
    // new `selected` attribute no longer moves it, so its value is set.
    let select_ref = use_node_ref();
    {
        let r = select_ref.clone();
        use_effect_with((p.selected, p.graph.clone()), move |(sel, _)| {
            if let Some(s) = r.cast::<web_sys::HtmlSelectElement>() {
                if s.value() != sel.to_string() {
                    s.set_value(&sel.to_string());
                }
            }
        });
    }
    let node = &g.nodes[p.selected];
    let body = match (&map, grid) {
        (Some(_), Some(Drawn::Tiles(scale, atlas))) => {
            let label = format!(
                "Channel of {}: {c} maps of {h}×{w}, values {:.3} to {:.3}; arrow keys choose one",
                node.name,
                scale.lo(),
                scale.hi
            );
            html! {
                <>
                    { if p.selected == 0 && c == 3 { html! {
                        <p class="muted" data-testid="input-channels">{ "The input tensor: channels R, G and B, each normalised as (value / 255 − mean) / std, so 0 is the dataset's average colour." }</p>
                    } } else { html! {} } }
                    <p class="muted">
                        { format!("{} channels of {h}×{w} · ", c) }
                        <ColourBar scale={*scale} />
                        { if scale.signed { " (signed: blue < 0 < red)" } else { " (non-negative)" } }
                    </p>
                    <div class="activation-layout">
                        <ChannelGrid atlas={atlas.clone()} node={p.selected} label={label} active={ch}
                            on_channel={p.on_channel.clone()} input_rgb={p.selected == 0 && c == 3} />
                        { match ((*big).clone(), &p.view) {
                            (Some(rgba), Some(view)) if h > 1 => html! {
                                <UnitZoom graph={p.graph.clone()} node={p.selected} channel={ch} map={rgba}
                                    width={w} height={h} input={view.clone()} erf={p.erf.clone()}
                                    erf_busy={p.erf_busy} on_unit={p.on_unit.clone()} />
                            },
                            _ => html! {},
                        } }
                    </div>
                </>
            }
        }
        (Some(_), Some(Drawn::Vector(scale, strip, rgba))) => html! {
            <>
                <p class="muted">
                    { format!("a vector of {} values · ", thousands(c as u64)) }
                    <ColourBar scale={*scale} />
                    { if scale.signed { " (signed: blue < 0 < red)" } else { " (non-negative)" } }
                </p>
                { match p.labels.filter(|l| p.selected == g.output() && l.len() == c) {
                    Some(labels) if c <= 20 => html! { <Logits values={strip.values.clone()} labels={labels} node={p.selected} /> },
                    labels => html! { <Vector strip={strip.clone()} rgba={rgba.clone()} node={p.selected} name={AttrValue::from(node.name.clone())} labels={labels} /> },
                } }
            </>
        },
        (Some(_), _) => html! { <p class="muted"><span class="spinner"></span>{ "drawing the maps…" }</p> },
        _ if p.has_result => {
            html! { <p class="muted"><span class="spinner"></span>{ "fetching the maps from the worker…" }</p> }
        }
        _ => html! { <p class="muted">{ "Classify an image to see what every layer makes of it." }</p> },
    };
    html! {
        <section class={classes!("panel", "activations", p.stale.then_some("busy"))} aria-label="Activation maps"
            data-busy={p.stale.to_string()} aria-busy={p.stale.to_string()}>
            <h2>{ "Activation maps" }</h2>
            <label>{ "Layer " }
                <select data-testid="layer-select" ref={select_ref} onchange={on_layer}>
                    { for g.nodes.iter().enumerate().map(|(i, n)| {
                        let [c, h, w] = shapes[i];
                        html! {
                            <option value={i.to_string()} selected={i == p.selected}>
                                { match &n.paper {
                                    Some(paper) => format!("{} — {} ({paper}) — {c}×{h}×{w}", n.name, n.op.kind()),
                                    None => format!("{} — {} — {c}×{h}×{w}", n.name, n.op.kind()),
                                } }
                            </option>
                        }
                    }) }
                </select>
            </label>
            { body }
            <ResidualView graph={p.graph.clone()} summary={p.summary.clone()} selected={p.selected}
                channel={ch} maps={p.maps.clone()} has_result={p.has_result} />
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct LogitsProps {
    values: Vec<f32>,
    labels: &'static [&'static str],
    node: usize,
}

/// The logits of a net with a few classes, one labelled bar each (signed, on one scale).
#[function_component(Logits)]
fn logits(p: &LogitsProps) -> Html {
    let top = p.values.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    html! {
        <figure class="logits" data-testid="logits" data-node={p.node.to_string()}>
            <table>
                <tbody>
                    { for p.values.iter().zip(p.labels).map(|(&v, &name)| html! {
                        <tr data-testid="logit-row" data-class={name}>
                            <th scope="row">{ name }</th>
                            <td class="logit-bar">
                                <span class={classes!("bar", (v < 0.0).then_some("negative"))}
                                    style={format!("width: {:.1}%; {}", 50.0 * v.abs() / top, if v < 0.0 { format!("margin-left: {:.1}%", 50.0 - 50.0 * v.abs() / top) } else { "margin-left: 50%".into() })}></span>
                            </td>
                            <td class="num">{ format!("{v:.3}") }</td>
                        </tr>
                    }) }
                </tbody>
            </table>
            <figcaption>{ "The logits, one per class: softmax turns them into the prediction's percentages (the largest wins)." }</figcaption>
        </figure>
    }
}

#[derive(Properties, PartialEq)]
struct VectorProps {
    strip: Shared<VectorStrip>,
    rgba: Shared<Vec<u8>>,
    node: usize,
    name: AttrValue,
    /// Class names when the vector is the logits.
    labels: Option<&'static [&'static str]>,
}

/// A vector layer in one canvas: its values in order, left to right and top to bottom, on the
/// layer's colour scale; pointing at one shows its index and value.
#[function_component(Vector)]
fn vector(p: &VectorProps) -> Html {
    let hover = use_state(|| None::<usize>);
    let s = &p.strip;
    let on_move = {
        let (hover, cols, rows, n) = (hover.clone(), s.cols, s.rows, s.values.len());
        Callback::from(move |e: MouseEvent| {
            let el: web_sys::HtmlElement = e.target_unchecked_into();
            let (w, h) = (el.client_width().max(1) as usize, el.client_height().max(1) as usize);
            let x = (e.offset_x().max(0) as usize * cols / w).min(cols - 1);
            let y = (e.offset_y().max(0) as usize * rows / h).min(rows - 1);
            let i = y * cols + x;
            hover.set((i < n).then_some(i));
        })
    };
    let on_leave = {
        let hover = hover.clone();
        Callback::from(move |_: MouseEvent| hover.set(None))
    };
    let range = format!("range {:.3} … {:.3}", s.min, s.max);
    let layout = if s.rows == 1 {
        format!("{} values in order, left to right", thousands(s.values.len() as u64))
    } else {
        format!(
            "{} values in order, {} per row, left to right and top to bottom",
            thousands(s.values.len() as u64),
            s.cols
        )
    };
    let label = format!("{}: {layout}; {range}", p.name);
    html! {
        <figure class="activation-vector" data-testid="activation-vector" data-node={p.node.to_string()}
            data-values={s.values.len().to_string()}>
            <div onmousemove={on_move} onmouseleave={on_leave}>
                <Raster rgba={p.rgba.clone()} width={s.cols as u32} height={s.rows as u32}
                    class={classes!("pixelated", (s.rows == 1).then_some("one-row"))} title={label.clone()} />
            </div>
            <figcaption>
                { format!("{layout} · {range}") }
                <br/>
                <span data-testid="vector-value">{ match *hover {
                    Some(i) => match p.labels.and_then(|l| l.get(i)) {
                        Some(name) => format!("value {i} ({name}): {:.4}", s.values[i]),
                        None => format!("value {i}: {:.4}", s.values[i]),
                    },
                    None => "point at the strip to read a value".to_string(),
                } }</span>
            </figcaption>
        </figure>
    }
}

/// One pane of the residual view: its title, what it is, and the node it shows.
type Pane = (String, String, usize);

/// x, F(x), the shortcut (when it has a node) and H(x) of a residual block; none for a block
/// without a sum (Inception).
fn panes(b: &Block) -> Vec<Pane> {
    let (Some(residual), Some(_add)) = (b.residual, b.add) else { return vec![] };
    let mut panes: Vec<Pane> = vec![("x".into(), format!("input of {}", b.name), b.input)];
    panes.push(("F(x)".into(), "residual branch".into(), residual));
    if let Some(&s) = b.shortcut_nodes.last() {
        let what = match b.shortcut {
            ShortcutKind::ZeroPad => "option A: subsample, zero-pad channels",
            ShortcutKind::Projection => "projection: 1×1 conv + BN",
            _ => "shortcut",
        };
        panes.push(("shortcut(x)".into(), what.into(), s));
    }
    let sum = match b.shortcut {
        ShortcutKind::Identity => "H(x) = relu(F(x) + x)",
        _ => "H(x) = relu(F(x) + shortcut(x))",
    };
    panes.push((sum.into(), "block output".into(), b.output));
    panes
}

/// Option A's zero channels: `pad` in front, the input's `inputs` channels, zeros after, of
/// `outputs` in all (`ops::shortcut_a`).
#[derive(Clone, Copy, PartialEq)]
pub struct ZeroPad {
    pub pad: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl ZeroPad {
    pub fn of(b: &Block, shapes: &[[usize; 3]]) -> Option<ZeroPad> {
        let (inputs, outputs) = (shapes[b.input][0], shapes[b.output][0]);
        (b.shortcut == ShortcutKind::ZeroPad && outputs > inputs).then_some(ZeroPad {
            pad: (outputs - inputs) / 2,
            inputs,
            outputs,
        })
    }

    /// The input channel output channel `ch` carries; `None` for a zero channel.
    pub fn source(&self, ch: usize) -> Option<usize> {
        ch.checked_sub(self.pad).filter(|&s| s < self.inputs)
    }

    /// "0–7 and 24–31".
    pub fn zero_ranges(&self) -> String {
        let after = self.pad + self.inputs;
        match (self.pad, after < self.outputs) {
            (0, true) => format!("{after}–{}", self.outputs - 1),
            (p, true) => format!("{}–{} and {after}–{}", 0, p - 1, self.outputs - 1),
            (p, false) => format!("0–{}", p - 1),
        }
    }
}

/// Channel `ch` of `m`; none where the map has fewer channels (x before a zero-pad shortcut).
fn channel(m: &FeatureMap, ch: usize) -> Option<&[f32]> {
    (ch < m.shape[0]).then(|| m.channel(ch))
}

/// Channel `s` of `m`, if there is one to show.
fn pick(m: &FeatureMap, s: Option<usize>) -> Option<&[f32]> {
    s.and_then(|s| channel(m, s))
}

#[derive(Properties, PartialEq)]
pub struct ResidualProps {
    pub graph: Shared<Graph>,
    pub summary: Shared<Summary>,
    pub selected: usize,
    pub channel: usize,
    pub maps: Maps,
    pub has_result: bool,
}

/// x → F(x) → H(x) for the block holding the selected layer.
#[function_component(ResidualView)]
fn residual_view(p: &ResidualProps) -> Html {
    let g = &p.graph;
    let ch = p.channel;
    let block = g.nodes[p.selected].block.map(|b| &g.blocks[b]);
    let panes = block.map(panes).unwrap_or_default();
    let maps: Vec<Option<Shared<FeatureMap>>> =
        panes.iter().map(|(_, _, n)| p.maps.get(n).cloned()).collect();
    // One scale for all panes: F(x) + x = H(x) before the ReLU can be compared by eye. Coloured
    // once per set of maps and channel; `None` until every pane's map has arrived.
    let shapes = p.summary.node_shapes();
    let g_names: Vec<&str> = p.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let zero_pad = block.and_then(|b| ZeroPad::of(b, &shapes));
    // The channel each pane shows: output channel `ch` everywhere, except x before an option-A
    // shortcut, where it is the input channel that `ch` carries (none for a zero channel).
    let sources: Vec<Option<usize>> = panes
        .iter()
        .map(|(_, _, n)| match (zero_pad, block) {
            (Some(z), Some(b)) if *n == b.input => z.source(ch),
            _ => Some(ch),
        })
        .collect();
    let drawn = use_memo((maps, sources.clone()), |(maps, sources)| {
        let maps: Vec<&Shared<FeatureMap>> = maps.iter().map(Option::as_ref).collect::<Option<_>>()?;
        let all: Vec<f32> =
            maps.iter().zip(sources).filter_map(|(m, &s)| pick(m, s)).flatten().copied().collect();
        let scale = Scale::fit(&all);
        let tiles: Vec<Result<Shared<Vec<u8>>, usize>> = maps
            .iter()
            .zip(sources)
            .map(|(m, &s)| pick(m, s).map(|v| Shared::new(map_rgba(v, scale))).ok_or(m.shape[0]))
            .collect();
        Some((scale, tiles))
    });
    let Some(b) = block.filter(|_| !panes.is_empty()) else { return html! {} };
    let Some((scale, tiles)) = drawn.as_ref() else {
        return html! {
            <div class="residual-view" data-testid="residual-view">
                <h3>{ format!("Residual block {}", b.name) }</h3>
                <p class="muted">{ if p.has_result { "fetching x, F(x) and H(x)…" } else { "Classify an image to see x, F(x) and H(x)." } }</p>
            </div>
        };
    };
    let identity = b.shortcut == ShortcutKind::Identity;
    let padding = zero_pad.filter(|z| z.source(ch).is_none());
    let intro = match (identity, zero_pad, b.shortcut) {
        (true, _, _) => "Identity shortcut: the block only has to learn the change F(x); H(x) = relu(F(x) + x). ".to_string(),
        (_, Some(z), _) => format!(
            "The shape changes here: option A's shortcut takes every other pixel of x and adds zero channels ({} of {}), so H(x) = relu(F(x) + shortcut(x)). Channel {ch} {}. ",
            z.zero_ranges(),
            z.outputs,
            match z.source(ch) {
                Some(s) => format!("carries x's channel {s}"),
                None => "is one of the zero channels: the shortcut adds nothing there, H(x) = relu(F(x))".into(),
            }
        ),
        (_, None, ShortcutKind::Projection) => "The shape changes here: the shortcut is a 1×1 conv + BN over every channel of x, so H(x) = relu(F(x) + shortcut(x)). ".into(),
        _ => "The shape changes here, so x goes through the shortcut first: H(x) = relu(F(x) + shortcut(x)). ".into(),
    };
    html! {
        <div class="residual-view" data-testid="residual-view">
            <h3>{ format!("Residual block {} · channel {ch}", b.name) }</h3>
            <p class="muted">
                <span data-testid="residual-caption">{ intro }</span>
                <ColourBar scale={*scale} />
            </p>
            <div class="residual-row">
                { for panes.iter().zip(tiles).enumerate().map(|(i, ((title, what, node), tile))| {
                    let [_, h, w] = shapes[*node];
                    let is_x = *node == b.input;
                    let shortcut_pane = b.shortcut_nodes.last() == Some(node);
                    let pane = match tile {
                        Ok(_) if shortcut_pane && padding.is_some() => html! {
                            <div class="zero-channel" data-testid="zero-channel">{ format!("channel {ch} of shortcut(x) is zero padding") }</div>
                        },
                        Ok(rgba) => html! { <Raster rgba={rgba.clone()} width={w as u32} height={h as u32} class="pixelated"
                            label={format!("{title}: {}, channel {ch}", g_names[*node])} /> },
                        Err(_) => html! { <div class="zero-channel" data-testid="zero-channel">{ format!("no channel of x feeds channel {ch}: the shortcut pads it with zeros") }</div> },
                    };
                    let shown = match (is_x, zero_pad.and_then(|z| z.source(ch))) {
                        (true, Some(s)) if s != ch => format!(" · channel {s}, which feeds channel {ch}"),
                        _ => String::new(),
                    };
                    let op = match i { 0 => "", _ if i == panes.len() - 1 => "=", 1 => "→", _ => "+" };
                    html! {
                        <>
                            { if op.is_empty() { html!{} } else { html!{ <span class="op">{ op }</span> } } }
                            <figure>
                                { pane }
                                <figcaption><strong>{ title.clone() }</strong><br/>{ format!("{what} · {}{shown}", g.nodes[*node].name) }<br/>{ format!("{}×{}×{}", shapes[*node][0], h, w) }</figcaption>
                            </figure>
                        </>
                    }
                }) }
            </div>
        </div>
    }
}
