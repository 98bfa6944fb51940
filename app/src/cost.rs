//! What serving a variant costs: the throughput measured on this server (the labelled-set view: one
//! photo after another, each alone on the engine) turned into dollars per million images at a
//! machine's price per hour.
//!
//! Prices go stale: every price carries its source and the date the source gave it, the page shows
//! both next to it, and the server's config (`[[machines]]` in `serve --config`) replaces the default
//! list. The page's table is editable (a price typed there is the reader's own, labelled so). The
//! throughput is this server's, not the listed machine's: the cost says what this server's speed
//! would cost at that price, which is what the reader can check by running inferscope there.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// A machine a user might deploy on, with its price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// e.g. `AWS g5.xlarge`.
    pub name: String,
    /// What it is: `GPU: 1 NVIDIA A10G, 4 vCPU`.
    pub kind: String,
    /// Price in US dollars per hour.
    pub usd_per_hour: f64,
    /// Where the price comes from (a URL or a citation).
    pub source: String,
    /// When the source gave that price (`2026-06-17`).
    pub date: String,
    /// Terms: on-demand, region, operating system.
    #[serde(default)]
    pub terms: String,
}

/// The default machines: two on-demand AWS instances, a CPU one and a GPU one, at the prices a
/// dated source stated (edit them on the page, or replace them in the server's config).
pub fn default_machines() -> Vec<Machine> {
    let source = "factualminds.com, “Amazon EC2 On-Demand Pricing: Instance Families, Regional \
                  Multipliers, and the Graviton Crossover (2026)”, \
                  https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/";
    vec![
        Machine {
            name: "AWS m7g.large".into(),
            kind: "CPU: 2 vCPU (Graviton3), 8 GiB".into(),
            usd_per_hour: 0.0816,
            source: source.into(),
            date: "2026-06-17".into(),
            terms: "on-demand, Linux, us-east-1".into(),
        },
        Machine {
            name: "AWS g5.xlarge".into(),
            kind: "GPU: 1 NVIDIA A10G, 4 vCPU, 16 GiB".into(),
            usd_per_hour: 1.006,
            source: source.into(),
            date: "2026-06-17".into(),
            terms: "on-demand, Linux, us-east-1".into(),
        },
    ]
}

/// Dollars per million images at `usd_per_hour` for a machine serving `photos_per_s`.
pub fn usd_per_million(usd_per_hour: f64, photos_per_s: f64) -> Option<f64> {
    (usd_per_hour.is_finite() && usd_per_hour >= 0.0 && photos_per_s > 0.0)
        .then(|| usd_per_hour / (photos_per_s * 3600.0) * 1e6)
}

/// Checks a machine list (from the server's config): names, finite non-negative prices, a source and
/// a date for each.
pub fn check_machines(machines: &[Machine]) -> Result<(), String> {
    for m in machines {
        if m.name.trim().is_empty() {
            return Err("a machine without a name".into());
        }
        if !m.usd_per_hour.is_finite() || m.usd_per_hour < 0.0 {
            return Err(format!(
                "{}: the price must be a number of dollars ≥ 0",
                m.name
            ));
        }
        if m.source.trim().is_empty() || m.date.trim().is_empty() {
            return Err(format!(
                "{}: every price needs its source and the date the source gave it",
                m.name
            ));
        }
    }
    Ok(())
}

/// The machines the page prices with: the server config's, or [`default_machines`].
#[server(prefix = "/api", endpoint = "machines")]
pub async fn machines() -> Result<Vec<Machine>, AppError> {
    let state = crate::ssr::state_from_context()?;
    Ok(state
        .config()
        .machines
        .clone()
        .unwrap_or_else(default_machines))
}

/// Which quantity the labelled-set chart puts on its x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Axis {
    #[default]
    Latency,
    Cost,
}

/// The cost table's state, shared with the chart.
#[derive(Clone, Copy)]
pub struct CostState {
    /// The machines as the reader sees them (prices editable).
    pub machines: RwSignal<Vec<Machine>>,
    /// Indices of prices the reader changed (shown as theirs, not the source's).
    pub edited: RwSignal<Vec<usize>>,
    /// The machine whose price the costs use.
    pub chosen: RwSignal<usize>,
    pub axis: RwSignal<Axis>,
}

impl Default for CostState {
    fn default() -> Self {
        Self::new()
    }
}

impl CostState {
    pub fn new() -> Self {
        CostState {
            machines: RwSignal::new(Vec::new()),
            edited: RwSignal::new(Vec::new()),
            chosen: RwSignal::new(0),
            axis: RwSignal::new(Axis::Latency),
        }
    }

    /// The chosen machine, if any.
    pub fn machine(&self) -> Option<Machine> {
        let i = self.chosen.get();
        self.machines.with(|m| m.get(i).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_million_images() {
        // 10 photos/s = 36,000 an hour: $1/h → $27.78 per million.
        let c = usd_per_million(1.0, 10.0).unwrap();
        assert!((c - 27.777_777).abs() < 1e-4, "{c}");
        assert_eq!(usd_per_million(1.0, 0.0), None);
        assert_eq!(usd_per_million(f64::NAN, 1.0), None);
    }

    #[test]
    fn every_default_price_has_a_source_and_a_date() {
        let machines = default_machines();
        assert!(machines.iter().any(|m| m.kind.starts_with("CPU")));
        assert!(machines.iter().any(|m| m.kind.starts_with("GPU")));
        check_machines(&machines).unwrap();
        let mut bad = machines[0].clone();
        bad.date.clear();
        assert!(check_machines(&[bad])
            .unwrap_err()
            .contains("source and the date"));
    }
}
