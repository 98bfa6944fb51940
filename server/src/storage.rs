//! Models from object storage: `--models-dir gs://bucket/path` (or `file:///dir`), or the
//! `AIP_STORAGE_URI` that Vertex AI hands a custom container whose model was uploaded with
//! `--artifact-uri`. The files under the URI (one level: `labels.json`, the variants' `.onnx`,
//! `report.json`) are fetched into a local cache folder before the models load, and the server loads
//! from there; a file whose size and version (ETag, else modification time) are unchanged since the
//! last fetch is not fetched again.
//!
//! Storage goes through the `object_store` crate (the Apache Arrow project's): Google Cloud Storage
//! with Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's well-known file,
//! or the metadata server on Google Cloud: what Vertex AI gives a container), and the local file
//! system for `file://`, which is what the tests use.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectMeta, ObjectStore};
use tokio::io::AsyncWriteExt;

/// The storage flag of `inferscope serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StorageArgs {
    /// Where models fetched from a `gs://` / `file://` models directory (or AIP_STORAGE_URI) are kept
    /// [default: $XDG_CACHE_HOME or ~/.cache, under inferscope/models/].
    #[arg(long, env = "INFERSCOPE_MODELS_CACHE")]
    pub models_cache: Option<PathBuf>,
}

/// The local models folder to load from: `models_dir` itself when it is a path; else (a URI, or
/// `AIP_STORAGE_URI` set, which wins as the platform's word) the cache folder after fetching.
pub async fn resolve(models_dir: &Path, args: &StorageArgs) -> anyhow::Result<PathBuf> {
    let uri = match std::env::var("AIP_STORAGE_URI")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(uri) => {
            tracing::info!("models from AIP_STORAGE_URI={uri}");
            uri
        }
        None => match models_dir.to_str() {
            Some(s) if s.contains("://") => s.to_string(),
            _ => return Ok(models_dir.to_path_buf()),
        },
    };
    let cache = match &args.models_cache {
        Some(dir) => dir.clone(),
        None => default_cache(&uri)?,
    };
    fetch(&uri, &cache).await?;
    Ok(cache)
}

fn default_cache(uri: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no cache folder: set HOME, XDG_CACHE_HOME or --models-cache")?;
    let name: String = uri
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(base.join("inferscope/models").join(name))
}

/// The store behind `uri` and the prefix of the models under it.
fn open(uri: &str) -> anyhow::Result<(Box<dyn ObjectStore>, object_store::path::Path)> {
    let url = url::Url::parse(uri).with_context(|| format!("`{uri}` is not a URI"))?;
    match url.scheme() {
        "gs" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .with_context(|| format!("`{uri}` names no bucket (gs://BUCKET/PATH)"))?;
            let store = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("opening {uri}"))?;
            let prefix = object_store::path::Path::from(url.path().trim_matches('/'));
            Ok((Box::new(store), prefix))
        }
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("`{uri}` is not a local path (file:///DIR)"))?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("{} is not a readable folder", dir.display()))?;
            Ok((Box::new(store), object_store::path::Path::default()))
        }
        other => {
            bail!("models from `{other}://` are not supported: use gs://BUCKET/PATH or file:///DIR")
        }
    }
}

/// Fetches every file directly under `uri` into `cache` (sub-folders are not models: skipped).
pub async fn fetch(uri: &str, cache: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let (store, prefix) = open(uri)?;
    let objects: Vec<ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .with_context(|| format!("listing {uri}"))?;
    let files: Vec<(String, &ObjectMeta)> = objects
        .iter()
        .filter_map(|o| {
            let rest = o.location.prefix_match(&prefix)?.collect::<Vec<_>>();
            match rest.as_slice() {
                [name] => Some((name.as_ref().to_string(), o)),
                _ => None,
            }
        })
        .collect();
    if files.is_empty() {
        bail!("{uri} holds no files (expected labels.json and the variants' .onnx files)");
    }
    tokio::fs::create_dir_all(cache)
        .await
        .with_context(|| format!("creating the models cache {}", cache.display()))?;
    let (mut fetched, mut kept) = (0u64, 0usize);
    for (name, meta) in files {
        let target = cache.join(&name);
        let stamp = cache.join(format!(".{name}.version"));
        let version = format!(
            "{} {}",
            meta.size,
            meta.e_tag
                .clone()
                .unwrap_or_else(|| meta.last_modified.to_rfc3339())
        );
        let same_size = tokio::fs::metadata(&target)
            .await
            .is_ok_and(|m| m.len() == meta.size);
        if same_size && tokio::fs::read_to_string(&stamp).await.ok().as_deref() == Some(&version) {
            kept += 1;
            continue;
        }
        tracing::info!(
            "fetching {name} ({:.1} MB) from {uri}",
            meta.size as f64 / 1e6
        );
        let part = cache.join(format!(".{name}.part"));
        let mut out = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("writing {}", part.display()))?;
        let mut stream = store
            .get(&meta.location)
            .await
            .with_context(|| format!("reading {name} from {uri}"))?
            .into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading {name} from {uri}"))?;
            written += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", part.display()))?;
        }
        out.flush().await?;
        drop(out);
        if written != meta.size {
            bail!("{name} from {uri}: got {written} bytes of {}", meta.size);
        }
        tokio::fs::rename(&part, &target).await?;
        tokio::fs::write(&stamp, &version).await?;
        fetched += written;
    }
    tracing::info!(
        "models from {uri} in {}: {:.1} MB fetched, {kept} file(s) already there, in {:.1} s",
        cache.display(),
        fetched as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("inferscope-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn file_uris_are_fetched_into_the_cache_once() {
        let src = temp("src");
        std::fs::write(src.join("labels.json"), b"[\"a\"]").unwrap();
        std::fs::write(src.join("resnet50-int8.onnx"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir_all(src.join("nested")).unwrap();
        std::fs::write(src.join("nested/skip.onnx"), b"x").unwrap();
        let cache = temp("cache");
        let uri = format!("file://{}", src.display());
        fetch(&uri, &cache).await.unwrap();
        assert_eq!(
            std::fs::read(cache.join("labels.json")).unwrap(),
            b"[\"a\"]"
        );
        assert_eq!(
            std::fs::read(cache.join("resnet50-int8.onnx"))
                .unwrap()
                .len(),
            100_000
        );
        assert!(!cache.join("nested").exists() && !cache.join("skip.onnx").exists());
        // Unchanged: kept. Changed at the source: fetched again.
        std::fs::write(cache.join("labels.json"), b"[\"b\"]").unwrap();
        fetch(&uri, &cache).await.unwrap();
        assert_eq!(
            std::fs::read(cache.join("labels.json")).unwrap(),
            b"[\"b\"]",
            "same size and version: kept"
        );
        std::fs::write(src.join("labels.json"), b"[\"cc\"]").unwrap();
        fetch(&uri, &cache).await.unwrap();
        assert_eq!(
            std::fs::read(cache.join("labels.json")).unwrap(),
            b"[\"cc\"]"
        );
    }

    #[tokio::test]
    async fn bad_uris_are_named() {
        let cache = temp("bad");
        let err = |uri: &str| {
            let uri = uri.to_string();
            let cache = cache.clone();
            async move { format!("{:#}", fetch(&uri, &cache).await.unwrap_err()) }
        };
        assert!(err("s3://bucket/m").await.contains("not supported"));
        assert!(err("file:///nonexistent/inferscope")
            .await
            .contains("not a readable folder"));
        let empty = temp("empty");
        assert!(err(&format!("file://{}", empty.display()))
            .await
            .contains("holds no files"));
        assert!(err("gs:///models").await.contains("names no bucket"));
    }
}
