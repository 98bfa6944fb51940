//! ImageNet class names and WordNet ids, and the class a labelled photo's file name says.
//!
//! Labelled photo folders name their files in one of two ways: `<wnid>_<name>.JPEG` with a
//! `classes.tsv` (`index<TAB>wnid<TAB>name`) beside them (`../shared/data/imagenet-sample`), or
//! foolbox's `imagenet_NN_LABEL.jpg` (the class index in the name). [`class_from_file_name`] reads
//! both; `inferscope eval`, the server's sample list and the page's labelled-set view all use it, so a
//! photo has the same label everywhere.

use std::collections::HashMap;
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

/// The class index of each WordNet id in a `classes.tsv` (`index<TAB>wnid<TAB>name` per line; a header
/// or any line that does not parse is skipped).
pub fn parse_classes_tsv(text: &str) -> HashMap<String, usize> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let idx: usize = f.next()?.trim().parse().ok()?;
            let wnid = f.next()?.trim();
            (idx < crate::NUM_CLASSES && !wnid.is_empty()).then(|| (wnid.to_string(), idx))
        })
        .collect()
}

/// The labelled class of a photo from its file name: `imagenet_NN_LABEL.jpg` (foolbox: the index in
/// the name) or `<wnid>_….JPEG` with `wnids` from [`parse_classes_tsv`]. `None` when the name says
/// neither (or the index is not an ImageNet-1k class).
pub fn class_from_file_name(name: &str, wnids: &HashMap<String, usize>) -> Option<usize> {
    if let Some(rest) = name.strip_prefix("imagenet_") {
        rest.split(['_', '.'])
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|&c| c < crate::NUM_CLASSES)
    } else {
        name.split('_').next().and_then(|w| wnids.get(w).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_their_class_both_ways() {
        let wnids =
            parse_classes_tsv("index\twnid\tname\n0\tn01440764\ttench\n1\tn01443537\tgoldfish\n");
        assert_eq!(wnids.len(), 2);
        assert_eq!(
            class_from_file_name("n01443537_goldfish.JPEG", &wnids),
            Some(1)
        );
        assert_eq!(class_from_file_name("n09999999_unknown.JPEG", &wnids), None);
        assert_eq!(
            class_from_file_name("imagenet_00_243.jpg", &wnids),
            Some(243)
        );
        assert_eq!(class_from_file_name("imagenet_00_1000.jpg", &wnids), None);
        assert_eq!(class_from_file_name("cat.png", &wnids), None);
    }
}
