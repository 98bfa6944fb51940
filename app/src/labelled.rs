//! The labelled-set view's state and its run: a folder of labelled photos (the server's sample photos,
//! or photos the user chooses) through every variant, with progress, per-variant top-1 / top-5, and
//! the photos where a variant's top-1 differs from the baseline's.
//!
//! Throughput: the browser sends [`CHUNK`] photos per [`classify_set`] call (their 224×224 bytes, as
//! a single photo's run does) and keeps [`IN_FLIGHT`] calls open, so that it reads and preprocesses
//! the next photos while the server runs the current ones and the engine never waits for the
//! browser. The server runs each photo as one batch-1 model call alone on the engine, as
//! `inferscope eval` does, so each variant's latency here is its own and its answers are eval's.
//!
//! The tallies ([`tally`], [`disagreements`]) are plain functions of the answers, tested natively.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use leptos::prelude::*;

use crate::classify::{classify_set, PhotoAnswer, SetResponse};
use crate::run::MAX_UPLOAD_BYTES;

/// One `classify_set` call in flight: the indices of the photos it carries, their pixels, and where
/// its answer arrives.
type InFlight = (
    Vec<usize>,
    Arc<Vec<u8>>,
    futures::channel::oneshot::Receiver<Result<SetResponse, crate::AppError>>,
);

thread_local! {
    /// The user's files of the current run (one run at a time). A browser-only value (`web_sys::File`
    /// is not `Send`), kept out of the reactive graph on purpose: the page is created on the server
    /// too, and a thread-bound reactive value (`StoredValue<_, LocalStorage>`) created while the
    /// server renders is dropped by whichever worker thread ends the render, which panics ("Dropped
    /// SendWrapper<T> variable from a thread different…", leptos #4746) and cut the page's response.
    static RUN_FILES: RefCell<Vec<web_sys::File>> = const { RefCell::new(Vec::new()) };
}

fn run_file(i: usize) -> Option<web_sys::File> {
    RUN_FILES.with_borrow(|f| f.get(i).cloned())
}

/// Photos per `classify_set` call (at most [`crate::classify::MAX_SET_PHOTOS`]).
pub const CHUNK: usize = 4;
/// `classify_set` calls open at once: one running, one waiting at the engine.
pub const IN_FLIGHT: usize = 2;
/// Most photos one run takes.
pub const MAX_PHOTOS: usize = 10_000;

/// Where a photo of the set comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A sample photo on the server.
    Url(String),
    /// The user's file at this index of the run's files.
    File(usize),
}

/// A photo of the set, before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPhoto {
    pub name: String,
    pub origin: Origin,
    /// The labelled class (from the file name), if any.
    pub class: Option<u32>,
}

/// One variant's answer for one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    pub id: String,
    /// The top-5 class indices, most probable first.
    pub top: Vec<u32>,
    pub top1_name: String,
    pub top1_prob: f32,
    pub inference_ms: f64,
}

/// A photo with every variant's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoRow {
    /// Its index in the run's photo list.
    pub photo: usize,
    pub name: String,
    pub class: Option<u32>,
    pub label: Option<String>,
    pub preds: Vec<Pred>,
    /// The 224×224 crop the variants saw, as a small JPEG data URL (made only for photos where a
    /// variant disagrees with the baseline: the gallery and the exported report show them).
    pub thumb: Option<String>,
}

impl PhotoRow {
    fn pred(&self, id: &str) -> Option<&Pred> {
        self.preds.iter().find(|p| p.id == id)
    }
}

/// A variant's score over the photos answered so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tally {
    pub id: String,
    /// Photos it answered; of those, labelled; top-1 / top-5 correct among the labelled.
    pub answered: usize,
    pub labelled: usize,
    pub top1: usize,
    pub top5: usize,
    /// Photos where its top-1 is the baseline's (of those both answered).
    pub agree: usize,
    pub compared: usize,
    /// Its per-photo inference times, alone on the engine (ms), sorted.
    pub inference_ms: Vec<f64>,
}

impl Tally {
    pub fn top1_rate(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.top1 as f64 / self.labelled as f64)
    }

    pub fn top5_rate(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.top5 as f64 / self.labelled as f64)
    }

    /// Median per-photo inference (ms), by nearest rank.
    pub fn median_ms(&self) -> Option<f64> {
        let n = self.inference_ms.len();
        (n > 0).then(|| self.inference_ms[n.div_ceil(2) - 1])
    }

    /// Photos per second one engine gives this variant, from the mean inference time (what a
    /// machine like this one serves, one photo after another).
    pub fn photos_per_s(&self) -> Option<f64> {
        let total: f64 = self.inference_ms.iter().sum();
        (total > 0.0).then(|| self.inference_ms.len() as f64 * 1000.0 / total)
    }
}

/// The baseline's id: disagreements are with it.
pub fn baseline_id() -> &'static str {
    engine::variants::VARIANTS[0].id
}

/// Each variant's tally over `rows`, in the order of `ids`.
pub fn tally(rows: &[PhotoRow], ids: &[String]) -> Vec<Tally> {
    ids.iter()
        .map(|id| {
            let mut t = Tally {
                id: id.clone(),
                ..Tally::default()
            };
            for row in rows {
                let Some(p) = row.pred(id) else { continue };
                t.answered += 1;
                t.inference_ms.push(p.inference_ms);
                if let Some(class) = row.class {
                    t.labelled += 1;
                    t.top1 += usize::from(p.top.first() == Some(&class));
                    t.top5 += usize::from(p.top.contains(&class));
                }
                if let Some(b) = row.pred(baseline_id()) {
                    t.compared += 1;
                    t.agree += usize::from(b.top.first() == p.top.first());
                }
            }
            t.inference_ms.sort_by(f64::total_cmp);
            t
        })
        .collect()
}

/// The variants whose top-1 differs from the baseline's for this photo (empty when the baseline did
/// not answer).
pub fn disagreeing(row: &PhotoRow) -> Vec<&str> {
    let Some(base) = row.pred(baseline_id()) else {
        return Vec::new();
    };
    row.preds
        .iter()
        .filter(|p| p.id != base.id && p.top.first() != base.top.first())
        .map(|p| p.id.as_str())
        .collect()
}

/// The rows where some variant disagrees with the baseline (`only`: where that variant does), in
/// photo order.
pub fn disagreements<'a>(rows: &'a [PhotoRow], only: Option<&str>) -> Vec<&'a PhotoRow> {
    rows.iter()
        .filter(|r| {
            let d = disagreeing(r);
            match only {
                Some(id) => d.contains(&id),
                None => !d.is_empty(),
            }
        })
        .collect()
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum SetStatus {
    Idle,
    Running,
    Done,
    Cancelled,
    Failed(String),
}

impl SetStatus {
    pub fn name(&self) -> &'static str {
        match self {
            SetStatus::Idle => "idle",
            SetStatus::Running => "running",
            SetStatus::Done => "done",
            SetStatus::Cancelled => "cancelled",
            SetStatus::Failed(_) => "failed",
        }
    }
}

/// The labelled-set view's reactive state (one run at a time; a new run replaces the last).
#[derive(Clone, Copy)]
pub struct SetRun {
    pub status: RwSignal<SetStatus>,
    /// Which photos, in words ("the server's 800 sample photos (imagenet-sample)").
    pub source: RwSignal<String>,
    pub total: RwSignal<usize>,
    pub rows: RwSignal<Vec<PhotoRow>>,
    /// Photos that could not run, and why.
    pub skipped: RwSignal<Vec<(String, String)>>,
    /// The variants that answered, in registry order.
    pub ids: RwSignal<Vec<String>>,
    /// Wall time of the run so far, and the engine's share: every model call's inference (ms).
    pub wall_ms: RwSignal<f64>,
    pub engine_ms: RwSignal<f64>,
    pub contention: RwSignal<Option<String>>,
    /// The gallery's filter: a variant id, or empty for every variant.
    pub filter: RwSignal<String>,
    photos: StoredValue<Vec<SetPhoto>>,
    generation: StoredValue<u64>,
}

impl Default for SetRun {
    fn default() -> Self {
        Self::new()
    }
}

impl SetRun {
    pub fn new() -> Self {
        SetRun {
            status: RwSignal::new(SetStatus::Idle),
            source: RwSignal::new(String::new()),
            total: RwSignal::new(0),
            rows: RwSignal::new(Vec::new()),
            skipped: RwSignal::new(Vec::new()),
            ids: RwSignal::new(Vec::new()),
            wall_ms: RwSignal::new(0.0),
            engine_ms: RwSignal::new(0.0),
            contention: RwSignal::new(None),
            filter: RwSignal::new(String::new()),
            photos: StoredValue::new(Vec::new()),
            generation: StoredValue::new(0),
        }
    }

    /// Photos done so far (answered or skipped).
    pub fn done(&self) -> usize {
        self.rows.with(Vec::len) + self.skipped.with(Vec::len)
    }

    /// Where photo `photo` of this run comes from, to open it in the main view.
    pub fn source_of(&self, photo: usize) -> Option<crate::run::Source> {
        let p = self.photos.with_value(|ps| ps.get(photo).cloned())?;
        Some(match p.origin {
            Origin::Url(url) => crate::run::Source::Sample { url, name: p.name },
            Origin::File(i) => crate::run::Source::File(run_file(i)?),
        })
    }

    /// Stops the run: the calls in flight still land on the server, their answers are dropped.
    pub fn cancel(&self) {
        if self.status.get_untracked() == SetStatus::Running {
            self.generation.update_value(|g| *g += 1);
            self.status.set(SetStatus::Cancelled);
        }
    }

    /// Runs the server's sample photos (the first `limit`, when given).
    pub fn start_samples(self, samples: Vec<crate::facts::Sample>, limit: Option<usize>) {
        let count = samples.len();
        let take = limit.unwrap_or(count).min(count).min(MAX_PHOTOS);
        let photos = samples
            .into_iter()
            .take(take)
            .map(|s| SetPhoto {
                name: s.name,
                origin: Origin::Url(s.url),
                class: s.class,
            })
            .collect();
        let source = if take < count {
            format!("the first {take} of the server's {count} sample photos")
        } else {
            format!("the server's {count} sample photos")
        };
        self.start(photos, Vec::new(), source, None);
    }

    /// Runs photos the user chose: image files by name order, labelled from their names (with a
    /// `classes.tsv` among them for `<wnid>_….JPEG` names).
    pub fn start_files(self, files: Vec<web_sys::File>) {
        let generation = self.bump();
        leptos::task::spawn_local(async move {
            let tsv = files.iter().find(|f| f.name() == "classes.tsv").cloned();
            let wnids = match tsv {
                Some(f) if f.size() <= 1e6 => match crate::browser::read_file(&f).await {
                    Ok(bytes) => {
                        engine::labels::parse_classes_tsv(&String::from_utf8_lossy(&bytes))
                    }
                    Err(_) => HashMap::new(),
                },
                _ => HashMap::new(),
            };
            let mut files: Vec<web_sys::File> = files
                .into_iter()
                .filter(|f| {
                    let n = f.name().to_ascii_lowercase();
                    [".jpg", ".jpeg", ".png", ".webp"]
                        .iter()
                        .any(|e| n.ends_with(e))
                })
                .collect();
            files.sort_by_key(|f| f.name());
            files.truncate(MAX_PHOTOS);
            let photos: Vec<SetPhoto> = files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let name = f.name();
                    SetPhoto {
                        class: engine::labels::class_from_file_name(&name, &wnids)
                            .map(|c| c as u32),
                        name,
                        origin: Origin::File(i),
                    }
                })
                .collect();
            let labelled = photos.iter().filter(|p| p.class.is_some()).count();
            let source = format!(
                "{} photos you chose ({labelled} labelled by their file names)",
                photos.len()
            );
            self.start(photos, files, source, Some(generation));
        });
    }

    fn bump(&self) -> u64 {
        self.generation.update_value(|g| *g += 1);
        self.generation.get_value()
    }

    fn is_current(&self, generation: u64) -> bool {
        self.generation.get_value() == generation
    }

    fn start(
        self,
        photos: Vec<SetPhoto>,
        files: Vec<web_sys::File>,
        source: String,
        generation: Option<u64>,
    ) {
        let generation = generation.unwrap_or_else(|| self.bump());
        if !self.is_current(generation) {
            return;
        }
        if photos.is_empty() {
            self.status.set(SetStatus::Failed(
                "No JPEG, PNG or WebP photos to run.".into(),
            ));
            return;
        }
        self.total.set(photos.len());
        self.source.set(source);
        self.rows.set(Vec::new());
        self.skipped.set(Vec::new());
        self.ids.set(Vec::new());
        self.wall_ms.set(0.0);
        self.engine_ms.set(0.0);
        self.contention.set(None);
        self.filter.set(String::new());
        RUN_FILES.set(files);
        self.photos.set_value(photos.clone());
        self.status.set(SetStatus::Running);
        leptos::task::spawn_local(async move { self.drive(generation, photos).await });
    }

    async fn drive(self, generation: u64, photos: Vec<SetPhoto>) {
        use crate::browser::now_ms;
        let start = now_ms();
        // Label names for the gallery: the samples' come with them, the user's from the server.
        let names: Vec<String> = if photos.iter().any(|p| p.class.is_some()) {
            crate::facts::class_names().await.unwrap_or_default()
        } else {
            Vec::new()
        };
        type Pending = (
            Vec<usize>,
            Arc<Vec<u8>>,
            futures::channel::oneshot::Receiver<Result<SetResponse, crate::AppError>>,
        );
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let indices: Vec<usize> = (0..photos.len()).collect();
        for chunk in indices.chunks(CHUNK) {
            let mut pixels = Vec::with_capacity(chunk.len() * engine::preprocess::PIXELS_LEN);
            let mut kept = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let photo = &photos[i];
                let prepared = match self.read(photo).await {
                    Ok(bytes) => engine::preprocess::preprocess_pixels(&bytes)
                        .map_err(|e| format!("cannot be classified: {e}")),
                    Err(e) => Err(e),
                };
                if !self.is_current(generation) {
                    return;
                }
                match prepared {
                    Ok(pre) => {
                        pixels.extend_from_slice(&pre.data);
                        kept.push(i);
                    }
                    Err(e) => self.skipped.update(|s| s.push((photo.name.clone(), e))),
                }
            }
            if kept.is_empty() {
                continue;
            }
            let pixels = Arc::new(pixels);
            let (tx, rx) = futures::channel::oneshot::channel();
            let body = pixels.as_ref().clone();
            leptos::task::spawn_local(async move {
                let _ = tx.send(classify_set(body, String::new()).await);
            });
            pending.push_back((kept, pixels, rx));
            while pending.len() >= IN_FLIGHT {
                let next = pending.pop_front().expect("pending");
                if !self.absorb(generation, &photos, &names, next, start).await {
                    return;
                }
            }
        }
        while let Some(next) = pending.pop_front() {
            if !self.absorb(generation, &photos, &names, next, start).await {
                return;
            }
        }
        if self.is_current(generation) {
            self.wall_ms.set(now_ms() - start);
            self.status.set(SetStatus::Done);
        }
    }

    /// The bytes of a photo of the set (a user's file is checked against the size limit before it
    /// is read).
    async fn read(&self, photo: &SetPhoto) -> Result<Vec<u8>, String> {
        match &photo.origin {
            Origin::Url(url) => crate::browser::fetch_bytes(url).await,
            Origin::File(i) => {
                let Some(file) = run_file(*i) else {
                    return Err("the file is gone".into());
                };
                if file.size() > MAX_UPLOAD_BYTES {
                    return Err(format!(
                        "is {:.1} MB; the limit is {:.0} MB",
                        file.size() / 1048576.0,
                        MAX_UPLOAD_BYTES / 1048576.0
                    ));
                }
                crate::browser::read_file(&file).await
            }
        }
    }

    /// Waits for one call's answer and adds it to the rows; `false` when the run is over (superseded,
    /// cancelled or failed).
    async fn absorb(
        &self,
        generation: u64,
        photos: &[SetPhoto],
        names: &[String],
        (kept, pixels, rx): InFlight,
        start: f64,
    ) -> bool {
        let answer = rx.await;
        if !self.is_current(generation) {
            return false;
        }
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.status.set(SetStatus::Failed(format!(
                    "The server could not run the set: {e}"
                )));
                return false;
            }
            Err(_) => {
                self.status.set(SetStatus::Failed(
                    "The call to the server was dropped.".into(),
                ));
                return false;
            }
        };
        if answer.contention.is_some() {
            self.contention.set(answer.contention.clone());
        }
        let ids: Vec<String> = answer
            .outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.id.clone())
            .collect();
        if self.ids.with_untracked(|have| have != &ids) {
            self.ids.set(ids);
        }
        let mut engine_ms = 0.0;
        let mut rows = Vec::with_capacity(kept.len());
        for (k, &i) in kept.iter().enumerate() {
            let photo = &photos[i];
            let preds: Vec<Pred> = answer
                .outcomes
                .iter()
                .filter_map(|o| {
                    let a: &PhotoAnswer = o.result.as_ref().ok()?.get(k)?;
                    engine_ms += a.inference_us as f64 / 1000.0;
                    Some(Pred {
                        id: o.id.clone(),
                        top: a.top.iter().map(|c| c.index).collect(),
                        top1_name: a.top.first().map(|c| c.name.clone()).unwrap_or_default(),
                        top1_prob: a.top.first().map_or(0.0, |c| c.prob),
                        inference_ms: a.inference_us as f64 / 1000.0,
                    })
                })
                .collect();
            let mut row = PhotoRow {
                photo: i,
                name: photo.name.clone(),
                class: photo.class,
                label: photo
                    .class
                    .and_then(|c| names.get(c as usize).cloned())
                    .or_else(|| photo.class.map(|c| format!("class {c}"))),
                preds,
                thumb: None,
            };
            if !disagreeing(&row).is_empty() {
                let crop =
                    &pixels[k * engine::preprocess::PIXELS_LEN..][..engine::preprocess::PIXELS_LEN];
                row.thumb = crate::browser::jpeg_data_url(crop, 224, 224);
            }
            rows.push(row);
        }
        let failures: Vec<(String, String)> = answer
            .outcomes
            .iter()
            .filter_map(|o| Some((o.id.clone(), o.result.as_ref().err()?.clone())))
            .collect();
        if !failures.is_empty() && self.rows.with_untracked(Vec::is_empty) {
            // A variant that cannot run says so once, on the first photos.
            self.skipped.update(|s| {
                for (id, e) in failures {
                    s.push((id, e));
                }
            });
        }
        self.engine_ms.update(|e| *e += engine_ms);
        self.rows.update(|r| r.extend(rows));
        self.wall_ms.set(crate::browser::now_ms() - start);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(id: &str, top: &[u32], ms: f64) -> Pred {
        Pred {
            id: id.into(),
            top: top.to_vec(),
            top1_name: String::new(),
            top1_prob: 0.5,
            inference_ms: ms,
        }
    }

    fn row(photo: usize, class: Option<u32>, preds: Vec<Pred>) -> PhotoRow {
        PhotoRow {
            photo,
            name: format!("p{photo}"),
            class,
            label: None,
            preds,
            thumb: None,
        }
    }

    #[test]
    fn tallies_count_top1_top5_and_agreement() {
        let b = baseline_id();
        let rows = vec![
            row(
                0,
                Some(1),
                vec![pred(b, &[1, 2], 10.0), pred("int8", &[2, 1], 4.0)],
            ),
            row(
                1,
                Some(3),
                vec![pred(b, &[3, 4], 30.0), pred("int8", &[3, 4], 6.0)],
            ),
            row(
                2,
                None,
                vec![pred(b, &[5, 6], 20.0), pred("int8", &[5, 6], 5.0)],
            ),
        ];
        let ids = vec![b.to_string(), "int8".to_string()];
        let t = tally(&rows, &ids);
        assert_eq!(
            (t[0].answered, t[0].labelled, t[0].top1, t[0].top5),
            (3, 2, 2, 2)
        );
        assert_eq!(
            (t[1].top1, t[1].top5, t[1].agree, t[1].compared),
            (1, 2, 2, 3)
        );
        assert_eq!(t[0].median_ms(), Some(20.0));
        assert_eq!(t[1].photos_per_s(), Some(200.0));
        assert_eq!(t[1].top1_rate(), Some(0.5));

        let all = disagreements(&rows, None);
        assert_eq!(all.iter().map(|r| r.photo).collect::<Vec<_>>(), [0]);
        assert_eq!(disagreeing(all[0]), ["int8"]);
        assert!(disagreements(&rows, Some("pruned")).is_empty());
        assert_eq!(disagreements(&rows, Some("int8")).len(), 1);
        // Without the baseline's answer there is nothing to disagree with.
        assert!(disagreeing(&row(3, None, vec![pred("int8", &[1], 1.0)])).is_empty());
    }
}
