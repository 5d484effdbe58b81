//! The weights the explorer offers (`www/weights/manifest.json`): per file its architecture,
//! where it comes from (trained here, with the command, commit and epochs; or imported, with its
//! origin and licence), its accuracy on the shared CIFAR-10 test set, and for the runs trained
//! here the paths of their metrics and snapshots. Paths are relative to the site's root. The page
//! embeds it; a test checks every file it names against it.

use serde::{Deserialize, Serialize};

/// Where a weights file comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Trained by this project with `resnet train`.
    Ours {
        command: String,
        /// The commit of the code that trained it.
        commit: String,
        /// Epochs trained, of the run's schedule.
        epochs: usize,
        schedule_epochs: usize,
    },
    /// Imported from elsewhere, under its licence.
    Imported {
        origin: String,
        licence: String,
        /// The licence's text, shipped beside the weights.
        notice: String,
    },
}

/// One weights file the page offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub arch: String,
    pub file: String,
    pub source: Source,
    /// Accuracy on the shared CIFAR-10 test set (the JPEGs), 0..1.
    pub test_acc: f64,
    /// The run's `metrics.jsonl`, for a model trained here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The run's snapshot folder (`epoch-NNN.safetensors`, 0..=epochs), for a model trained here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<String>,
    /// One of the runs of the "Why residual?" chart (`scripts/train-figure6`: one schedule for
    /// all, one run per architecture). Longer runs of the same nets ship beside them, outside it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub figure6: bool,
}

impl Entry {
    pub fn is_ours(&self) -> bool {
        matches!(self.source, Source::Ours { .. })
    }

    /// The path of epoch `epoch`'s snapshot, where the run has them.
    pub fn snapshot(&self, epoch: usize) -> Option<String> {
        let dir = self.snapshots.as_deref()?.trim_end_matches('/');
        Some(format!("{dir}/{}", crate::train::Snapshot::file_name(epoch)))
    }

    /// Epochs the run trained (its snapshots are 0..=this), for a model trained here.
    pub fn epochs(&self) -> Option<usize> {
        match self.source {
            Source::Ours { epochs, .. } => Some(epochs),
            Source::Imported { .. } => None,
        }
    }

    /// How the page names it beside the architecture.
    pub fn label(&self) -> String {
        let acc = self.test_acc * 100.0;
        match &self.source {
            Source::Ours { epochs, schedule_epochs, .. } if epochs < schedule_epochs => {
                format!(
                    "trained here, {epochs} of {schedule_epochs} epochs so far ({acc:.1} % on CIFAR-10 test)"
                )
            }
            Source::Ours { epochs, .. } => {
                format!("trained here, {epochs} epochs ({acc:.1} % on CIFAR-10 test)")
            }
            Source::Imported { origin, .. } => {
                format!("imported from {origin} ({acc:.1} % on CIFAR-10 test)")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub models: Vec<Entry>,
}

impl Manifest {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("the weights manifest is unreadable: {e}"))
    }

    /// Every file offered for `arch`, the default first.
    pub fn for_arch<'a>(&'a self, arch: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let mut all: Vec<&Entry> = self.models.iter().filter(|e| e.arch == arch).collect();
        if let Some(d) = self.default_for(arch) {
            all.sort_by_key(|e| !std::ptr::eq(*e, d));
        }
        all.into_iter()
    }

    /// The file the page loads for `arch`: the one with the best test accuracy (ours, when it
    /// beats the imported one).
    pub fn default_for(&self, arch: &str) -> Option<&Entry> {
        self.models.iter().filter(|e| e.arch == arch).max_by(|a, b| a.test_acc.total_cmp(&b.test_acc))
    }

    pub fn find(&self, file: &str) -> Option<&Entry> {
        self.models.iter().find(|e| e.file == file)
    }

    /// The runs trained here with their metrics: what the replay offers.
    pub fn runs(&self) -> impl Iterator<Item = &Entry> {
        self.models.iter().filter(|e| e.is_ours() && e.metrics.is_some())
    }

    /// The runs of the "Why residual?" chart, trained with one schedule.
    pub fn figure6_runs(&self) -> impl Iterator<Item = &Entry> {
        self.runs().filter(|e| e.figure6)
    }
}
