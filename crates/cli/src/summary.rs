//! `resnet summary` (the layer table, like torchinfo's, with sums, pools and concatenations as
//! rows) and `resnet list` (the zoo).

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use resnet_core::{Shape, Summary, ZOO};
use serde::Serialize;

use crate::fmt::{mib, si, thousands, Align, Table};
use crate::{emit, to_json, ArchArgs};

#[derive(Args, Debug)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub arch: ArchArgs,
    /// Input size: `224` (square) or `HxW`, e.g. `240x320`. Default: the size the net was
    /// designed for.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub input: Option<(usize, usize)>,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `224` → (224, 224); `240x320` (or `240×320`) → (240, 320).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let dim = |t: &str| -> Result<usize, String> {
        match t.trim().parse::<usize>() {
            Ok(0) => Err("sizes must be at least 1".into()),
            Ok(n) if n > 1 << 16 => Err(format!("{n} is larger than 65536")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("expected a size like 224 or HxW (e.g. 240x320), got '{s}'")),
        }
    };
    let parts: Vec<&str> = s.split(['x', 'X', '×']).collect();
    match parts.as_slice() {
        [n] => dim(n).map(|n| (n, n)),
        [h, w] => Ok((dim(h)?, dim(w)?)),
        _ => Err(format!("expected a size like 224 or HxW (e.g. 240x320), got '{s}'")),
    }
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    arch: &'a str,
    /// "A" or "B" for the CIFAR ResNets.
    #[serde(skip_serializing_if = "Option::is_none")]
    shortcut: Option<String>,
    /// Trainable parameters in f32 bytes.
    param_bytes: u64,
    #[serde(flatten)]
    summary: &'a Summary,
}

pub fn summary(args: &SummaryArgs) -> Result<ExitCode> {
    let (arch, graph) = args.arch.resolve()?;
    let input = args.input.map(|(h, w)| Shape::new(graph.input.c, h, w));
    let s = graph.summary(input).map_err(|e| {
        let shape = input.unwrap_or(graph.input);
        anyhow!("input {}×{} does not fit {}: {e}", shape.h, shape.w, arch.name)
    })?;
    let shortcut =
        arch.has_shortcut_option().then(|| format!("{:?}", args.arch.shortcut.unwrap_or_default()));
    if args.json {
        let json = SummaryJson { arch: arch.name, shortcut, param_bytes: s.total_params * 4, summary: &s };
        emit(&to_json(&json)?)?;
    } else {
        let title = match &shortcut {
            Some(o) => format!("{} (shortcut option {o})", arch.name),
            None => arch.name.to_string(),
        };
        emit(&render(&title, arch.description, &s))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn shape(s: [usize; 3]) -> String {
    format!("{}×{}×{}", s[0], s[1], s[2])
}

/// The table for people.
pub fn render(title: &str, description: &str, s: &Summary) -> String {
    let mut t = Table::new(&[
        ("Layer", Align::Left),
        ("Kind", Align::Left),
        ("k/s/p", Align::Left),
        ("RF/jump", Align::Right),
        ("Output C×H×W", Align::Right),
        ("Params", Align::Right),
        ("MACs", Align::Right),
        ("Activations", Align::Right),
    ]);
    t.row(vec![
        "input".into(),
        "Input".into(),
        String::new(),
        "1/1".into(),
        shape(s.input),
        String::new(),
        String::new(),
        thousands(s.input.iter().product::<usize>() as u64),
    ]);
    let mut notes: Vec<(String, Vec<String>)> = vec![];
    let mut block: Option<&str> = None;
    for row in &s.layers {
        // A rule between residual blocks / stages makes the structure visible.
        let group = row.block.as_deref().or(row.stage.as_deref());
        if group != block && block.is_some() {
            t.rule();
        }
        block = group;
        let ksp = match (row.kernel, row.stride, row.padding) {
            (Some(k), Some(s), Some(p)) => format!("{k}/{s}/{p}"),
            _ => String::new(),
        };
        let dash = |n: u64| if n == 0 { "–".to_string() } else { thousands(n) };
        // Layers that write no new tensor (in-place ReLU, views) are in parentheses.
        let act = match row.allocates {
            true => thousands(row.activations),
            false => format!("({})", thousands(row.activations)),
        };
        let mut name = match &row.paper {
            Some(paper) => format!("{} ({paper})", row.name),
            None => row.name.clone(),
        };
        if let Some(note) = &row.note {
            // The same remark on several layers is one footnote.
            let k = match notes.iter().position(|(n, _)| n == note) {
                Some(k) => k,
                None => {
                    notes.push((note.clone(), vec![]));
                    notes.len() - 1
                }
            };
            notes[k].1.push(row.name.clone());
            name.push_str(&format!(" [{}]", k + 1));
        }
        t.row(vec![
            name,
            row.kind.to_string(),
            ksp,
            format!("{}/{}", row.rf, row.jump),
            shape(row.out_shape),
            dash(row.params),
            dash(row.macs),
            act,
        ]);
    }
    let mut out = format!("{title}: {description}\n\n");
    out.push_str(&t.render());
    out.push_str(&"═".repeat(t.render().lines().nth(1).map_or(0, |l| l.chars().count())));
    out.push('\n');
    let layers = s.layers.len();
    out.push_str(&format!("Layers:            {layers} (sums, pools and concatenations included)\n"));
    out.push_str(&format!("Input:             {}\n", shape(s.input)));
    out.push_str(&format!(
        "Total params:      {} ({}; {} in f32)\n",
        thousands(s.total_params),
        si(s.total_params),
        mib(s.total_params * 4)
    ));
    out.push_str(&format!(
        "Total MACs:        {} ({}; conv and linear multiply-accumulates)\n",
        thousands(s.total_macs),
        si(s.total_macs)
    ));
    out.push_str(&format!(
        "Activations:       {} values per image, {} in f32\n                   (the input and every \
         new tensor; in-place ReLU and views, in parentheses, are not counted)\n",
        thousands(s.total_activations),
        mib(s.activation_bytes)
    ));
    out.push_str(
        "RF/jump:           receptive field (input pixels one output pixel sees, per side) / input \
         pixels between neighbouring outputs\n",
    );
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for (k, (note, layers)) in notes.iter().enumerate() {
            out.push_str(&format!("  [{}] {note} ({})\n", k + 1, layers.join(", ")));
        }
    }
    out
}

#[derive(Serialize)]
struct ListEntry {
    name: &'static str,
    family: String,
    dataset: String,
    description: &'static str,
    input: [usize; 3],
    classes: usize,
    params: u64,
    macs: u64,
    activation_bytes: u64,
    shortcut_options: bool,
}

#[derive(Serialize)]
struct ListJson {
    architectures: Vec<ListEntry>,
}

pub fn list(args: &ListArgs) -> Result<ExitCode> {
    let mut entries = vec![];
    for arch in ZOO {
        let graph = arch.graph();
        let s = graph.summary(None).map_err(|e| anyhow!("{}: {e}", arch.name))?;
        entries.push(ListEntry {
            name: arch.name,
            family: format!("{:?}", arch.family),
            dataset: format!("{:?}", arch.dataset),
            description: arch.description,
            input: s.input,
            classes: graph.num_classes(),
            params: s.total_params,
            macs: s.total_macs,
            activation_bytes: s.activation_bytes,
            shortcut_options: arch.has_shortcut_option(),
        });
    }
    if args.json {
        return emit(&to_json(&ListJson { architectures: entries })?).map(|_| ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ("Name", Align::Left),
        ("Input", Align::Right),
        ("Classes", Align::Right),
        ("Params", Align::Right),
        ("MACs", Align::Right),
        ("Description", Align::Left),
    ]);
    let mut family = None;
    for e in &entries {
        if family.as_ref().is_some_and(|f| *f != e.family) {
            t.rule();
        }
        family = Some(e.family.clone());
        t.row(vec![
            e.name.to_string(),
            shape(e.input),
            e.classes.to_string(),
            thousands(e.params),
            format!("{} ({})", thousands(e.macs), si(e.macs)),
            e.description.to_string(),
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "\n{} architectures. MACs at the input size shown; `resnet summary --arch NAME` for the layer table.\n",
        entries.len()
    ));
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("224"), Ok((224, 224)));
        assert_eq!(parse_size("240x320"), Ok((240, 320)));
        assert_eq!(parse_size("240×320"), Ok((240, 320)));
        assert!(parse_size("0").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("2x3x4").is_err());
        assert!(parse_size("-5").is_err());
    }
}
