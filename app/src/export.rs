//! Exporting what the page ran — the last photo, the histograms and bursts, the labelled set — as JSON
//! and as one self-contained HTML report that opens offline: the images are data URLs (the 224×224
//! crops the models saw, JPEG-encoded by the browser's canvas), the tables are HTML, the charts the
//! page's own SVG (copied from the page as drawn), the styles inline; nothing refers to the server.
//!
//! [`Report`] is built from the page's state ([`Report::collect`]); [`Report::to_json`] and
//! [`Report::to_html`] are plain functions of it (unit-tested natively); [`download`] hands a text to
//! the browser as a file.

use serde::Serialize;

use crate::classify::{NamedScore, Prediction, VariantOutcome};
use crate::labelled::{disagreeing, tally, SetRun, SetStatus};

/// The class activation map in a variant's answer, when it has one.
fn answer_cam(o: &VariantOutcome) -> Option<&engine::cam::Cam> {
    match &o.result {
        Ok(Prediction {
            cam: Some(Ok(cam)), ..
        }) => Some(cam),
        _ => None,
    }
}

/// One variant's answer for the photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoVariant {
    pub id: String,
    pub title: String,
    /// The top-5, or the variant's error.
    pub top: Result<Vec<NamedScore>, String>,
    pub queue_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    /// The class activation map the page showed, as SVG ([`crate::explain::map_svg`]), when it showed one.
    #[serde(skip)]
    pub cam_svg: Option<String>,
}

/// The last photo's run.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoRun {
    pub name: String,
    pub file_bytes: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The 224×224 crop the variants saw (a JPEG data URL).
    pub crop: Option<String>,
    pub mode: String,
    pub preprocess_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
    pub server_ms: Option<f64>,
    pub contention: Option<String>,
    pub variants: Vec<PhotoVariant>,
}

/// One histogram: a variant's server times (queue wait + inference) in one timing mode.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub mode: String,
    pub id: String,
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub samples_ms: Vec<f64>,
    /// The page's chart (SVG), for the mode it showed.
    #[serde(skip)]
    pub svg: Option<String>,
}

/// The last burst.
#[derive(Debug, Clone, Serialize)]
pub struct BurstRun {
    pub mode: String,
    pub requests: u32,
    pub answered: u32,
    pub failed: u32,
    pub elapsed_ms: f64,
    pub requests_per_s: Option<f64>,
    pub round_trip_p50_ms: Option<f64>,
    pub round_trip_p90_ms: Option<f64>,
    pub round_trip_p99_ms: Option<f64>,
}

/// A variant's line of the labelled-set table.
#[derive(Debug, Clone, Serialize)]
pub struct SetVariant {
    pub id: String,
    pub title: String,
    pub answered: usize,
    pub labelled: usize,
    pub top1: usize,
    pub top5: usize,
    pub agree_with_baseline: usize,
    pub compared: usize,
    pub median_inference_ms: Option<f64>,
    pub photos_per_s: Option<f64>,
    /// Dollars per million images at the chosen machine's price ([`SetReport::priced_at`]).
    pub usd_per_million: Option<f64>,
}

/// A photo of the labelled set with every variant's top-1.
#[derive(Debug, Clone, Serialize)]
pub struct SetPhoto {
    pub name: String,
    pub class: Option<u32>,
    pub label: Option<String>,
    /// (variant, top-1 class index, its name, its probability, inference ms).
    pub top1: Vec<(String, u32, String, f32, f64)>,
    /// The variants whose top-1 differs from the baseline's.
    pub disagree: Vec<String>,
    /// The crop, for photos with a disagreement.
    pub crop: Option<String>,
}

/// The labelled-set run.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub source: String,
    pub status: String,
    pub photos: usize,
    pub done: usize,
    pub wall_ms: f64,
    pub engine_ms: f64,
    pub contention: Option<String>,
    pub variants: Vec<SetVariant>,
    pub skipped: Vec<(String, String)>,
    pub results: Vec<SetPhoto>,
    /// The machine and price the costs use, with the price's source and date (or "your price").
    pub priced_at: Option<String>,
    /// The page's accuracy chart (SVG).
    #[serde(skip)]
    pub chart_svg: Option<String>,
}

/// Everything the page ran, as exported.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub exported_at: String,
    /// The page it came from.
    pub page: String,
    pub photo: Option<PhotoRun>,
    pub histograms: Vec<Histogram>,
    pub burst: Option<BurstRun>,
    pub labelled_set: Option<SetReport>,
}

fn title(id: &str) -> String {
    engine::variants::by_id(id).map_or_else(|| id.to_string(), |v| v.title.to_string())
}

impl Report {
    /// The page's runs as they are now (the browser's DOM supplies the charts as drawn).
    pub fn collect(
        run: &crate::run::RunState,
        burst: &crate::burst::Burst,
        set: &SetRun,
        cost: &crate::cost::CostState,
    ) -> Report {
        use leptos::prelude::*;
        let machine = cost
            .machines
            .with_untracked(|m| m.get(cost.chosen.get_untracked()).cloned());
        let edited = cost
            .edited
            .with_untracked(|e| e.contains(&cost.chosen.get_untracked()));
        let priced_at = machine.as_ref().map(|m| {
            if edited {
                format!(
                    "{}: ${}/h, a price typed on the page",
                    m.name, m.usd_per_hour
                )
            } else {
                format!(
                    "{}: ${}/h ({}), from {}, as of {}",
                    m.name, m.usd_per_hour, m.terms, m.source, m.date
                )
            }
        });
        let photo = run.upload.get_untracked().map(|u| {
            let timings = run.timings.get_untracked();
            let outcomes = run.outcomes.get_untracked();
            let show_maps = run.cam.show.get_untracked();
            let baseline_id = engine::variants::VARIANTS[0].id;
            let baseline_cam = run
                .cam
                .versus_baseline
                .get_untracked()
                .then(|| {
                    outcomes
                        .iter()
                        .find(|o| o.id == baseline_id)
                        .and_then(answer_cam)
                })
                .flatten()
                .cloned();
            let crop = run
                .pixels
                .get_untracked()
                .and_then(|p| crate::browser::jpeg_data_url(&p, 224, 224));
            PhotoRun {
                name: u.name,
                file_bytes: u.bytes,
                width: u.size.map(|s| s.0),
                height: u.size.map(|s| s.1),
                crop,
                mode: timings
                    .as_ref()
                    .map_or(run.mode.get_untracked(), |t| t.mode)
                    .label()
                    .to_string(),
                preprocess_ms: timings.as_ref().map(|t| t.preprocess_ms),
                round_trip_ms: timings.as_ref().map(|t| t.round_trip_ms),
                server_ms: timings.as_ref().map(|t| t.server_ms),
                contention: timings.and_then(|t| t.contention),
                variants: outcomes
                    .into_iter()
                    .map(|o| {
                        // The map as the card shows it (the plain map, or where it differs from
                        // the baseline's), drawn as SVG from the answer's data.
                        let cam_svg = show_maps.then(|| answer_cam(&o)).flatten().map(|cam| {
                            let versus = (o.id != baseline_id)
                                .then_some(baseline_cam.as_ref())
                                .flatten();
                            crate::explain::map_svg(cam, versus)
                        });
                        let (top, queue_ms, inference_ms) = match o.result {
                            Ok(p) => (
                                Ok(p.top),
                                Some(p.queue_us as f64 / 1000.0),
                                Some(p.inference_us as f64 / 1000.0),
                            ),
                            Err(e) => (Err(e), None, None),
                        };
                        PhotoVariant {
                            title: title(&o.id),
                            id: o.id,
                            top,
                            queue_ms,
                            inference_ms,
                            cam_svg,
                        }
                    })
                    .collect(),
            }
        });
        let shown = run.histogram_mode.get_untracked();
        let histograms = run
            .latency
            .get_untracked()
            .into_iter()
            .map(|(mode, id, samples)| Histogram {
                mode: mode.label().to_string(),
                svg: (mode == shown)
                    .then(|| {
                        crate::browser::outer_html(&format!(
                            ".card[data-variant=\"{id}\"] figure.latency svg"
                        ))
                    })
                    .flatten(),
                count: samples.len(),
                p50_ms: samples.quantile(0.5),
                p90_ms: samples.quantile(0.9),
                p99_ms: samples.quantile(0.99),
                samples_ms: samples.sorted().to_vec(),
                id,
            })
            .collect();
        let burst = (burst.total.get_untracked() > 0).then(|| {
            let rt = burst.round_trips.get_untracked();
            BurstRun {
                mode: burst.mode.get_untracked().label().to_string(),
                requests: burst.total.get_untracked(),
                answered: burst.done.get_untracked(),
                failed: burst.failed.get_untracked(),
                elapsed_ms: burst.elapsed_ms.get_untracked(),
                requests_per_s: {
                    let (done, ms) = (burst.done.get_untracked(), burst.elapsed_ms.get_untracked());
                    (done > 0 && ms > 0.0).then(|| f64::from(done) / (ms / 1000.0))
                },
                round_trip_p50_ms: rt.quantile(0.5),
                round_trip_p90_ms: rt.quantile(0.9),
                round_trip_p99_ms: rt.quantile(0.99),
            }
        });
        let labelled_set = (set.status.get_untracked() != SetStatus::Idle).then(|| {
            let rows = set.rows.get_untracked();
            let ids = set.ids.get_untracked();
            SetReport {
                source: set.source.get_untracked(),
                status: set.status.get_untracked().name().to_string(),
                photos: set.total.get_untracked(),
                done: rows.len() + set.skipped.with_untracked(Vec::len),
                wall_ms: set.wall_ms.get_untracked(),
                engine_ms: set.engine_ms.get_untracked(),
                contention: set.contention.get_untracked(),
                variants: tally(&rows, &ids)
                    .into_iter()
                    .map(|t| SetVariant {
                        title: title(&t.id),
                        median_inference_ms: t.median_ms(),
                        photos_per_s: t.photos_per_s(),
                        usd_per_million: machine.as_ref().and_then(|m| {
                            crate::cost::usd_per_million(m.usd_per_hour, t.photos_per_s()?)
                        }),
                        answered: t.answered,
                        labelled: t.labelled,
                        top1: t.top1,
                        top5: t.top5,
                        agree_with_baseline: t.agree,
                        compared: t.compared,
                        id: t.id,
                    })
                    .collect(),
                skipped: set.skipped.get_untracked(),
                results: rows
                    .iter()
                    .map(|r| SetPhoto {
                        name: r.name.clone(),
                        class: r.class,
                        label: r.label.clone(),
                        top1: r
                            .preds
                            .iter()
                            .map(|p| {
                                (
                                    p.id.clone(),
                                    p.top.first().copied().unwrap_or_default(),
                                    p.top1_name.clone(),
                                    p.top1_prob,
                                    p.inference_ms,
                                )
                            })
                            .collect(),
                        disagree: disagreeing(r).into_iter().map(str::to_string).collect(),
                        crop: r.thumb.clone(),
                    })
                    .collect(),
                priced_at: priced_at.clone(),
                chart_svg: crate::browser::outer_html(".set-chart svg"),
            }
        });
        Report {
            tool: format!("inferscope {}", env!("CARGO_PKG_VERSION")),
            exported_at: crate::browser::now_iso(),
            page: crate::browser::page_url(),
            photo,
            histograms,
            burst,
            labelled_set,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as one HTML document that needs nothing else.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(64 * 1024);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        h.push_str(&format!(
            "<title>inferscope report, {}</title><style>{STYLE}</style></head><body>",
            esc(&self.exported_at)
        ));
        h.push_str(&format!(
            "<header><h1>inferscope report</h1><p class=\"meta\">Exported {} from {} by {}. \
             Times were measured by that page and its server; accuracy is on the photos named.</p></header>",
            esc(&self.exported_at),
            esc(&self.page),
            esc(&self.tool)
        ));
        if let Some(p) = &self.photo {
            photo_html(&mut h, p);
        }
        if !self.histograms.is_empty() || self.burst.is_some() {
            latency_html(&mut h, &self.histograms, self.burst.as_ref());
        }
        if let Some(s) = &self.labelled_set {
            set_html(&mut h, s);
        }
        if self.photo.is_none() && self.histograms.is_empty() && self.labelled_set.is_none() {
            h.push_str("<p>Nothing had run on the page yet.</p>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;max-width:1100px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccd;padding:3px 8px;text-align:left}\
td.num{text-align:right}caption{text-align:left;color:#556;padding:4px 0}.meta,.note{color:#556}\
.crop{position:relative;width:224px;height:224px;display:inline-block;margin:4px}\
.crop img{width:224px;height:224px;display:block}.crop svg{position:absolute;left:0;top:0;width:224px;height:224px;opacity:.5}\
svg{max-width:100%}figure{margin:8px 0}.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{width:340px}\
.grid{stroke:#e3e6ee}.axis{stroke:#556}.tick,.axis-label{font-size:11px;fill:#556}\
.gallery{display:flex;flex-wrap:wrap;gap:10px;list-style:none;padding:0}.gallery li{width:240px}\
.gallery img{width:112px;height:112px}.error{color:#b00020}";

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A data URL may go into `src` only if it is one (an image's data, nothing else).
fn image_src(url: &str) -> Option<&str> {
    (url.starts_with("data:image/jpeg;base64,") || url.starts_with("data:image/png;base64,"))
        .then_some(url)
        .filter(|u| {
            u.bytes()
                .skip(23)
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        })
}

/// The page's SVG may go in as it is only if it is an `<svg` element without scripts or links out.
fn safe_svg(svg: &str) -> Option<&str> {
    let lower = svg.to_ascii_lowercase();
    (lower.starts_with("<svg")
        && !lower.contains("<script")
        && !lower.contains("href")
        && !lower.contains("javascript:")
        && !lower.contains("<foreignobject")
        && !has_event_attribute(&lower))
    .then_some(svg)
}

/// Whether `lower` has an ` on…=` attribute (an event handler).
fn has_event_attribute(lower: &str) -> bool {
    lower.match_indices(" on").any(|(at, _)| {
        let rest = &lower[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].trim_start().starts_with('=')
    })
}

fn ms_cell(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"))
}

fn photo_html(h: &mut String, p: &PhotoRun) {
    h.push_str("<section id=\"photo\"><h2>One photo, every variant</h2>");
    h.push_str(&format!(
        "<p>{}{}{}; timing mode: <strong>{}</strong>.</p>",
        esc(&p.name),
        p.file_bytes
            .map(|b| format!(", {:.0} KB", b / 1024.0))
            .unwrap_or_default(),
        p.width
            .zip(p.height)
            .map(|(w, hh)| format!(", {w}×{hh} px"))
            .unwrap_or_default(),
        esc(&p.mode)
    ));
    h.push_str(&format!(
        "<p class=\"note\">Preprocessing in the browser {}, round trip {}, server {}.{}</p>",
        ms_cell(p.preprocess_ms),
        ms_cell(p.round_trip_ms),
        ms_cell(p.server_ms),
        p.contention
            .as_deref()
            .map(|c| format!(" <strong>{}</strong>", esc(c)))
            .unwrap_or_default()
    ));
    h.push_str("<table class=\"photo-variants\"><thead><tr><th>variant</th><th>top-1</th><th>top-5</th><th>queue wait</th><th>inference</th></tr></thead><tbody>");
    for v in &p.variants {
        match &v.top {
            Ok(top) => {
                let first = top
                    .first()
                    .map(|c| format!("{} ({:.1}%)", esc(&c.name), 100.0 * c.prob))
                    .unwrap_or_default();
                let rest = top
                    .iter()
                    .map(|c| format!("{} {:.1}%", esc(&c.name), 100.0 * c.prob))
                    .collect::<Vec<_>>()
                    .join("; ");
                h.push_str(&format!(
                    "<tr data-variant=\"{}\"><th>{}</th><td>{first}</td><td>{rest}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&v.id),
                    esc(&v.title),
                    ms_cell(v.queue_ms),
                    ms_cell(v.inference_ms)
                ));
            }
            Err(e) => h.push_str(&format!(
                "<tr data-variant=\"{}\"><th>{}</th><td colspan=\"4\" class=\"error\">{}</td></tr>",
                esc(&v.id),
                esc(&v.title),
                esc(e)
            )),
        }
    }
    h.push_str("</tbody></table>");
    if let Some(crop) = p.crop.as_deref().and_then(image_src) {
        h.push_str("<p>The 224×224 crop the variants saw");
        let maps = p.variants.iter().any(|v| v.cam_svg.is_some());
        h.push_str(if maps {
            ", with each variant's class activation map for its top-1 class:</p><div>"
        } else {
            ":</p><div>"
        });
        if maps {
            for v in &p.variants {
                if let Some(svg) = v.cam_svg.as_deref().and_then(safe_svg) {
                    h.push_str(&format!(
                        "<figure class=\"crop\"><img src=\"{crop}\" alt=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
                        esc(&p.name),
                        esc(&v.title)
                    ));
                }
            }
        } else {
            h.push_str(&format!(
                "<figure class=\"crop\"><img src=\"{crop}\" alt=\"{}\"></figure>",
                esc(&p.name)
            ));
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");
}

fn latency_html(h: &mut String, hist: &[Histogram], burst: Option<&BurstRun>) {
    h.push_str("<section id=\"latency\"><h2>Latency histograms</h2>");
    h.push_str("<p class=\"note\">Every answer the page received: the server's time per variant (queue wait + inference), per timing mode.</p>");
    h.push_str("<table class=\"histograms\"><thead><tr><th>mode</th><th>variant</th><th>answers</th><th>p50</th><th>p90</th><th>p99</th></tr></thead><tbody>");
    for x in hist {
        h.push_str(&format!(
            "<tr><td>{}</td><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&x.mode),
            esc(&title(&x.id)),
            x.count,
            ms_cell(x.p50_ms),
            ms_cell(x.p90_ms),
            ms_cell(x.p99_ms)
        ));
    }
    h.push_str("</tbody></table><div class=\"charts\">");
    for x in hist {
        if let Some(svg) = x.svg.as_deref().and_then(safe_svg) {
            h.push_str(&format!(
                "<figure>{svg}<figcaption>{}, {}</figcaption></figure>",
                esc(&title(&x.id)),
                esc(&x.mode)
            ));
        }
    }
    h.push_str("</div>");
    if let Some(b) = burst {
        h.push_str(&format!(
            "<table class=\"burst\"><caption>The last burst ({})</caption><tbody>\
             <tr><th>requests</th><td class=\"num\">{}</td></tr><tr><th>answered</th><td class=\"num\">{}</td></tr>\
             <tr><th>failed</th><td class=\"num\">{}</td></tr><tr><th>wall time</th><td class=\"num\">{}</td></tr>\
             <tr><th>requests/s</th><td class=\"num\">{}</td></tr><tr><th>round trip p50 / p90 / p99</th><td class=\"num\">{} / {} / {}</td></tr>\
             </tbody></table>",
            esc(&b.mode),
            b.requests,
            b.answered,
            b.failed,
            ms_cell(Some(b.elapsed_ms)),
            b.requests_per_s
                .map_or_else(|| "–".into(), |r| format!("{r:.1}")),
            ms_cell(b.round_trip_p50_ms),
            ms_cell(b.round_trip_p90_ms),
            ms_cell(b.round_trip_p99_ms)
        ));
    }
    h.push_str("</section>");
}

fn set_html(h: &mut String, s: &SetReport) {
    h.push_str("<section id=\"labelled-set\"><h2>A labelled set, every variant</h2>");
    h.push_str(&format!(
        "<p>{} ({}): {} of {} photos done; wall time {:.1} s, the engine busy {:.1} s.{}</p>",
        esc(&s.source),
        esc(&s.status),
        s.done,
        s.photos,
        s.wall_ms / 1000.0,
        s.engine_ms / 1000.0,
        s.contention
            .as_deref()
            .map(|c| format!(" <strong>{}</strong>", esc(c)))
            .unwrap_or_default()
    ));
    h.push_str("<table class=\"set-variants\"><caption>Top-1 and top-5 among the labelled photos answered; agreement: the baseline's top-1; inference: median per photo, alone on the server's engine.</caption>\
                <thead><tr><th>variant</th><th>top-1</th><th>top-5</th><th>agrees with baseline</th><th>inference</th><th>photos/s</th><th>$ per million images</th></tr></thead><tbody>");
    let pct = |n: usize, d: usize| {
        if d == 0 {
            "–".to_string()
        } else {
            format!("{n} / {d} ({:.1}%)", 100.0 * n as f64 / d as f64)
        }
    };
    for v in &s.variants {
        h.push_str(&format!(
            "<tr data-variant=\"{}\"><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&v.id),
            esc(&v.title),
            pct(v.top1, v.labelled),
            pct(v.top5, v.labelled),
            pct(v.agree_with_baseline, v.compared),
            ms_cell(v.median_inference_ms),
            v.photos_per_s
                .map_or_else(|| "–".into(), |p| format!("{p:.1}")),
            v.usd_per_million
                .map_or_else(|| "–".into(), |u| format!("${u:.2}"))
        ));
    }
    h.push_str("</tbody></table>");
    if let Some(p) = &s.priced_at {
        h.push_str(&format!(
            "<p class=\"note\">Costs: this server's photos/s at {}. The listed machine runs at its own speed.</p>",
            esc(p)
        ));
    }
    if let Some(svg) = s.chart_svg.as_deref().and_then(safe_svg) {
        h.push_str(&format!(
            "<figure class=\"set-chart\">{svg}<figcaption>Top-1 against latency, one point per variant, from this run ({}).</figcaption></figure>",
            esc(&s.source)
        ));
    }
    if !s.skipped.is_empty() {
        h.push_str("<h3>Not run</h3><ul>");
        for (name, why) in &s.skipped {
            h.push_str(&format!("<li>{}: {}</li>", esc(name), esc(why)));
        }
        h.push_str("</ul>");
    }
    let differing: Vec<&SetPhoto> = s
        .results
        .iter()
        .filter(|r| !r.disagree.is_empty())
        .collect();
    h.push_str(&format!(
        "<h3>Where variants disagree with the baseline: {} photos</h3><ul class=\"gallery\">",
        differing.len()
    ));
    for r in differing {
        let img = r
            .crop
            .as_deref()
            .and_then(image_src)
            .map(|src| format!("<img src=\"{src}\" alt=\"\">"))
            .unwrap_or_default();
        let answers = r
            .top1
            .iter()
            .map(|(id, _, name, prob, _)| {
                format!("{}: {} ({:.0}%)", esc(&title(id)), esc(name), 100.0 * prob)
            })
            .collect::<Vec<_>>()
            .join("<br>");
        h.push_str(&format!(
            "<li data-photo=\"{}\">{img}<div><strong>{}</strong><br>label: {}<br>{answers}</div></li>",
            esc(&r.name),
            esc(&r.name),
            esc(r.label.as_deref().unwrap_or("unlabelled"))
        ));
    }
    h.push_str("</ul><table class=\"set-photos\"><caption>Every photo's top-1 per variant</caption><thead><tr><th>photo</th><th>label</th>");
    for v in &s.variants {
        h.push_str(&format!("<th>{}</th>", esc(&v.title)));
    }
    h.push_str("</tr></thead><tbody>");
    for r in &s.results {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>",
            esc(&r.name),
            esc(r.label.as_deref().unwrap_or("–"))
        ));
        for v in &s.variants {
            let cell = r
                .top1
                .iter()
                .find(|t| t.0 == v.id)
                .map(|t| esc(&t.2))
                .unwrap_or_else(|| "–".into());
            h.push_str(&format!("<td>{cell}</td>"));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>");
}

/// Offers `text` to the user as a file called `name` (a Blob and a temporary link).
pub fn download(name: &str, mime: &str, text: &str) -> Result<(), String> {
    crate::browser::download_text(name, mime, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_names_and_keeps_only_images_and_plain_svg() {
        assert_eq!(
            esc("<img src=x onerror=alert(1)>&\"'"),
            "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#39;"
        );
        assert!(image_src("data:image/jpeg;base64,AAAA+/==").is_some());
        assert!(image_src("data:image/jpeg;base64,AA\"><script>").is_none());
        assert!(image_src("https://example.com/x.jpg").is_none());
        assert!(safe_svg("<svg viewBox=\"0 0 1 1\"><rect/></svg>").is_some());
        assert!(safe_svg("<svg><script>alert(1)</script></svg>").is_none());
        assert!(safe_svg("<svg onload=\"x()\"></svg>").is_none());
        assert!(safe_svg("<svg><text> one answer only</text></svg>").is_some());
        assert!(safe_svg("<svg><image href=\"https://x\"/></svg>").is_none());
    }
}
