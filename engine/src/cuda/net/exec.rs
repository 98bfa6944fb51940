//! The fp16 executor's execution: how a chosen plan runs one layer, and the whole forward pass as it
//! is enqueued (eagerly or into the captured graph).

use super::*;

impl GpuNet {
    pub(super) fn fused_op<'a>(
        &'a self,
        plan: &'a ConvPlan,
        layer: usize,
    ) -> ConvBiasActivationForward<'a, f16, f32, f32, f16> {
        let l = &self.layers[layer];
        ConvBiasActivationForward {
            conv: &l.conv,
            act: &l.act,
            x: &plan.x,
            w: &l.filter,
            z: &plan.y,
            bias: &l.bias,
            y: &plan.y,
        }
    }

    pub(super) fn plain_op<'a>(
        &'a self,
        plan: &'a ConvPlan,
        layer: usize,
    ) -> ConvForward<'a, f16, f32, f16> {
        let l = &self.layers[layer];
        ConvForward {
            conv: &l.conv,
            x: &plan.x,
            w: &l.filter,
            y: &plan.y,
        }
    }

    /// Runs a layer through the legacy API.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_legacy(
        &self,
        plan: &ConvPlan,
        layer: usize,
        algo: Algo,
        fused: bool,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        let l = &self.layers[layer];
        let x = self.buf(src);
        let mut y = self.buf(dst);
        let zz = self.buf(z.unwrap_or(dst));
        let w = Dev::of(&l.w, &self.stream);
        let mut ws = Dev::of(&self.workspace, &self.stream);
        let err = |e| Error::Runtime(format!("{} ({algo:?}, fused {fused}): {e:?}", l.name));
        if fused {
            let b = Dev::of(&l.b, &self.stream);
            let alpha2 = if z.is_some() { f16::ONE } else { f16::ZERO };
            // SAFETY: descriptors match the buffers (NHWC fp16, sized for max_batch ≥ batch).
            unsafe {
                self.fused_op(plan, layer).launch(
                    algo,
                    Some(&mut ws),
                    (f16::ONE, alpha2),
                    &x,
                    &w,
                    &zz,
                    &b,
                    &mut y,
                )
            }
            .map_err(err)?;
        } else {
            // SAFETY: as above.
            unsafe {
                self.plain_op(plan, layer).launch(
                    algo,
                    Some(&mut ws),
                    (f16::ONE, f16::ZERO),
                    &x,
                    &w,
                    &mut y,
                )
            }
            .map_err(err)?;
            self.bias_act(layer, plan.out_elems, dst, z)?;
        }
        Ok(())
    }

    /// Runs a layer through a graph-API plan (and the `bias_act` kernel when the graph has no
    /// epilogue).
    pub(super) fn run_graph(
        &self,
        bound: &Bound,
        epilogue: bool,
        layer: usize,
        out_elems: usize,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        self.fusion.execute(bound)?;
        if !epilogue {
            self.bias_act(layer, out_elems, dst, z)?;
        }
        Ok(())
    }

    /// `y = act(y + bias (+ z))` in place.
    pub(super) fn bias_act(
        &self,
        layer: usize,
        total: usize,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        let l = &self.layers[layer];
        let y = self.buf(dst);
        let b = Dev::of(&l.b, &self.stream);
        let zp: u64 = z.map(|z| self.buf(z).ptr).unwrap_or(0);
        let (n, c, relu) = (total as i64, l.cout as i32, i32::from(l.relu));
        let mut k = self.stream.launch_builder(&self.k.bias_act);
        k.arg(&y.ptr)
            .arg(&b.ptr)
            .arg(&zp)
            .arg(&n)
            .arg(&c)
            .arg(&relu);
        // SAFETY: y and z hold `total` values, bias `c`.
        unsafe { k.launch(cfg1d(total)) }.map_err(rt("bias_act"))?;
        Ok(())
    }

    /// Runs a layer the way its plan says.
    pub(super) fn enqueue_conv(
        &self,
        plan: &ConvPlan,
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        match &plan.choice {
            Choice::Legacy { algo, fused } => {
                self.run_legacy(plan, layer, *algo, *fused, src, dst, z)
            }
            Choice::Graph { bound, epilogue } => {
                self.run_graph(bound, *epilogue, layer, plan.out_elems, dst, z)
            }
            Choice::Sparse { gemm } => {
                let (Some(lt), Some(w)) =
                    (self.sparse.as_ref(), self.layers[layer].sparse_w.as_ref())
                else {
                    return Err(Error::Runtime(format!(
                        "{}: sparse plan without cuSPARSELt",
                        self.layers[layer].name
                    )));
                };
                gemm.run(lt, w, self.gemm_ptrs(src, dst, z), &self.stream)
            }
        }
    }

    /// Enqueues the whole forward pass for `batch` images on the stream.
    pub(super) fn enqueue(&self, plans: &[ConvPlan], batch: usize) -> Result<()> {
        let n = batch as i32;
        for op in &self.ops {
            match *op {
                Op::Input => {
                    let x = Dev::of(&self.io.input32, &self.stream);
                    let y = self.buf(Buf::X);
                    let [o0, o1, o2] = self.input_offset;
                    let hw = (INPUT_SIZE * INPUT_SIZE) as i32;
                    let c = self.opts.stem_channels as i32;
                    let mut k = self.stream.launch_builder(&self.k.input_to_nhwc);
                    k.arg(&x.ptr)
                        .arg(&y.ptr)
                        .arg(&o0)
                        .arg(&o1)
                        .arg(&o2)
                        .arg(&n)
                        .arg(&hw)
                        .arg(&c);
                    // SAFETY: reads batch × 3 × 224² floats, writes batch × 224² × c halves; both fit.
                    unsafe { k.launch(cfg1d(batch * INPUT_SIZE * INPUT_SIZE)) }
                        .map_err(rt("input_to_nhwc"))?;
                }
                Op::Conv {
                    layer, src, dst, z, ..
                } => {
                    self.enqueue_conv(&plans[layer], layer, src, dst, z)?;
                }
                Op::MaxPool { src, dst, h, c, oh } => {
                    let (x, y) = (self.buf(src), self.buf(dst));
                    let (hh, cc, ohh) = (h as i32, c as i32, oh as i32);
                    let mut k = self.stream.launch_builder(&self.k.maxpool3s2);
                    k.arg(&x.ptr)
                        .arg(&y.ptr)
                        .arg(&n)
                        .arg(&hh)
                        .arg(&hh)
                        .arg(&cc)
                        .arg(&ohh)
                        .arg(&ohh);
                    // SAFETY: shapes as allocated.
                    unsafe { k.launch(cfg1d(batch * oh * oh * c)) }.map_err(rt("maxpool3s2"))?;
                }
                Op::Gap { src, hw, c } => {
                    let x = self.buf(src);
                    let y = Dev::of(&self.head.gap, &self.stream);
                    let (hww, cc) = (hw as i32, c as i32);
                    let mut k = self.stream.launch_builder(&self.k.global_avg_pool);
                    k.arg(&x.ptr).arg(&y.ptr).arg(&n).arg(&hww).arg(&cc);
                    // SAFETY: shapes as allocated.
                    unsafe { k.launch(cfg1d(batch * c)) }.map_err(rt("global_avg_pool"))?;
                }
                Op::Head => self.head.enqueue(&self.stream, &self.k, &self.io, batch)?,
            }
        }
        Ok(())
    }
}
