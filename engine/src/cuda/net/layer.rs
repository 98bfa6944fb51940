//! One convolution's weights and cuDNN descriptors (batch-independent).

use super::*;

impl ConvLayer {
    pub(super) fn new(
        dnn: &Arc<Cudnn>,
        stream: &Arc<CudaStream>,
        c: &Conv,
        cin: usize,
        relu: bool,
    ) -> Result<Self> {
        let k = c.kernel;
        // OIHW f32 → OHWI fp16 (cuDNN's NHWC filter layout), input channels zero-padded to `cin`.
        let mut w = vec![f16::ZERO; c.out_ch * k * k * cin];
        for o in 0..c.out_ch {
            for i in 0..c.in_ch {
                for y in 0..k {
                    for x in 0..k {
                        w[((o * k + y) * k + x) * cin + i] = f16::from_f32(c.w(o, i, y, x));
                    }
                }
            }
        }
        let bias: Vec<f16> = c.bias.iter().map(|&v| f16::from_f32(v)).collect();
        let what = |s: &str| format!("{} {s}", c.name);
        let mut conv = dnn
            .create_conv2d::<f32>(
                [c.pad as i32; 2],
                [c.stride as i32; 2],
                [1, 1],
                dnn_sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(rt(what("convolution descriptor")))?;
        conv.set_math_type(dnn_sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH)
            .map_err(rt(what("math type")))?;
        let filter = dnn
            .create_4d_filter::<f16>(
                dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                [c.out_ch as i32, cin as i32, k as i32, k as i32],
            )
            .map_err(rt(what("filter descriptor")))?;
        let bias_desc = dnn
            .create_4d_tensor::<f16>(
                dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [1, c.out_ch as i32, 1, 1],
            )
            .map_err(rt(what("bias descriptor")))?;
        let mode = if relu {
            dnn_sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU
        } else {
            dnn_sys::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY
        };
        let act = dnn
            .create_activation::<f32>(
                mode,
                dnn_sys::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
                0.0,
            )
            .map_err(rt(what("activation descriptor")))?;
        // Only the shapes cuSPARSELt was seen to take correctly on the H200 (ResNet50's: channel counts
        // multiples of 32); an unsupported shape could end the CUDA context instead of failing cleanly.
        let two_four = k == 1
            && c.stride == 1
            && c.pad == 0
            && cin.is_multiple_of(32)
            && c.out_ch.is_multiple_of(32)
            && super::super::sparse::is_two_four(&w, cin);
        Ok(ConvLayer {
            two_four,
            sparse_w: None,
            name: c.name.clone(),
            cin,
            cout: c.out_ch,
            k,
            stride: c.stride,
            pad: c.pad,
            relu,
            w: stream.clone_htod(&w).map_err(rt(what("weights upload")))?,
            b: stream.clone_htod(&bias).map_err(rt(what("bias upload")))?,
            conv,
            filter,
            bias: bias_desc,
            act,
        })
    }
}
