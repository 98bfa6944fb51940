//! Parallel sums over calibration images whose result does not depend on the thread count or on how
//! the work happened to be scheduled.
//!
//! Why: rayon's `fold` + `reduce` groups the images by how work was stolen, and float sums grouped
//! differently differ in their last bits. SparseGPT's greedy choice of which weight to drop next turns
//! such bits into other masks, so the same `build-variants` command wrote different 2:4 files (86.0%
//! and 86.2% on the held-out photos, docs/variants.md, session 11). Here the images are cut into
//! chunks of [`CHUNK`] consecutive ones, each chunk is computed on one thread in image order, and the
//! chunks' results are added one after the other in chunk order: the same bits on 1 thread or 64.

use std::ops::Range;

use rayon::prelude::*;

/// Images per chunk. It fixes the order of every float addition, so changing it changes the built
/// files' last bits (not their quality); it also bounds the work one thread does before its result is
/// added.
pub const CHUNK: usize = 8;

/// The chunks of `0..len`: consecutive ranges of [`CHUNK`] (the last may be shorter).
fn chunks(len: usize) -> Vec<Range<usize>> {
    (0..len)
        .step_by(CHUNK)
        .map(|s| s..(s + CHUNK).min(len))
        .collect()
}

/// `combine(…combine(combine(chunk(0..8), chunk(8..16)), chunk(16..24))…)` over the chunks of
/// `0..len`, the chunks computed in parallel. At most one chunk per thread is waiting to be combined,
/// so memory stays bounded by the thread count (a chunk's result may be a large matrix). `None` when
/// `len` is 0.
pub fn reduce_chunks<A, F, C>(len: usize, chunk: F, mut combine: C) -> Option<A>
where
    A: Send,
    F: Fn(Range<usize>) -> A + Sync,
    C: FnMut(A, A) -> A,
{
    let ranges = chunks(len);
    let wave = rayon::current_num_threads().max(1);
    let mut acc: Option<A> = None;
    for w in ranges.chunks(wave) {
        let parts: Vec<A> = w.par_iter().map(|r| chunk(r.clone())).collect();
        for p in parts {
            acc = Some(match acc {
                None => p,
                Some(a) => combine(a, p),
            });
        }
    }
    acc
}

/// [`reduce_chunks`] for large results, without allocating one per chunk: `compute(range, slot)`
/// overwrites a slot (one per thread, made by `new_slot` once) with a chunk's result, and `add(slot)`
/// takes the slots in chunk order. For sums of big matrices (layer Hessians of up to 4,608 × 4,608),
/// where allocating and zeroing a matrix per chunk would cost as much as the chunk's own product.
pub fn reduce_chunks_into<S, N, F, G>(len: usize, new_slot: N, compute: F, mut add: G)
where
    S: Send,
    N: Fn() -> S,
    F: Fn(Range<usize>, &mut S) + Sync,
    G: FnMut(&S),
{
    let ranges = chunks(len);
    let wave = rayon::current_num_threads().max(1).min(ranges.len());
    let mut slots: Vec<S> = (0..wave).map(|_| new_slot()).collect();
    for w in ranges.chunks(wave) {
        slots
            .par_iter_mut()
            .zip(w)
            .for_each(|(s, r)| compute(r.clone(), s));
        for s in &slots[..w.len()] {
            add(s);
        }
    }
}

/// [`reduce_chunks`] with each chunk folded image by image from `init()`: `fold(acc, index)`.
pub fn fold_ordered<A, I, F, C>(len: usize, init: I, fold: F, combine: C) -> A
where
    A: Send,
    I: Fn() -> A + Sync,
    F: Fn(A, usize) -> A + Sync,
    C: FnMut(A, A) -> A,
{
    reduce_chunks(len, |r| r.fold(init(), &fold), combine).unwrap_or_else(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose f32 sum depends on the order of the additions.
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as f32 * 0.618_034).fract();
                (x - 0.5) * 10f32.powi((i % 7) as i32 - 3)
            })
            .collect()
    }

    fn sum_on(threads: usize, v: &[f32]) -> f32 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fold_ordered(v.len(), || 0f32, |a, i| a + v[i], |a, b| a + b))
    }

    #[test]
    fn the_same_bits_on_any_thread_count() {
        let v = values(1001);
        let one = sum_on(1, &v);
        for t in [2, 3, 5, 8] {
            assert_eq!(sum_on(t, &v).to_bits(), one.to_bits(), "{t} threads");
        }
        // The order is the chunked one: chunks summed on their own, then added in order.
        let expect = v
            .chunks(CHUNK)
            .map(|c| c.iter().fold(0f32, |a, &x| a + x))
            .reduce(|a, b| a + b)
            .unwrap();
        assert_eq!(one.to_bits(), expect.to_bits());
    }

    #[test]
    fn slots_give_the_bits_of_chunk_results() {
        let v = values(517);
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut acc = 0f32;
                    reduce_chunks_into(
                        v.len(),
                        || 0f32,
                        |r, s| *s = v[r].iter().fold(0f32, |a, &x| a + x),
                        |s| acc += s,
                    );
                    acc
                })
        };
        let expect = reduce_chunks(
            v.len(),
            |r| v[r].iter().fold(0f32, |a, &x| a + x),
            |a, b| a + b,
        )
        .unwrap();
        for t in [1, 2, 3, 7] {
            assert_eq!(on(t).to_bits(), expect.to_bits(), "{t} threads");
        }
    }

    #[test]
    fn every_index_once_and_empty_input() {
        let seen = fold_ordered(
            37,
            Vec::new,
            |mut a, i| {
                a.push(i);
                a
            },
            |mut a, b| {
                a.extend(b);
                a
            },
        );
        assert_eq!(seen, (0..37).collect::<Vec<_>>());
        assert_eq!(fold_ordered(0, || 7u32, |a, _| a + 1, |a, b| a + b), 7);
        assert!(reduce_chunks(0, |r| r.len(), |a, b| a + b).is_none());
    }
}
