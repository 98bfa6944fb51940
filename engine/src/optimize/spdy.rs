//! Choosing one option per layer (here: a keep ratio per bottleneck block) that minimizes the summed
//! error under a cost budget (MACs), by dynamic programming over discretized costs, as SPDY (Frantar &
//! Alistarh 2022) does for its per-layer sparsity profiles. The costs are rounded *up* to units of
//! `budget / buckets`, so every answer fits the budget exactly; the price of the rounding is at most one
//! unit per layer of slack.

/// One option of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub cost: u64,
    pub error: f64,
}

/// For every layer the index of its chosen option, minimizing `Σ error` subject to `Σ cost ≤ budget`;
/// `None` when even the cheapest options do not fit (after rounding).
pub fn min_error_within(layers: &[Vec<Choice>], budget: u64, buckets: usize) -> Option<Vec<usize>> {
    let buckets = buckets.max(1);
    let unit = (budget / buckets as u64).max(1);
    let cap = (budget / unit) as usize;
    let units = |c: u64| c.div_ceil(unit) as usize;
    const NONE: f64 = f64::INFINITY;
    // best[u]: least error of the layers so far with total units exactly u; pick[l][u]: the option.
    let mut best = vec![NONE; cap + 1];
    best[0] = 0.0;
    let mut picks: Vec<Vec<u32>> = Vec::with_capacity(layers.len());
    for opts in layers {
        let mut next = vec![NONE; cap + 1];
        let mut pick = vec![u32::MAX; cap + 1];
        for (u, &e) in best.iter().enumerate() {
            if e == NONE {
                continue;
            }
            for (i, c) in opts.iter().enumerate() {
                let v = u + units(c.cost);
                if v <= cap && e + c.error < next[v] {
                    next[v] = e + c.error;
                    pick[v] = i as u32;
                }
            }
        }
        best = next;
        picks.push(pick);
    }
    let (mut u, _) = best
        .iter()
        .enumerate()
        .filter(|(_, e)| **e < NONE)
        .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))?;
    let mut out = vec![0usize; layers.len()];
    for l in (0..layers.len()).rev() {
        let i = picks[l][u] as usize;
        out[l] = i;
        u -= units(layers[l][i].cost);
    }
    Some(out)
}
