//! `www/weights/manifest.json` against the files it names: every weights file loads strictly as
//! its architecture, every run trained here has its metrics (one line per epoch trained, the
//! accuracy it states = the last line's) and a snapshot per epoch that reads back with the same
//! metrics, and each architecture's default is its most accurate file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use resnet_core::manifest::{Manifest, Source};
use resnet_core::train::run::parse_metrics;
use resnet_core::train::Snapshot;
use resnet_core::{find_arch, Model, WeightsSource};

fn site(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www").join(path)
}

fn manifest() -> Manifest {
    Manifest::parse(&std::fs::read_to_string(site("weights/manifest.json")).unwrap()).unwrap()
}

#[test]
fn every_weights_file_loads_as_its_architecture() {
    let m = manifest();
    assert!(!m.models.is_empty());
    for e in &m.models {
        let arch = find_arch(&e.arch).unwrap_or_else(|_| panic!("{}: no architecture {}", e.file, e.arch));
        Model::load(arch, WeightsSource::File(&site(&e.file)), &Device::Cpu)
            .unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert!((0.0..=1.0).contains(&e.test_acc), "{}", e.file);
        if let Source::Imported { notice, .. } = &e.source {
            assert!(site(notice).is_file(), "{}: no licence notice {notice}", e.file);
        }
    }
}

#[test]
fn every_run_has_its_metrics_and_a_snapshot_per_epoch() {
    let m = manifest();
    for e in m.models.iter().filter(|e| e.is_ours()) {
        let epochs = e.epochs().unwrap();
        let metrics =
            parse_metrics(&std::fs::read_to_string(site(e.metrics.as_ref().unwrap())).unwrap()).unwrap();
        assert_eq!(metrics.len(), epochs, "{}: one metrics line per epoch", e.file);
        let last = metrics.last().unwrap();
        assert_eq!(last.val_acc, Some(e.test_acc), "{}: the stated accuracy is the last epoch's", e.file);
        for epoch in 0..=epochs {
            let path = site(&e.snapshot(epoch).unwrap());
            let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(bytes.len() < 100_000, "{}: {} bytes", path.display(), bytes.len());
            let s = Snapshot::from_bytes(&bytes).unwrap();
            assert_eq!((s.arch.as_str(), s.epoch), (e.arch.as_str(), epoch));
            assert_eq!(s.metrics.as_ref(), epoch.checked_sub(1).map(|i| &metrics[i]));
        }
    }
}

#[test]
fn each_architecture_defaults_to_its_most_accurate_file() {
    let m = manifest();
    for e in &m.models {
        let d = m.default_for(&e.arch).unwrap();
        assert!(d.test_acc >= e.test_acc, "{} beats the default {}", e.file, d.file);
        assert_eq!(m.for_arch(&e.arch).next(), Some(d));
    }
}

#[test]
fn the_figure6_runs_share_one_schedule_one_run_per_architecture() {
    let m = manifest();
    let schedule = |command: &str| {
        // The command without what differs by design: the net and its run directory.
        let mut words = command.split_whitespace();
        let mut kept = Vec::new();
        while let Some(w) = words.next() {
            match w {
                "--arch" | "--out" => drop(words.next()),
                w => kept.push(w.to_string()),
            }
        }
        kept
    };
    let runs: Vec<_> = m.figure6_runs().collect();
    let Some(first) = runs.first() else { return };
    for (i, e) in runs.iter().enumerate() {
        let (Source::Ours { command, .. }, Source::Ours { command: first_command, .. }) =
            (&e.source, &first.source)
        else {
            unreachable!("runs() are ours")
        };
        assert_eq!(
            schedule(command),
            schedule(first_command),
            "{}: another schedule than {}",
            e.file,
            first.file
        );
        assert!(
            runs[..i].iter().all(|o| o.arch != e.arch),
            "{}: a second Figure 6 run of {}",
            e.file,
            e.arch
        );
    }
    // A longer run of one of its nets is offered, outside the chart.
    for e in m.runs().filter(|e| !e.figure6) {
        assert!(runs.iter().any(|f| f.arch == e.arch), "{}: no Figure 6 run of {}", e.file, e.arch);
    }
}
