//! The int8 path's search: per layer and batch size every candidate (cuBLASLt GEMMs of both tiers,
//! the engine's implicit-GEMM kernels, optionally cuDNN) is checked against the int32 reference and
//! timed, the fastest kept; the captured graph must equal the eager pass bit for bit.

use super::*;

/// Steps measured under this many milliseconds a run are measured again behind a `spin` kernel
/// (see [`Int8Net::time`]).
const SHORT_MS: f32 = 0.03;

impl Int8Net {
    /// Builds the graph for exactly `batch` images (1 ≤ batch ≤ max_batch) if it does not exist yet:
    /// per layer, every candidate is checked and timed on the device.
    pub fn prepare(&mut self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.max_batch {
            return Err(Error::Shape(format!(
                "batch {batch} outside 1..={}",
                self.max_batch
            )));
        }
        if self.buckets.contains_key(&batch) {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(rt("binding the CUDA context"))?;
        let mut gemms = Vec::with_capacity(self.layers.len());
        let mut ms = Vec::with_capacity(self.layers.len());
        // Run the network op by op, choosing each layer's GEMM on the real activations of the input
        // buffer (a fixed pattern until an image is uploaded).
        for op in self.ops.clone() {
            match op {
                Op::Conv(i) => {
                    // The int32 reference in `choose` reads the im2col matrix.
                    self.im2col(i, batch)?;
                    let (g, t) = self.choose(i, batch)?;
                    self.run_choice(i, &g, self.buf(self.layers[i].dst), batch)?;
                    gemms.push(g);
                    ms.push(t);
                }
                Op::Head | Op::Gap { .. } => {}
                // A fused-residual kernel wrote the block's output already.
                Op::Add { layer, .. } if gemms.get(layer).is_some_and(Choice::adds) => {}
                _ => self.enqueue_one(op, batch)?,
            }
        }
        self.stream.synchronize().map_err(rt("layer search"))?;
        let graph = io::capture(&self.stream, || self.enqueue(&gemms, batch))?;
        // The replay must compute exactly what the eager pass computes (integer arithmetic).
        self.enqueue(&gemms, batch)?;
        let stream = self.stream.clone();
        let (eager, _) = self.io.download(&stream, batch)?;
        graph.launch().map_err(rt("launching the graph"))?;
        let (replayed, _) = self.io.download(&stream, batch)?;
        if eager != replayed {
            if self.use_cudnn {
                // As with the fp16 path's graph-API engines: some compute correctly alone but not
                // inside one captured graph. Search again without cuDNN.
                tracing::warn!(
                    batch,
                    "int8 CUDA graph replay differs from the eager pass; again without cuDNN"
                );
                self.use_cudnn = false;
                drop(graph);
                drop(gemms);
                let r = self.prepare(batch);
                self.use_cudnn = cudnn_allowed();
                return r;
            }
            return Err(Error::Runtime(format!(
                "int8 CUDA graph of batch {batch} differs from the eager pass"
            )));
        }
        graph.upload().map_err(rt("uploading the graph"))?;
        self.buckets.insert(batch, Bucket { graph, gemms, ms });
        Ok(())
    }

    /// Device time of `f` on the stream, ms: the mean of 5 runs after one untimed run.
    ///
    /// Where that comes out under [`SHORT_MS`] a run, it is measured again behind a `spin` kernel that
    /// holds the device for 0.15 ms while the host enqueues the warm-up and the timed runs: a kernel of
    /// a few microseconds (batch 1) takes about as long as enqueueing it (longer for a cuBLASLt call),
    /// and runs timed straight after each other then measured the host's launch rate — the search
    /// turned down cuBLASLt at batch 1 where its kernels were faster on the device (docs/gpu.md,
    /// 2026-12-01b: batch 1 0.420 → 0.350–0.355 ms on one H200). Longer steps keep the plain measurement,
    /// which the large batches' choices were made and checked with.
    pub(super) fn time(&self, f: impl Fn() -> Result<()>) -> Result<f32> {
        let plain = self.time_runs(&f, false)?;
        if plain >= SHORT_MS {
            return Ok(plain);
        }
        self.time_runs(&f, true)
    }

    fn time_runs(&self, f: &impl Fn() -> Result<()>, spin: bool) -> Result<f32> {
        let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
        let e0 = self.ctx.new_event(flags).map_err(rt("event"))?;
        let e1 = self.ctx.new_event(flags).map_err(rt("event"))?;
        if spin {
            let ns = 150_000i64;
            let mut k = self.stream.launch_builder(&self.ik.spin);
            k.arg(&ns);
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: no pointers; one thread reads the global timer.
            unsafe { k.launch(cfg) }.map_err(rt("spin"))?;
        }
        f()?;
        e0.record(&self.stream).map_err(rt("event"))?;
        for _ in 0..5 {
            f()?;
        }
        e1.record(&self.stream).map_err(rt("event"))?;
        e1.synchronize().map_err(rt("timing a GEMM"))?;
        Ok(e0.elapsed_ms(&e1).map_err(rt("event"))? / 5.0)
    }

    /// Largest difference and number of differing elements between `check` and `dst` (first `total`).
    pub(super) fn compare(&self, dst: drv_sys::CUdeviceptr, total: usize) -> Result<(u32, u32)> {
        self.compare_with(self.ptr(&self.check), dst, total)
    }

    /// Largest difference and number of differing elements between `a` and `dst` (first `total`).
    pub(super) fn compare_with(
        &self,
        a: drv_sys::CUdeviceptr,
        dst: drv_sys::CUdeviceptr,
        total: usize,
    ) -> Result<(u32, u32)> {
        let d = self.ptr(&self.diff);
        // SAFETY: `diff` holds two u32.
        unsafe { drv_result::memset_d8_async(d, 0, 8, self.stream.cu_stream()) }
            .map_err(rt("diff"))?;
        let tot = total as i64;
        let mut k = self.stream.launch_builder(&self.ik.diff);
        k.arg(&a).arg(&dst).arg(&tot).arg(&d);
        self.go(k, total, "diff_s8")?;
        let mut out = [0u32; 2];
        self.stream
            .memcpy_dtoh(&self.diff, &mut out)
            .map_err(rt("diff"))?;
        Ok((out[0], out[1]))
    }

    /// Whether what a candidate wrote into `dst` is the int32 tier's result in `check`: off by one step
    /// at most, where `acc·mult + bias` lands next to a rounding tie, on at most 1% of the elements.
    pub(super) fn matches_reference(
        &mut self,
        dst: drv_sys::CUdeviceptr,
        total: usize,
    ) -> Result<bool> {
        let (max, count) = self.compare(dst, total)?;
        let ok = max <= 1 && count as usize <= total / 100 + 1;
        if !ok {
            self.rejected += 1;
            tracing::debug!(max, count, "int8 candidate rejected");
        }
        Ok(ok)
    }

    /// The fastest GEMM for layer `i` at batch `n` that computes what the int32 tier computes.
    pub(super) fn choose(&mut self, i: usize, n: usize) -> Result<(Choice, f32)> {
        let l = &self.layers[i];
        let (cout, kdim) = (l.q.cout, l.q.kdim);
        let m = n * l.oh * l.oh;
        let total = m * cout;
        let bias = self.ptr(&l.bias);
        let dst = self.buf(l.dst);
        let check = self.ptr(&self.check);

        // The int32 tier: always offered; its first candidate's result is the reference.
        let int32 = LtGemm::candidates(self.handle, cout, m, kdim, Tier::Int32, 0, WORKSPACE, 4)?;
        let Some(reference) = int32.first() else {
            return Err(Error::Runtime(format!(
                "{}: cuBLASLt has no int8 GEMM for {cout}×{m}×{kdim}",
                l.q.name
            )));
        };
        self.gemm(i, reference, check, n)?;
        let mut best: Option<(Choice, f32)> = None;
        for g in int32 {
            let t = self.time(|| self.gemm(i, &g, dst, n))?;
            if best.as_ref().is_none_or(|b| t < b.1) {
                best = Some((Choice::Lt(g), t));
            }
        }
        // int8 output with the requantization in cuBLASLt's epilogue (not offered on the H200).
        let fused =
            LtGemm::candidates(self.handle, cout, m, kdim, Tier::Fused, bias, WORKSPACE, 8)?;
        for g in fused {
            if self.gemm(i, &g, dst, n).is_err() || !self.matches_reference(dst, total)? {
                continue;
            }
            let t = self.time(|| self.gemm(i, &g, dst, n))?;
            if best.as_ref().is_none_or(|b| t < b.1) {
                best = Some((Choice::Lt(g), t));
            }
        }
        // cuDNN's int8 convolutions read the activation directly (no im2col) and requantize in their
        // epilogue (`× mult[c] + bias[c]`); only unpadded layers, see `cudnn_allowed`.
        let l = &self.layers[i];
        if self.use_cudnn && l.q.pad == 0 {
            let shape = ConvShape {
                n,
                cin: l.q.cin,
                h: l.h,
                cout,
                oh: l.oh,
                k: l.q.k,
                stride: l.q.stride,
                pad: l.q.pad,
                epilogue: true,
                residual: false,
                relu: false,
                int8: true,
            };
            let ptrs = Ptrs::int8(
                self.buf(l.input),
                self.ptr(&l.w),
                dst,
                self.ptr(&l.mult),
                bias,
                self.ptr(&self.workspace),
            );
            let plans = match self.fusion.cached(&shape, &[]) {
                Some(known) => known.into_iter().collect(),
                None => self
                    .fusion
                    .candidates(&shape, WORKSPACE, &[])
                    .unwrap_or_default(),
            };
            let mut best_plan = None;
            for p in plans {
                let Ok(bound) = self.fusion.bind(&p, &shape, ptrs) else {
                    continue;
                };
                if self.fusion.execute(&bound).is_err() || !self.matches_reference(dst, total)? {
                    continue;
                }
                let t = self.time(|| self.fusion.execute(&bound))?;
                if best_plan
                    .as_ref()
                    .is_none_or(|(_, bt): &(Arc<_>, f32)| t < *bt)
                {
                    best_plan = Some((p.clone(), t));
                }
                if best.as_ref().is_none_or(|b| t < b.1) {
                    best = Some((Choice::Dnn(bound), t));
                }
            }
            self.fusion.remember(shape, &[], best_plan.map(|(p, _)| p));
        }
        self.choose_own(i, n, &mut best)?;
        best.ok_or_else(|| Error::Runtime(format!("{}: no int8 GEMM", self.layers[i].q.name)))
    }

    /// The engine's implicit-GEMM kernels for layer `i` at batch `n`, each tile shape checked against
    /// the int32 tier's result in `check` and timed; `best` becomes the fastest. The library choices pay
    /// for what the kernel does inside: the im2col pass of a 3×3 or strided layer (not the stem's, which
    /// every choice needs) and, for a block's last convolution, the `qadd` pass — there the kernel is
    /// tried both with the add inside (checked against `check` + `qadd`) and without.
    fn choose_own(&mut self, i: usize, n: usize, best: &mut Option<(Choice, f32)>) -> Result<()> {
        let l = &self.layers[i];
        let tiles = self.ig.as_ref().map_or(0, |g| g.len());
        if tiles == 0
            || !l.q.cout.is_multiple_of(16)
            || (l.input != Buf::Col && !l.q.cin.is_multiple_of(16))
        {
            return Ok(());
        }
        let total = n * l.oh * l.oh * l.q.cout;
        let dst = self.buf(l.dst);
        let extra_col = if l.im2col && l.input != Buf::Col {
            self.time(|| self.im2col(i, n))?
        } else {
            0.0
        };
        if let Some((c, t)) = best.as_mut() {
            if matches!(c, Choice::Lt(_)) {
                *t += extra_col;
            }
        }
        let mut candidates = vec![(false, dst, self.ptr(&self.check))];
        // Every choice without the add inside pays for the `qadd` pass after it.
        let mut t_add = 0.0;
        if let Some((short, out)) = self.layers[i].add {
            let (check, check_add) = (self.ptr(&self.check), self.ptr(&self.check_add));
            self.add_into(i, check, short, check_add, n)?;
            t_add = self.time(|| self.add_into(i, check, short, check_add, n))?;
            if let Some((_, t)) = best.as_mut() {
                *t += t_add;
            }
            candidates.push((true, self.buf(out), check_add));
        }
        for (add, to, reference) in candidates {
            for tile in 0..tiles {
                let (name, instr) = self.ig.as_ref().map_or(("", ""), |g| {
                    (g.tile(tile).name, g.tile(tile).instr_label())
                });
                if let Err(e) = self.own(i, tile, add, to, n) {
                    tracing::warn!(layer = %self.layers[i].q.name, tile = name, "igemm: {e}");
                    continue;
                }
                // The same arithmetic as the reference: equal, or one step off near a rounding tie
                // on at most 0.1% of the elements.
                let (max, count) = self.compare_with(reference, to, total)?;
                if max > 1 || count as usize > total / 1000 {
                    self.rejected += 1;
                    tracing::warn!(
                        layer = %self.layers[i].q.name,
                        tile = name,
                        add,
                        max,
                        count,
                        total,
                        "igemm differs from the int32 reference"
                    );
                    continue;
                }
                if count > 0 {
                    tracing::info!(layer = %self.layers[i].q.name, tile = name, count, "igemm: one step off");
                }
                let t =
                    self.time(|| self.own(i, tile, add, to, n))? + if add { 0.0 } else { t_add };
                if best.as_ref().is_none_or(|b| t < b.1) {
                    *best = Some((
                        Choice::Own {
                            tile,
                            name,
                            instr,
                            add,
                        },
                        t,
                    ));
                }
            }
        }
        Ok(())
    }
}
