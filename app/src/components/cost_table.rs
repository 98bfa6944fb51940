//! What it costs: the machines a user would deploy on (each price with its source and date, editable)
//! and, per variant, the labelled set's throughput on this server turned into dollars per million
//! images at the chosen machine's price ([`crate::cost`]).

use leptos::prelude::*;

use super::{css_color, variant_color};
use crate::cost::{machines, usd_per_million, CostState};
use crate::labelled::{tally, SetRun};

fn title(id: &str) -> String {
    engine::variants::by_id(id).map_or_else(|| id.to_string(), |v| v.title.to_string())
}

#[component]
pub fn CostTable(set: SetRun, cost: CostState) -> impl IntoView {
    let listed = Resource::new(|| (), |_| machines());
    // The server's list, once, into the editable table.
    Effect::new(move |_| {
        if let Some(Ok(list)) = listed.get() {
            if cost.machines.with_untracked(Vec::is_empty) {
                cost.machines.set(list);
            }
        }
    });
    let rows = move || {
        cost.machines
            .get()
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let edited = move || cost.edited.with(|e| e.contains(&i));
                let on_price = move |e: leptos::ev::Event| {
                    if let Ok(v) = event_target_value(&e).trim().parse::<f64>() {
                        if v.is_finite() && v >= 0.0 {
                            cost.machines.update(|ms| ms[i].usd_per_hour = v);
                            cost.edited.update(|e| {
                                if !e.contains(&i) {
                                    e.push(i);
                                }
                            });
                        }
                    }
                };
                let price = m.usd_per_hour;
                view! {
                    <tr class="machine" data-machine=m.name.clone()>
                        <td>
                            <input
                                type="radio"
                                name="cost-machine"
                                id=format!("cost-machine-{i}")
                                prop:checked=move || cost.chosen.get() == i
                                on:change=move |_| cost.chosen.set(i)
                            />
                        </td>
                        <th scope="row">
                            <label for=format!("cost-machine-{i}")>{m.name.clone()}</label>
                        </th>
                        <td>{m.kind.clone()}</td>
                        <td>
                            "$"
                            <input
                                class="price"
                                type="number"
                                min="0"
                                step="any"
                                value=price
                                aria-label=format!("{} price per hour in dollars", m.name)
                                on:change=on_price
                            />
                            "/h"
                        </td>
                        <td class="source">
                            {move || {
                                if edited() {
                                    "your price (edited on this page)".to_string()
                                } else {
                                    format!("{} ({}), as of {}", m.source, m.terms, m.date)
                                }
                            }}
                        </td>
                    </tr>
                }
            })
            .collect_view()
    };
    let costs = move || {
        let machine = cost.machine()?;
        let ids = set.ids.get();
        let tallies = set.rows.with(|rows| tally(rows, &ids));
        let edited = cost.edited.with(|e| e.contains(&cost.chosen.get()));
        let lines = tallies
            .into_iter()
            .map(|t| {
                let per_s = t.photos_per_s();
                let usd = per_s.and_then(|p| usd_per_million(machine.usd_per_hour, p));
                let color = css_color(variant_color(&t.id));
                view! {
                    <tr class="cost" data-variant=t.id.clone() data-usd-per-million=usd.map(|u| format!("{u:.4}"))>
                        <th scope="row">
                            <span class="swatch" style=format!("background:{color}")></span>
                            {title(&t.id)}
                        </th>
                        <td>{per_s.map_or_else(|| "–".into(), |p| format!("{p:.2}"))}</td>
                        <td>{usd.map_or_else(|| "–".into(), |u| format!("${u:.2}"))}</td>
                    </tr>
                }
            })
            .collect_view();
        let basis = if edited {
            format!(
                "at your price for {}, ${:.4}/h",
                machine.name, machine.usd_per_hour
            )
        } else {
            format!(
                "at {}'s ${:.4}/h ({}, {}, as of {})",
                machine.name, machine.usd_per_hour, machine.terms, machine.source, machine.date
            )
        };
        Some(view! {
            <table class="set-table cost-table">
                <caption>
                    {format!(
                        "Dollars per million images {basis}, from the throughput this server measured on {} (one engine, one photo after another, each alone). That is this server's speed at that machine's price: the listed machine runs at its own speed (run inferscope there to measure it).",
                        set.source.get()
                    )}
                </caption>
                <thead>
                    <tr>
                        <th scope="col">"variant"</th>
                        <th scope="col">"photos/s here"</th>
                        <th scope="col">"$ per million images"</th>
                    </tr>
                </thead>
                <tbody>{lines}</tbody>
            </table>
        })
    };
    view! {
        <Show when=move || !set.ids.with(Vec::is_empty)>
            <section class="cost" aria-labelledby="cost-title">
                <h3 id="cost-title">"What it costs"</h3>
                <table class="set-table machines">
                    <caption>
                        "Machines to price with: each price with its source and the date the source gave it (prices change: check the source). Edit a price to use your own; the server's config can replace the list ("
                        <code>"[[machines]]"</code>
                        " in "
                        <code>"serve --config"</code>
                        ")."
                    </caption>
                    <thead>
                        <tr>
                            <th scope="col">"use"</th>
                            <th scope="col">"machine"</th>
                            <th scope="col">"what"</th>
                            <th scope="col">"price"</th>
                            <th scope="col">"source"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
                {costs}
            </section>
        </Show>
    }
}
