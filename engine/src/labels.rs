//! ImageNet class names and WordNet ids.

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The 1000 ImageNet-1k classes in the standard (sorted-wnid) order.
#[derive(Debug, Clone)]
pub struct Labels {
    names: Vec<String>,
    wnids: Vec<String>,
}

impl Labels {
    /// Reads `labels.json` as written by `inferscope import` (`{"0": "tench", ...}` in the npm package,
    /// re-written as a JSON array of `{ "name", "wnid" }`).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).map_err(|reason| Error::InvalidModel {
            path: path.into(),
            reason,
        })
    }

    /// Parses the array form written by [`Labels::to_json`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
            #[serde(default)]
            wnid: String,
        }
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if entries.len() != crate::NUM_CLASSES {
            return Err(format!(
                "expected {} classes, found {}",
                crate::NUM_CLASSES,
                entries.len()
            ));
        }
        Ok(Labels {
            names: entries.iter().map(|e| e.name.clone()).collect(),
            wnids: entries.into_iter().map(|e| e.wnid).collect(),
        })
    }

    /// Builds the table from names and (possibly empty) wnids.
    pub fn new(names: Vec<String>, wnids: Vec<String>) -> Self {
        Labels { names, wnids }
    }

    /// The JSON array `[{ "name": .., "wnid": .. }, ...]`.
    pub fn to_json(&self) -> String {
        let v: Vec<serde_json::Value> = self
            .names
            .iter()
            .zip(&self.wnids)
            .map(|(n, w)| serde_json::json!({ "name": n, "wnid": w }))
            .collect();
        serde_json::to_string_pretty(&v).expect("labels serialize")
    }

    /// Human-readable name of class `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map(String::as_str).unwrap_or("?")
    }

    /// Class index of a WordNet id such as `n01440764`.
    pub fn index_of_wnid(&self, wnid: &str) -> Option<usize> {
        self.wnids.iter().position(|w| w == wnid)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
