//! cuBLASLt int8 GEMMs: descriptors and the heuristic's candidates for one layer (`Y[cout × m] =
//! Wᵀ · X`, the "TN" int8 layout), int32 output (+ the `requant` kernel) or int8 output.

use super::*;

/// How one layer's GEMM requantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tier {
    /// int8 output from cuBLASLt (per-channel α vector, bias epilogue).
    Fused,
    /// int32 output + the `requant` kernel.
    Int32,
}

/// cuBLASLt descriptors of one GEMM (destroyed on drop).
pub(super) struct LtGemm {
    pub(super) desc: lts::cublasLtMatmulDesc_t,
    pub(super) a: lts::cublasLtMatrixLayout_t,
    pub(super) b: lts::cublasLtMatrixLayout_t,
    pub(super) d: lts::cublasLtMatrixLayout_t,
    pub(super) algo: lts::cublasLtMatmulAlgo_t,
    pub(super) ws: usize,
    pub(super) tier: Tier,
}

impl Drop for LtGemm {
    fn drop(&mut self) {
        // SAFETY: created once in `LtGemm::new`, destroyed once here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

pub(super) fn lt_err(what: &'static str) -> impl FnOnce(lt::CublasError) -> Error {
    move |e| Error::Runtime(format!("cuBLASLt int8, {what}: {e:?}"))
}

pub(super) unsafe fn set_desc<T>(
    d: lts::cublasLtMatmulDesc_t,
    attr: lts::cublasLtMatmulDescAttributes_t,
    v: &T,
) -> Result<()> {
    // SAFETY: the caller passes a live descriptor and the attribute's C type.
    unsafe {
        lt::set_matmul_desc_attribute(
            d,
            attr,
            v as *const T as *const c_void,
            std::mem::size_of::<T>(),
        )
    }
    .map_err(lt_err("descriptor attribute"))
}

impl LtGemm {
    /// Descriptors for `Y[cout × m] = Wᵀ · X[kdim × m]` and up to `count` algorithms cuBLASLt's
    /// heuristics propose (each returned as its own `LtGemm`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn candidates(
        handle: lts::cublasLtHandle_t,
        cout: usize,
        m: usize,
        kdim: usize,
        tier: Tier,
        bias: drv_sys::CUdeviceptr,
        ws_max: usize,
        count: usize,
    ) -> Result<Vec<LtGemm>> {
        use lts::cublasLtMatmulDescAttributes_t as DA;
        let make = || -> Result<LtGemm> {
            let (scale, out_t) = match tier {
                Tier::Fused => (lts::cudaDataType::CUDA_R_32F, lts::cudaDataType::CUDA_R_8I),
                Tier::Int32 => (lts::cudaDataType::CUDA_R_32I, lts::cudaDataType::CUDA_R_32I),
            };
            let desc = lt::create_matmul_desc(lts::cublasComputeType_t::CUBLAS_COMPUTE_32I, scale)
                .map_err(lt_err("matmul descriptor"))?;
            let a = lt::create_matrix_layout(
                lts::cudaDataType::CUDA_R_8I,
                kdim as u64,
                cout as u64,
                kdim as i64,
            )
            .map_err(lt_err("layout A"))?;
            let b = lt::create_matrix_layout(
                lts::cudaDataType::CUDA_R_8I,
                kdim as u64,
                m as u64,
                kdim as i64,
            )
            .map_err(lt_err("layout B"))?;
            let d = lt::create_matrix_layout(out_t, cout as u64, m as u64, cout as i64)
                .map_err(lt_err("layout D"))?;
            let g = LtGemm {
                desc,
                a,
                b,
                d,
                // SAFETY: plain data, filled by the heuristic below.
                algo: unsafe { std::mem::zeroed() },
                ws: 0,
                tier,
            };
            // SAFETY: attributes of a live descriptor, values of the documented C types.
            unsafe {
                set_desc(g.desc, DA::CUBLASLT_MATMUL_DESC_TRANSA, &1i32)?;
                if tier == Tier::Fused {
                    let mode =
                        lts::cublasLtPointerMode_t::CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO;
                    set_desc(
                        g.desc,
                        DA::CUBLASLT_MATMUL_DESC_POINTER_MODE,
                        &(mode as i32),
                    )?;
                    set_desc(
                        g.desc,
                        DA::CUBLASLT_MATMUL_DESC_EPILOGUE,
                        &(lts::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS as u32),
                    )?;
                    set_desc(g.desc, DA::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
                    set_desc(
                        g.desc,
                        DA::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                        &(lts::cudaDataType::CUDA_R_32F as i32),
                    )?;
                }
            }
            Ok(g)
        };
        let probe = make()?;
        let pref = lt::create_matmul_pref().map_err(lt_err("preference"))?;
        let ws = ws_max as u64;
        let mut results: Vec<lts::cublasLtMatmulHeuristicResult_t> =
            // SAFETY: plain data, written by the heuristic.
            vec![unsafe { std::mem::zeroed() }; count];
        let mut found = 0i32;
        // SAFETY: live descriptors; `results` holds `count` entries.
        let st = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
            .and_then(|_| {
                lts::cublasLtMatmulAlgoGetHeuristic(
                    handle,
                    probe.desc,
                    probe.a,
                    probe.b,
                    probe.d,
                    probe.d,
                    pref,
                    count as i32,
                    results.as_mut_ptr(),
                    &mut found,
                )
                .result()
            })
        };
        // SAFETY: created above.
        unsafe {
            let _ = lt::destroy_matmul_pref(pref);
        }
        drop(probe);
        if st.is_err() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for r in results.iter().take(found.max(0) as usize) {
            if r.state != lts::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                continue;
            }
            let mut g = make()?;
            g.algo = r.algo;
            g.ws = r.workspaceSize;
            out.push(g);
        }
        Ok(out)
    }
}

impl Int8Net {
    pub(super) fn gemm(
        &self,
        i: usize,
        g: &LtGemm,
        dst: drv_sys::CUdeviceptr,
        n: usize,
    ) -> Result<()> {
        let l = &self.layers[i];
        let a = self.ptr(&l.w);
        let b = self.buf(if l.im2col { Buf::Col } else { l.input });
        let ws = self.ptr(&self.workspace);
        let stream = self.stream.cu_stream() as lts::cudaStream_t;
        let total = n * l.oh * l.oh * l.q.cout;
        match g.tier {
            Tier::Fused => {
                let alpha = self.ptr(&l.mult);
                let beta = 0f32;
                // SAFETY: descriptors match the buffers' shapes; α is a device vector of `cout` floats
                // (pointer mode), β (unused: BETA_ZERO) a host float.
                unsafe {
                    lt::matmul(
                        self.handle,
                        g.desc,
                        alpha as *const c_void,
                        &beta as *const f32 as *const c_void,
                        a as *const c_void,
                        g.a,
                        b as *const c_void,
                        g.b,
                        dst as *const c_void,
                        g.d,
                        dst as *mut c_void,
                        g.d,
                        &g.algo,
                        ws as *mut c_void,
                        g.ws.min(WORKSPACE),
                        stream,
                    )
                }
                .map_err(lt_err("matmul"))
            }
            Tier::Int32 => {
                let acc = self.ptr(&self.acc);
                let (one, zero) = (1i32, 0i32);
                // SAFETY: as above, int32 output into `acc` (max_batch × the largest activation).
                unsafe {
                    lt::matmul(
                        self.handle,
                        g.desc,
                        &one as *const i32 as *const c_void,
                        &zero as *const i32 as *const c_void,
                        a as *const c_void,
                        g.a,
                        b as *const c_void,
                        g.b,
                        acc as *const c_void,
                        g.d,
                        acc as *mut c_void,
                        g.d,
                        &g.algo,
                        ws as *mut c_void,
                        g.ws.min(WORKSPACE),
                        stream,
                    )
                }
                .map_err(lt_err("matmul"))?;
                let (ofs, mult) = (self.ptr(&l.ofs), self.ptr(&l.mult));
                let zero_pt = l.q.output.zero;
                let (tot, c) = (total as i64, l.q.cout as i32);
                {
                    let mut a = self.stream.launch_builder(&self.ik.requant);
                    a.arg(&acc)
                        .arg(&dst)
                        .arg(&ofs)
                        .arg(&mult)
                        .arg(&zero_pt)
                        .arg(&tot)
                        .arg(&c);
                    self.go(a, total, "requant")
                }
            }
        }
    }
}
