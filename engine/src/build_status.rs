//! What a running `inferscope build-variants` is doing, as a small JSON file beside the models
//! (`models/build-status.json`).
//!
//! The builder and the server are separate processes (`./x run` serves the baseline at once and builds
//! the variants in the background), so the build's progress travels through the models folder, the
//! same place its results do: the builder rewrites this file (atomically, a few times a second at
//! most) as its steps advance, and the server reads it when the page asks for the variant list — a
//! variant that is not loaded yet shows the build's step on its card, and the page labels the times it
//! measures meanwhile as measured under contention. A file left by a builder that died says so
//! ([`BuildStatus::is_stale`]): the writer's process id no longer exists.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the models folder.
pub const FILE: &str = "build-status.json";

/// A build as its writer last described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildStatus {
    /// Process id of the builder (to tell a running build from one that died).
    pub pid: u32,
    /// When the build started and when this file was last written, seconds since the Unix epoch.
    pub started_unix: u64,
    pub updated_unix: u64,
    /// Every variant this build writes, in the order it builds them.
    pub variants: Vec<VariantBuild>,
    /// The step under way (the terminal's current progress bar), if any.
    pub step: Option<Step>,
    /// Set when the build is over: `Ok(())` or its error.
    pub finished: Option<Result<(), String>>,
}

/// One variant's place in the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantBuild {
    /// Registry id, e.g. `resnet50-int8`.
    pub id: String,
    pub state: VariantState,
    /// Seconds since the build of this variant started (while building) or what it took (written).
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VariantState {
    /// Waits for the variants before it.
    Queued,
    /// Its steps are under way.
    Building,
    /// Its file is written (the server loads it from there).
    Written,
}

/// A step with a known length (a progress bar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub what: String,
    pub done: u64,
    pub len: u64,
}

impl Step {
    /// Fraction done, 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            (self.done as f64 / self.len as f64).min(1.0)
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl BuildStatus {
    /// A build by this process of the variants `ids`, all queued.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let now = now_unix();
        BuildStatus {
            pid: std::process::id(),
            started_unix: now,
            updated_unix: now,
            variants: ids
                .into_iter()
                .map(|id| VariantBuild {
                    id: id.to_string(),
                    state: VariantState::Queued,
                    seconds: None,
                })
                .collect(),
            step: None,
            finished: None,
        }
    }

    pub fn path(models_dir: &Path) -> PathBuf {
        models_dir.join(FILE)
    }

    /// The status in `models_dir`, if a build wrote one (an unreadable file counts as none).
    pub fn read(models_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(models_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the status into `models_dir` atomically (a temporary file renamed into place), so a
    /// reader never sees half a file.
    pub fn write(&self, models_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(models_dir);
        let tmp = models_dir.join(format!(".{FILE}.{}.tmp", self.pid));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// The entry of variant `id`, if this build makes it.
    pub fn variant(&self, id: &str) -> Option<&VariantBuild> {
        self.variants.iter().find(|v| v.id == id)
    }

    /// Marks `id` as `state` (`seconds`: since it started, or what it took).
    pub fn set(&mut self, id: &str, state: VariantState, seconds: Option<f64>) {
        if let Some(v) = self.variants.iter_mut().find(|v| v.id == id) {
            v.state = state;
            v.seconds = seconds;
        }
    }

    /// Whether the build is still running: not finished, and its process is alive (on systems with
    /// `/proc`; elsewhere, written in the last ten minutes).
    pub fn is_running(&self) -> bool {
        self.finished.is_none() && !self.is_stale()
    }

    /// Not finished, but its writer is gone: the build died or was stopped.
    pub fn is_stale(&self) -> bool {
        if self.finished.is_some() {
            return false;
        }
        let proc = Path::new("/proc");
        if proc.join("self").exists() {
            !proc.join(self.pid.to_string()).exists()
        } else {
            now_unix().saturating_sub(self.updated_unix) > 600
        }
    }

    /// One line for a variant's card: where the build stands for `id`, or `None` when this build does
    /// not make it or has written it.
    pub fn describe(&self, id: &str) -> Option<String> {
        let v = self.variant(id)?;
        if self.is_stale() {
            return Some(format!(
                "The build stopped before this variant was written (process {} is gone): run \
                 `./x run` or `inferscope build-variants` again.",
                self.pid
            ));
        }
        if let Some(Err(e)) = &self.finished {
            if v.state != VariantState::Written {
                return Some(format!("The build failed: {e}"));
            }
        }
        let elapsed = now_unix().saturating_sub(self.started_unix);
        match v.state {
            VariantState::Written => None,
            VariantState::Queued => {
                let current = self
                    .variants
                    .iter()
                    .find(|v| v.state == VariantState::Building)
                    .map(|v| format!(" after {}", v.id))
                    .unwrap_or_default();
                Some(format!(
                    "Queued: built{current} (build started {} ago).",
                    minutes(elapsed)
                ))
            }
            VariantState::Building => {
                let step = self
                    .step
                    .as_ref()
                    .map(|s| {
                        format!(
                            ": {} {}/{} ({:.0}%)",
                            s.what,
                            s.done,
                            s.len,
                            100.0 * s.fraction()
                        )
                    })
                    .unwrap_or_default();
                let took = v.seconds.map(|s| s as u64).unwrap_or(0);
                Some(format!(
                    "Building{step}; {} on this variant.",
                    minutes(took)
                ))
            }
        }
    }
}

fn minutes(secs: u64) -> String {
    if secs < 90 {
        format!("{secs} s")
    } else {
        format!("{} min", (secs + 30) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file_and_describes_each_state() {
        let dir = std::env::temp_dir().join(format!("inferscope-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = BuildStatus::new(["resnet50-pruned", "resnet50-int8"]);
        s.set("resnet50-pruned", VariantState::Building, Some(12.0));
        s.step = Some(Step {
            what: "pruned: channel orders".into(),
            done: 13,
            len: 52,
        });
        s.write(&dir).unwrap();
        let back = BuildStatus::read(&dir).unwrap();
        assert_eq!(back, s);
        assert!(back.is_running(), "this process wrote it");
        let building = back.describe("resnet50-pruned").unwrap();
        assert!(
            building.contains("pruned: channel orders 13/52 (25%)"),
            "{building}"
        );
        let queued = back.describe("resnet50-int8").unwrap();
        assert!(
            queued.starts_with("Queued: built after resnet50-pruned"),
            "{queued}"
        );
        assert_eq!(
            back.describe("resnet50-sparse24"),
            None,
            "not in this build"
        );

        s.set("resnet50-pruned", VariantState::Written, Some(30.0));
        s.finished = Some(Err("out of memory".into()));
        assert_eq!(s.describe("resnet50-pruned"), None);
        assert_eq!(
            s.describe("resnet50-int8").unwrap(),
            "The build failed: out of memory"
        );
        assert!(!s.is_running());

        // A writer that no longer exists: pid of a process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let mut dead = BuildStatus::new(["resnet50-int8"]);
        dead.pid = gone;
        if Path::new("/proc/self").exists() {
            assert!(dead.is_stale());
            assert!(dead.describe("resnet50-int8").unwrap().contains("is gone"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
