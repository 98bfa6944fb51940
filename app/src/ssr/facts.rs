//! Reading `models/report.json` and the sample photos' folder.

use std::path::Path;

use serde_json::Value;

use crate::facts::{FactsReport, Sample, VariantFacts};

/// The report's facts, or `None` when there is no report (or it cannot be read: logged, not fatal).
pub fn read_report(models_dir: &Path) -> Option<FactsReport> {
    let path = models_dir.join("report.json");
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|v| facts_from_json(&v))
    {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the report");
            None
        }
    }
}

/// The page's view of a `build-variants` report.
pub fn facts_from_json(report: &Value) -> Result<FactsReport, String> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let num = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, key| v.get(key))
            .and_then(Value::as_f64)
    };
    let variants = report
        .get("variants")
        .and_then(Value::as_array)
        .ok_or("no `variants` list")?
        .iter()
        .map(|v| {
            let need = |path: &[&str]| num(v, path).ok_or_else(|| format!("no {}", path.join(".")));
            Ok(VariantFacts {
                id: text(v, "id").ok_or("a variant without an id")?,
                file_bytes: need(&["file_bytes"])? as u64,
                gzip_bytes: need(&["gzip_bytes"])? as u64,
                params: need(&["params"])? as u64,
                nonzero_params: need(&["nonzero_params"])? as u64,
                gmacs: need(&["gmacs"])?,
                top1: need(&["accuracy", "top1"])?,
                top5: need(&["accuracy", "top5"])?,
                agreement: need(&["accuracy", "vs_baseline", "top1"])?,
                images: need(&["accuracy", "images"])? as usize,
                cpu_ms_b1: num(v, &["speed", "rust_ms_b1"]),
                cpu_threads: num(v, &["speed", "threads"]).map(|t| t as usize),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(FactsReport {
        evaluation: super::without_paths(&text(report, "evaluation").unwrap_or_default()),
        machine: super::without_paths(&text(report, "machine").unwrap_or_default()),
        variants,
    })
}

/// The JPEG/PNG/WebP files in `dir`, in name order, labelled from their names
/// ([`engine::labels::class_from_file_name`], with the folder's `classes.tsv` when it has one).
pub fn samples(dir: &Path, class_name: impl Fn(usize) -> String) -> Vec<Sample> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let wnids = std::fs::read_to_string(dir.join("classes.tsv"))
        .map(|text| engine::labels::parse_classes_tsv(&text))
        .unwrap_or_default();
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            [".jpg", ".jpeg", ".png", ".webp"]
                .iter()
                .any(|ext| lower.ends_with(ext))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let class = engine::labels::class_from_file_name(&name, &wnids);
            Sample {
                url: format!("/samples/{}", url_path_segment(&name)),
                label: class.map(&class_name),
                class: class.map(|c| c as u32),
                name,
            }
        })
        .collect()
}

/// `name` percent-encoded for a URL path (`jack-o'-lantern` has a quote, a name may have spaces).
fn url_path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_come_from_the_report_and_missing_fields_are_named() {
        let report = serde_json::json!({
            "evaluation": "400 photos of /data/imagenet-sample (odd index)",
            "machine": "2 cores",
            "variants": [{
                "id": "resnet50-int8", "file_bytes": 26_000_000u64, "gzip_bytes": 20_000_000u64,
                "params": 25_530_472u64, "nonzero_params": 25_000_000u64, "gmacs": 3.858,
                "accuracy": {"images": 400, "top1": 0.885, "top5": 0.97, "vs_baseline": {"top1": 0.95, "kl": 0.01}},
                "speed": {"threads": 2, "rust_ms_b1": 21.5, "python_ms_b1": 22.0, "rust_ips_b8": 60.0, "runs": 30}
            }]
        });
        let facts = facts_from_json(&report).unwrap();
        let v = facts.variant("resnet50-int8").unwrap();
        assert_eq!(v.params, 25_530_472);
        assert_eq!(v.agreement, 0.95);
        assert_eq!(v.cpu_ms_b1, Some(21.5));
        // No path of the server's machine reaches the page.
        assert_eq!(
            facts.evaluation,
            "400 photos of imagenet-sample (odd index)"
        );

        let mut broken = report.clone();
        broken["variants"][0]["accuracy"]
            .as_object_mut()
            .unwrap()
            .remove("top1");
        assert_eq!(facts_from_json(&broken).unwrap_err(), "no accuracy.top1");
    }

    #[test]
    fn samples_are_listed_and_labelled_from_their_names() {
        let dir = std::env::temp_dir().join(format!("inferscope-samples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "imagenet_16_251.jpg",
            "imagenet_00_243.jpg",
            "notes.txt",
            "cat.png",
            "n03590841_jack-o'-lantern.JPEG",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(
            dir.join("classes.tsv"),
            "index\twnid\tname\n607\tn03590841\tjack-o'-lantern\n",
        )
        .unwrap();
        let list = samples(&dir, |i| format!("class {i}"));
        std::fs::remove_dir_all(&dir).unwrap();
        let urls: Vec<_> = list.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "/samples/cat.png",
                "/samples/imagenet_00_243.jpg",
                "/samples/imagenet_16_251.jpg",
                "/samples/n03590841_jack-o%27-lantern.JPEG",
            ]
        );
        assert_eq!(list[0].label, None);
        assert_eq!(list[1].label.as_deref(), Some("class 243"));
        assert_eq!(list[1].class, Some(243));
        assert_eq!(list[3].class, Some(607));
        assert_eq!(list[3].name, "n03590841_jack-o'-lantern.JPEG");
        assert!(samples(Path::new("/nonexistent/inferscope"), |_| String::new()).is_empty());
    }
}
