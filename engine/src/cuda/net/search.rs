//! The fp16 executor's search: per layer and batch size, every cuDNN candidate (legacy algorithms,
//! graph-API engine configurations with and without the fused epilogue) is run, checked against the
//! legacy reference and timed; the fastest is kept, and the captured graph is checked against the eager
//! pass.

use super::*;

/// How many replays of a captured graph the guard compares with the eager pass.
pub(super) const REPLAYS: usize = 6;

impl GpuNet {
    /// Descriptors, algorithm search and capture of the graph for `batch` images.
    pub(super) fn build(
        &mut self,
        batch: usize,
        mode: Search,
    ) -> Result<(Vec<ConvPlan>, CudaGraph)> {
        let nhwc = dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        let mut plans = Vec::with_capacity(self.layers.len());
        for op in &self.ops {
            if let Op::Conv { layer, h, oh, .. } = *op {
                let l = &self.layers[layer];
                let d = |c: usize, s: usize| [batch as i32, c as i32, s as i32, s as i32];
                let x = self
                    .dnn
                    .create_4d_tensor::<f16>(nhwc, d(l.cin, h))
                    .map_err(rt("tensor descriptor"))?;
                let y = self
                    .dnn
                    .create_4d_tensor::<f16>(nhwc, d(l.cout, oh))
                    .map_err(rt("tensor descriptor"))?;
                plans.push(ConvPlan {
                    x,
                    y,
                    out_elems: batch * oh * oh * l.cout,
                    choice: Choice::Legacy {
                        algo: ALGOS[0],
                        fused: true,
                    },
                    ms: 0.0,
                    dense_ms: 0.0,
                    sparse_ms: None,
                });
            }
        }
        for op in self.ops.clone() {
            if let Op::Conv {
                layer,
                src,
                dst,
                z,
                h,
                oh,
            } = op
            {
                self.choose(&mut plans[layer], layer, src, dst, z, batch, h, oh, mode)?;
            }
        }
        let graph = io::capture(&self.stream, || self.enqueue(&plans, batch))?;
        Ok((plans, graph))
    }

    /// Runs the plans eagerly, then replays the graph [`REPLAYS`] times, on whatever the input buffer
    /// holds, and compares each replay's logits with the eager ones: `None` if every replay is equal
    /// up to 1e-3 of the largest logit (the plans are deterministic), else the largest difference.
    /// One replay is not enough: a captured graph that raced gave the right logits on one replay and
    /// wrong ones (off by up to 0.37) on a later one (H200, cuDNN 9.14, 2026-11-30c).
    pub(super) fn replay_differs(
        &mut self,
        plans: &[ConvPlan],
        graph: &CudaGraph,
        batch: usize,
    ) -> Result<Option<f32>> {
        self.enqueue(plans, batch)?;
        let stream = self.stream.clone();
        let (eager, _) = self.io.download(&stream, batch)?;
        let scale = eager.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut worst = 0f32;
        for _ in 0..REPLAYS {
            graph.launch().map_err(rt("launching the graph"))?;
            let (replayed, _) = self.io.download(&stream, batch)?;
            let diff = eager
                .iter()
                .zip(&replayed)
                .map(|(a, b)| (a - b).abs())
                .fold(
                    0f32,
                    |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
                );
            worst = worst.max(diff);
        }
        Ok((worst > 1e-3 * scale).then_some(worst))
    }

    /// Times `f` (after one untimed call): `None` if the first call fails.
    pub(super) fn time_op(
        &self,
        e0: &CudaEvent,
        e1: &CudaEvent,
        f: impl Fn() -> Result<()>,
    ) -> Result<Option<f32>> {
        const REPS: usize = 3;
        if f().is_err() {
            return Ok(None);
        }
        self.stream
            .synchronize()
            .map_err(rt("trying a convolution algorithm"))?;
        e0.record(&self.stream).map_err(rt("event"))?;
        for _ in 0..REPS {
            f()?;
        }
        e1.record(&self.stream).map_err(rt("event"))?;
        e1.synchronize().map_err(rt("event"))?;
        Ok(Some(e0.elapsed_ms(e1).map_err(rt("event"))? / REPS as f32))
    }

    /// Times every way to run one layer at one batch size — the legacy API's algorithms (fused
    /// first), then the graph API's engine configurations with and without the fused epilogue — and
    /// keeps the fastest.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn choose(
        &mut self,
        plan: &mut ConvPlan,
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
        batch: usize,
        h: usize,
        oh: usize,
        mode: Search,
    ) -> Result<()> {
        let (e0, e1) = (self.event()?, self.event()?);
        let graph_api = mode != Search::Legacy;
        let excluded = mode.excluded_behavior();
        let mut best: Option<(Algo, bool, f32)> = None;
        for fused in [true, false] {
            for algo in ALGOS {
                let need = if fused {
                    self.fused_op(plan, layer).get_workspace_size(algo)
                } else {
                    self.plain_op(plan, layer).get_workspace_size(algo)
                };
                match need {
                    Ok(bytes) if bytes <= self.workspace.len() => {}
                    _ => continue,
                }
                let t = self.time_op(&e0, &e1, || {
                    self.run_legacy(plan, layer, algo, fused, src, dst, z)
                })?;
                if let Some(ms) = t {
                    if best.is_none_or(|(_, _, b)| ms < b) {
                        best = Some((algo, fused, ms));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }

        // The legacy result is the reference every graph-API candidate must match.
        let reference = match best {
            Some((algo, fused, _)) if graph_api => {
                self.run_legacy(plan, layer, algo, fused, src, dst, z)?;
                let from = self.buf(dst).prefix(plan.out_elems);
                let mut to = Dev::of(&self.scratch, &self.stream).prefix(plan.out_elems);
                self.stream
                    .memcpy_dtod(&from, &mut to)
                    .map_err(rt("copying a reference output"))?;
                true
            }
            _ => false,
        };
        let mut best_graph: Option<(Bound, bool, f32)> = None;
        let mut rejected = 0;
        if graph_api {
            let l = &self.layers[layer];
            let base = ConvShape {
                n: batch,
                cin: l.cin,
                h,
                cout: l.cout,
                oh,
                k: l.k,
                stride: l.stride,
                pad: l.pad,
                epilogue: true,
                residual: z.is_some(),
                relu: l.relu,
                int8: false,
            };
            let ptrs = Ptrs {
                x: self.buf(src).ptr,
                w: Dev::of(&l.w, &self.stream).ptr,
                y: self.buf(dst).ptr,
                b: Dev::of(&l.b, &self.stream).ptr,
                z: z.map(|b| self.buf(b).ptr).unwrap_or(0),
                workspace: Dev::of(&self.workspace, &self.stream).ptr,
            };
            let mut learned = Vec::new();
            for epilogue in [true, false] {
                let shape = ConvShape { epilogue, ..base };
                let candidates = match self.fusion.cached(&shape, excluded) {
                    Some(known) => known.into_iter().collect(),
                    None => self
                        .fusion
                        .candidates(&shape, self.workspace.len(), excluded)
                        .unwrap_or_default(),
                };
                let mut best_here: Option<(Arc<Plan>, f32)> = None;
                for p in candidates {
                    let Ok(bound) = self.fusion.bind(&p, &shape, ptrs) else {
                        continue;
                    };
                    let t = self.time_op(&e0, &e1, || {
                        self.run_graph(&bound, epilogue, layer, plan.out_elems, dst, z)
                    })?;
                    let Some(ms) = t else { continue };
                    if reference
                        && !self.graph_candidate_ok(
                            &bound,
                            epilogue,
                            layer,
                            plan.out_elems,
                            dst,
                            z,
                        )?
                    {
                        rejected += 1;
                        continue;
                    }
                    if best_here.as_ref().is_none_or(|(_, b)| ms < *b) {
                        best_here = Some((p.clone(), ms));
                    }
                    if best_graph.as_ref().is_none_or(|(_, _, b)| ms < *b) {
                        best_graph = Some((bound, epilogue, ms));
                    }
                }
                learned.push((shape, best_here.map(|(p, _)| p)));
            }
            for (shape, p) in learned {
                self.fusion.remember(shape, excluded, p);
            }
        }
        self.rejected += rejected;

        // 2:4 layers: cuSPARSELt on the sparse tensor cores, checked against the same reference.
        let sparse = if mode == Search::Full && reference {
            self.sparse_candidate(
                &e0,
                &e1,
                layer,
                src,
                dst,
                z,
                batch * oh * oh,
                plan.out_elems,
            )?
        } else {
            None
        };
        plan.sparse_ms = sparse.as_ref().map(|s| s.1);

        let legacy_ms = best.map(|b| b.2).unwrap_or(f32::INFINITY);
        let graph_ms = best_graph.as_ref().map(|b| b.2).unwrap_or(f32::INFINITY);
        plan.dense_ms = legacy_ms.min(graph_ms);
        match (best, best_graph) {
            _ if sparse
                .as_ref()
                .is_some_and(|s| s.1 < legacy_ms.min(graph_ms) || self.opts.prefer_sparse) =>
            {
                let (gemm, ms) = sparse.expect("checked");
                plan.choice = Choice::Sparse { gemm };
                plan.ms = ms;
            }
            (_, Some((bound, epilogue, ms))) if ms < legacy_ms => {
                plan.choice = Choice::Graph { bound, epilogue };
                plan.ms = ms;
            }
            (Some((algo, fused, ms)), _) => {
                plan.choice = Choice::Legacy { algo, fused };
                plan.ms = ms;
            }
            _ => {
                return Err(Error::Runtime(format!(
                    "cuDNN has no algorithm for {} at batch {batch}",
                    self.layers[layer].name
                )))
            }
        }
        Ok(())
    }

    pub(super) fn event(&self) -> Result<CudaEvent> {
        self.ctx
            .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(rt("creating an event"))
    }

    /// How far the first `n` values of buffer `dst` are from `scratch`: (max |y − s| / max |s|,
    /// ‖y − s‖ / ‖s‖).
    pub(super) fn diff_to_scratch(&self, dst: Buf, n: usize) -> Result<(f32, f32)> {
        let mut d = Dev::of(&self.diff, &self.stream);
        self.stream.memset_zeros(&mut d).map_err(rt("memset"))?;
        let (y, r) = (self.buf(dst).ptr, Dev::of(&self.scratch, &self.stream).ptr);
        let sums = d.ptr + 8;
        let count = n as i64;
        let mut k = self.stream.launch_builder(&self.k.max_diff);
        k.arg(&y).arg(&r).arg(&count).arg(&d.ptr).arg(&sums);
        let cfg = LaunchConfig {
            grid_dim: (blocks(n).min(1024), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: both buffers hold ≥ n values; `diff` holds 4 words.
        unsafe { k.launch(cfg) }.map_err(rt("max_diff"))?;
        let mut host = [0u32; 4];
        self.stream
            .memcpy_dtoh(&d, &mut host)
            .map_err(rt("reading max_diff"))?;
        self.stream.synchronize().map_err(rt("max_diff"))?;
        let max = f32::from_bits(host[0]) / f32::from_bits(host[1]).max(1e-3);
        let l2 = (f32::from_bits(host[2]) / f32::from_bits(host[3]).max(1e-12)).sqrt();
        Ok((max, l2))
    }

    /// Whether a graph-API candidate reproduces the legacy reference in `scratch` (see
    /// [`GpuNet::candidate_ok`]).
    pub(super) fn graph_candidate_ok(
        &self,
        bound: &Bound,
        epilogue: bool,
        layer: usize,
        out_elems: usize,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<bool> {
        self.candidate_ok(dst, out_elems, || {
            self.run_graph(bound, epilogue, layer, out_elems, dst, z)
        })
    }

    /// Whether a candidate that has just run reproduces the legacy reference in `scratch`, both as
    /// run eagerly and replayed from a CUDA graph of its own (into a poisoned output buffer), within
    /// fp16 rounding: max error ≤ 1e-2 of the largest value, relative L2 error ≤ 1e-3.
    pub(super) fn candidate_ok(
        &self,
        dst: Buf,
        out_elems: usize,
        run: impl Fn() -> Result<()>,
    ) -> Result<bool> {
        let close = |(max, l2): (f32, f32)| max <= 1e-2 && l2 <= 1e-3;
        if !close(self.diff_to_scratch(dst, out_elems)?) {
            return Ok(false);
        }
        self.fill(BUFS.iter().position(|&b| b == dst).unwrap_or(0))?;
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(rt("starting graph capture"))?;
        let ran = run();
        let graph = self
            .stream
            .end_capture(drv_sys::CUgraphInstantiate_flags(0));
        let graph = match (ran, graph) {
            (Ok(()), Ok(Some(g))) => g,
            _ => return Ok(false),
        };
        graph.launch().map_err(rt("launching a test graph"))?;
        Ok(close(self.diff_to_scratch(dst, out_elems)?))
    }

    /// The cuSPARSELt candidate of a 2:4 layer at one batch size (`pixels` output positions): plan
    /// (cuSPARSELt's default algorithm for the shape), timing, and the check against the legacy
    /// reference in `scratch`. `None` where cuSPARSELt does not take the shape or computes something else.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sparse_candidate(
        &mut self,
        e0: &CudaEvent,
        e1: &CudaEvent,
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
        pixels: usize,
        out_elems: usize,
    ) -> Result<Option<(SparseGemm, f32)>> {
        let (Some(lt), Some(w)) = (self.sparse.as_ref(), self.layers[layer].sparse_w.as_ref())
        else {
            return Ok(None);
        };
        // Pixel counts (GEMM columns) that are multiples of 16, as in every shape checked on the H200
        // (scripts/gpu/cslt_probe.py): small batches of the last stages (7×7, 14×14) stay dense.
        if !pixels.is_multiple_of(16) {
            return Ok(None);
        }
        let l = &self.layers[layer];
        let bias = Dev::of(&l.b, &self.stream).ptr;
        let gemm = match SparseGemm::new(lt, w, pixels, bias, l.relu, z.is_some()) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(layer = %l.name, pixels, error = %e, "no cuSPARSELt plan");
                return Ok(None);
            }
        };
        let p = self.gemm_ptrs(src, dst, z);
        if gemm.workspace > self.workspace.len() {
            return Ok(None);
        }
        let t = self.time_op(e0, e1, || gemm.run(lt, w, p, &self.stream))?;
        let Some(ms) = t else { return Ok(None) };
        if !self.candidate_ok(dst, out_elems, || gemm.run(lt, w, p, &self.stream))? {
            self.rejected += 1;
            return Ok(None);
        }
        Ok(Some((gemm, ms)))
    }

    /// The device pointers of a layer's GEMM on the sparse path.
    pub(super) fn gemm_ptrs(&self, src: Buf, dst: Buf, z: Option<Buf>) -> GemmPtrs {
        GemmPtrs {
            x: self.buf(src).ptr,
            y: self.buf(dst).ptr,
            z: z.map(|b| self.buf(b).ptr).unwrap_or(0),
            workspace: Dev::of(&self.workspace, &self.stream).ptr,
        }
    }
}
