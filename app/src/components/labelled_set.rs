//! The labelled-set view: run a folder of labelled photos through every variant with progress; the
//! per-variant top-1 / top-5 table as it goes, accuracy against latency (one point per variant, from
//! this run), and the gallery of photos where a variant disagrees with the baseline (filterable by
//! variant; a click opens the photo in the main view). The run itself is [`crate::labelled`].

use leptos::either::Either;
use leptos::ev;
use leptos::prelude::*;
use web_sys::HtmlInputElement;

use super::cost_table::CostTable;
use super::{css_color, ms, variant_color};
use crate::cost::{usd_per_million, Axis, CostState};
use crate::facts::list_samples;
use crate::labelled::{disagreeing, disagreements, tally, SetRun, SetStatus, Tally};
use crate::run::RunState;

/// A variant's title from the registry (its id when unknown).
fn title(id: &str) -> String {
    engine::variants::by_id(id).map_or_else(|| id.to_string(), |v| v.title.to_string())
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".into(), |r| format!("{:.1}\u{a0}%", 100.0 * r))
}

#[component]
pub fn LabelledSet(
    run: RunState,
    set: SetRun,
    cost: CostState,
    hydrated: RwSignal<bool>,
) -> impl IntoView {
    let samples = Resource::new(|| (), |_| list_samples());
    let limit = RwSignal::new(String::new());
    let running = move || set.status.get() == SetStatus::Running;

    let run_samples = move |_| {
        let Some(Ok(list)) = samples.get() else {
            return;
        };
        let limit = limit
            .get_untracked()
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0);
        set.start_samples(list, limit);
    };
    let on_files = move |e: ev::Event| {
        let input: HtmlInputElement = event_target(&e);
        if let Some(list) = input.files() {
            let files: Vec<web_sys::File> =
                (0..list.length()).filter_map(|i| list.get(i)).collect();
            set.start_files(files);
        }
        input.set_value("");
    };
    let sample_count = move || {
        samples
            .get()
            .and_then(Result::ok)
            .map_or(0, |list| list.len())
    };

    view! {
        <section
            class="labelled-set"
            aria-labelledby="labelled-set-title"
            data-state=move || set.status.get().name()
        >
            <h2 id="labelled-set-title">"A labelled set, every variant"</h2>
            <p class="hint">
                "Runs a folder of labelled photos through every variant: each photo is prepared in this page (WebAssembly, as above) and runs on the server as one model call per variant, each alone on the engine, as "
                <code>"inferscope eval"</code>
                " runs them. Labels come from the file names: "
                <code>"<wnid>_name.JPEG"</code>
                " with a "
                <code>"classes.tsv"</code>
                " in the folder, or "
                <code>"imagenet_NN_LABEL.jpg"</code>
                "."
            </p>
            <div class="set-controls">
                <button
                    type="button"
                    id="set-run-samples"
                    disabled=move || !hydrated.get() || running() || sample_count() == 0
                    on:click=run_samples
                >
                    {move || format!("Run the server's {} sample photos", sample_count())}
                </button>
                <label class="set-limit">
                    "first "
                    <input
                        id="set-limit"
                        type="number"
                        min="1"
                        placeholder="all"
                        prop:value=move || limit.get()
                        on:input=move |e| limit.set(event_target_value(&e))
                    />
                </label>
                <label class="set-pick">
                    "or your photos: "
                    <input
                        id="set-files"
                        type="file"
                        multiple
                        accept="image/jpeg,image/png,image/webp,.tsv"
                        disabled=move || !hydrated.get() || running()
                        on:change=on_files
                    />
                </label>
                <label class="set-pick">
                    "a folder: "
                    <input
                        id="set-folder"
                        type="file"
                        prop:webkitdirectory=true
                        disabled=move || !hydrated.get() || running()
                        on:change=on_files
                    />
                </label>
                <button
                    type="button"
                    id="set-cancel"
                    disabled=move || !running()
                    on:click=move |_| set.cancel()
                >
                    "Cancel"
                </button>
            </div>
            <SetProgress set />
            <SetTable set />
            <CostTable set cost />
            <SetChart set cost />
            <Gallery run set />
        </section>
    }
}

#[component]
fn SetProgress(set: SetRun) -> impl IntoView {
    let line = move || {
        let status = set.status.get();
        if status == SetStatus::Idle {
            return None;
        }
        let (done, total) = (set.done(), set.total.get());
        let wall = set.wall_ms.get();
        let engine = set.engine_ms.get();
        let eta = if done > 0 && done < total && status == SetStatus::Running {
            format!(
                ", about {:.0} s left",
                wall / done as f64 * (total - done) as f64 / 1000.0
            )
        } else {
            String::new()
        };
        let overhead = (engine > 0.0).then(|| {
            format!(
                "; the engine was busy {:.1} s of {:.1} s (everything else: +{:.1} %)",
                engine / 1000.0,
                wall / 1000.0,
                100.0 * (wall - engine).max(0.0) / engine
            )
        });
        let what = match &status {
            SetStatus::Running => "Running",
            SetStatus::Done => "Done",
            SetStatus::Cancelled => "Cancelled",
            SetStatus::Failed(_) => "Stopped",
            SetStatus::Idle => "",
        };
        let error = match status {
            SetStatus::Failed(e) => Some(view! { <p class="status error" role="alert">{e}</p> }),
            _ => None,
        };
        Some(view! {
            <div class="set-progress">
                <progress max=total value=done></progress>
                <p class="status" aria-live="polite">
                    {format!(
                        "{what}: {done} of {total} photos, {} so far{eta}{}.",
                        set.source.get(),
                        overhead.unwrap_or_default()
                    )}
                </p>
                {error}
                {move || {
                    set.contention
                        .get()
                        .map(|c| view! { <p class="contention">{c}</p> })
                }}
                {move || {
                    let skipped = set.skipped.get();
                    (!skipped.is_empty())
                        .then(|| {
                            view! {
                                <details class="set-skipped">
                                    <summary>{format!("{} not run", skipped.len())}</summary>
                                    <ul>
                                        {skipped
                                            .into_iter()
                                            .map(|(name, why)| view! { <li>{format!("{name}: {why}")}</li> })
                                            .collect_view()}
                                    </ul>
                                </details>
                            }
                        })
                }}
            </div>
        })
    };
    view! { {line} }
}

/// Each variant's tally, for the table and the chart.
fn tallies(set: SetRun) -> Vec<Tally> {
    let ids = set.ids.get();
    set.rows.with(|rows| tally(rows, &ids))
}

#[component]
fn SetTable(set: SetRun) -> impl IntoView {
    let rows = move || {
        tallies(set)
            .into_iter()
            .map(|t| {
                let color = css_color(variant_color(&t.id));
                view! {
                    <tr
                        class="set-variant"
                        data-variant=t.id.clone()
                        data-answered=t.answered
                        data-labelled=t.labelled
                        data-top1=t.top1
                        data-top5=t.top5
                    >
                        <th scope="row">
                            <span class="swatch" style=format!("background:{color}")></span>
                            {title(&t.id)}
                        </th>
                        <td>{format!("{} / {}", t.top1, t.labelled)}</td>
                        <td>{percent(t.top1_rate())}</td>
                        <td>{format!("{} / {}", t.top5, t.labelled)}</td>
                        <td>{percent(t.top5_rate())}</td>
                        <td>{format!("{} / {}", t.agree, t.compared)}</td>
                        <td>{t.median_ms().map(ms).unwrap_or_else(|| "–".into())}</td>
                        <td>{t.photos_per_s().map_or_else(|| "–".into(), |p| format!("{p:.1}"))}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <Show when=move || !set.ids.with(Vec::is_empty)>
            <table class="set-table">
                <caption>
                    {move || {
                        format!(
                            "On {}: top-1 and top-5 among the {} labelled photos answered so far; agreement: same top-1 as the baseline; inference: median per photo, alone on this server's engine; photos/s: one engine, one photo after another.",
                            set.source.get(),
                            set.rows.with(|r| r.iter().filter(|r| r.class.is_some()).count()),
                        )
                    }}
                </caption>
                <thead>
                    <tr>
                        <th scope="col">"variant"</th>
                        <th scope="col">"top-1"</th>
                        <th scope="col">"%"</th>
                        <th scope="col">"top-5"</th>
                        <th scope="col">"%"</th>
                        <th scope="col">"agrees with baseline"</th>
                        <th scope="col">"inference"</th>
                        <th scope="col">"photos/s"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </Show>
    }
}

/// The drawing's coordinate system (the SVG scales to the section's width).
const W: f64 = 480.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = W - 110.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = H - 36.0;

/// A point of the accuracy chart.
pub struct Point {
    pub id: String,
    pub x: f64,
    pub y: f64,
}

/// Evenly spaced round ticks covering `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 && out.len() < 12 {
        out.push(t);
        t += step;
    }
    out
}

/// A scatter of `points` (x: `x_label`, y: top-1 %), one coloured point per variant, as SVG.
pub fn scatter(points: &[Point], x_label: &str, fmt_x: fn(f64) -> String) -> impl IntoView {
    let x_label = x_label.to_string();
    if points.is_empty() {
        return Either::Left(view! {
            <text x=LEFT y=H / 2.0 class="empty">
                "no labelled answers yet"
            </text>
        });
    }
    let x_hi = points.iter().map(|p| p.x).fold(0.0, f64::max) * 1.15;
    let x_hi = if x_hi > 0.0 { x_hi } else { 1.0 };
    let y_min = points.iter().map(|p| p.y).fold(100.0, f64::min);
    let y_lo = ((y_min - 5.0) / 5.0).floor().max(0.0) * 5.0;
    let y_hi = 100.0;
    let sx = move |x: f64| LEFT + (RIGHT - LEFT) * x / x_hi;
    let sy = move |y: f64| BOTTOM - (BOTTOM - TOP) * (y - y_lo) / (y_hi - y_lo);
    let x_ticks = ticks(0.0, x_hi)
        .into_iter()
        .map(|t| {
            view! {
                <line class="grid" x1=sx(t) x2=sx(t) y1=TOP y2=BOTTOM />
                <text class="tick" x=sx(t) y=BOTTOM + 14.0 text-anchor="middle">
                    {fmt_x(t)}
                </text>
            }
        })
        .collect_view();
    let y_ticks = ticks(y_lo, y_hi)
        .into_iter()
        .map(|t| {
            view! {
                <line class="grid" x1=LEFT x2=RIGHT y1=sy(t) y2=sy(t) />
                <text class="tick" x=LEFT - 4.0 y=sy(t) + 4.0 text-anchor="end">
                    {format!("{t:.0}%")}
                </text>
            }
        })
        .collect_view();
    let dots = points
        .iter()
        .map(|p| {
            let color = css_color(variant_color(&p.id));
            let name = title(&p.id);
            view! {
                <g class="point" data-variant=p.id.clone()>
                    <circle cx=sx(p.x) cy=sy(p.y) r="5" fill=color.clone()>
                        <title>{format!("{name}: {:.1}% top-1, {}", p.y, fmt_x(p.x))}</title>
                    </circle>
                    <text x=sx(p.x) + 8.0 y=sy(p.y) + 4.0 fill=color>
                        {name}
                    </text>
                </g>
            }
        })
        .collect_view();
    Either::Right(view! {
        {y_ticks}
        {x_ticks}
        <line class="axis" x1=LEFT x2=RIGHT y1=BOTTOM y2=BOTTOM />
        <line class="axis" x1=LEFT x2=LEFT y1=TOP y2=BOTTOM />
        <text class="axis-label" x=(LEFT + RIGHT) / 2.0 y=H - 4.0 text-anchor="middle">
            {x_label}
        </text>
        <text
            class="axis-label"
            x=12.0
            y=(TOP + BOTTOM) / 2.0
            text-anchor="middle"
            transform=format!("rotate(-90 12 {})", (TOP + BOTTOM) / 2.0)
        >
            "top-1 %"
        </text>
        {dots}
    })
}

#[component]
fn SetChart(set: SetRun, cost: CostState) -> impl IntoView {
    let drawing = move || {
        let axis = cost.axis.get();
        let machine = cost.machine();
        let points: Vec<Point> = tallies(set)
            .into_iter()
            .filter_map(|t| {
                let x = match axis {
                    Axis::Latency => t.median_ms()?,
                    Axis::Cost => {
                        usd_per_million(machine.as_ref()?.usd_per_hour, t.photos_per_s()?)?
                    }
                };
                Some(Point {
                    x,
                    y: 100.0 * t.top1_rate()?,
                    id: t.id,
                })
            })
            .collect();
        match axis {
            Axis::Latency => scatter(&points, "inference per photo, median (ms)", |x| {
                format!("{x:.0}")
            }),
            Axis::Cost => scatter(
                &points,
                &format!(
                    "$ per million images at {}'s price, this server's throughput",
                    machine.map(|m| m.name).unwrap_or_default()
                ),
                |x| format!("${x:.2}"),
            ),
        }
    };
    let caption = move || {
        let against = match cost.axis.get() {
            Axis::Latency => "latency: each variant's median inference per photo, alone on this server's engine".to_string(),
            Axis::Cost => format!(
                "cost: dollars per million images at {} (see the table above), from this server's photos/s",
                cost.machine().map_or_else(String::new, |m| {
                    format!("{}'s ${:.4}/h", m.name, m.usd_per_hour)
                })
            ),
        };
        format!(
            "Top-1 against {}, one point per variant, from this run: {} labelled photos of {}.",
            against,
            set.rows
                .with(|r| r.iter().filter(|r| r.class.is_some()).count()),
            set.source.get()
        )
    };
    view! {
        <Show when=move || !set.ids.with(Vec::is_empty)>
            <label class="set-axis">
                "chart: top-1 against "
                <select
                    id="set-x-axis"
                    on:change=move |e| {
                        cost.axis
                            .set(if event_target_value(&e) == "cost" { Axis::Cost } else { Axis::Latency })
                    }
                >
                    <option value="latency" selected=move || cost.axis.get() == Axis::Latency>
                        "latency"
                    </option>
                    <option value="cost" selected=move || cost.axis.get() == Axis::Cost>
                        "cost per million images"
                    </option>
                </select>
            </label>
            <figure class="set-chart" data-axis=move || match cost.axis.get() { Axis::Latency => "latency", Axis::Cost => "cost" }>
                <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=caption>
                    {drawing}
                </svg>
                <figcaption>{caption}</figcaption>
            </figure>
        </Show>
    }
}

#[component]
fn Gallery(run: RunState, set: SetRun) -> impl IntoView {
    let entries = move || {
        let filter = set.filter.get();
        let only = (!filter.is_empty()).then_some(filter.as_str());
        set.rows.with(|rows| {
            disagreements(rows, only)
                .into_iter()
                .map(|r| {
                    let base = r.preds.iter().find(|p| p.id == crate::labelled::baseline_id());
                    let differing = disagreeing(r);
                    let others = r
                        .preds
                        .iter()
                        .filter(|p| differing.contains(&p.id.as_str()))
                        .map(|p| {
                            let color = css_color(variant_color(&p.id));
                            view! {
                                <li style=format!("border-left-color:{color}")>
                                    {format!("{}: {} ({:.0}%)", title(&p.id), p.top1_name, 100.0 * p.top1_prob)}
                                </li>
                            }
                        })
                        .collect_view();
                    let photo = r.photo;
                    let open = move |_| {
                        if let Some(source) = set.source_of(photo) {
                            crate::browser::scroll_to_top();
                            run.start(source);
                        }
                    };
                    view! {
                        <li class="disagreement" data-photo=r.name.clone() data-variants=differing.join(" ")>
                            <button type="button" on:click=open title=format!("Open {} in the main view", r.name)>
                                {r.thumb.clone().map(|src| view! { <img src=src alt="" width="112" height="112" /> })}
                                <span class="photo-name">{r.name.clone()}</span>
                            </button>
                            <p class="label">
                                {r.label.clone().map_or_else(|| "unlabelled".to_string(), |l| format!("label: {l}"))}
                            </p>
                            <p class="baseline">
                                {base.map(|b| format!("Baseline: {} ({:.0}%)", b.top1_name, 100.0 * b.top1_prob))}
                            </p>
                            <ul class="others">{others}</ul>
                        </li>
                    }
                })
                .collect_view()
        })
    };
    let count = move || {
        let filter = set.filter.get();
        let only = (!filter.is_empty()).then_some(filter.as_str());
        set.rows.with(|rows| disagreements(rows, only).len())
    };
    let options = move || {
        set.ids
            .get()
            .into_iter()
            .filter(|id| id != crate::labelled::baseline_id())
            .map(|id| view! { <option value=id.clone()>{title(&id)}</option> })
            .collect_view()
    };
    view! {
        <Show when=move || { set.ids.with(|ids| ids.len() > 1) }>
            <section class="gallery" aria-labelledby="gallery-title">
                <h3 id="gallery-title">
                    {move || format!("Where variants disagree with the baseline: {} photos", count())}
                </h3>
                <label>
                    "show "
                    <select
                        id="set-filter"
                        prop:value=move || set.filter.get()
                        on:change=move |e| set.filter.set(event_target_value(&e))
                    >
                        <option value="">"every variant"</option>
                        {options}
                    </select>
                </label>
                <ul class="disagreements">{entries}</ul>
            </section>
        </Show>
    }
}
