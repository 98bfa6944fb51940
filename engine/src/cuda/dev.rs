//! Views of device memory that several kernels of one call may take at once ([`Dev`]): shared by the
//! fp16 executor ([`super::net`]), the int8 one ([`super::int8net`]) and their common I/O ([`super::io`]).

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    sys as drv_sys, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop,
};

/// A view of device memory owned elsewhere (by [`super::net::GpuNet`] or [`super::io::Io`]), so that one call can take several views of
/// buffers that may alias (cuDNN's `z` is `y` when a layer has no residual input).
pub(crate) struct Dev<T> {
    pub(crate) ptr: drv_sys::CUdeviceptr,
    pub(crate) len: usize,
    stream: Arc<CudaStream>,
    _t: PhantomData<T>,
}

impl<T> Dev<T> {
    pub(crate) fn of(slice: &CudaSlice<T>, stream: &Arc<CudaStream>) -> Self {
        let (ptr, _sync) = slice.device_ptr(stream);
        Dev {
            ptr,
            len: slice.len(),
            stream: stream.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Dev<T> {
    /// The first `len` elements.
    pub(crate) fn prefix(mut self, len: usize) -> Self {
        self.len = self.len.min(len);
        self
    }
}

impl<T> DeviceSlice<T> for Dev<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl<T> DevicePtr<T> for Dev<T> {
    fn device_ptr<'a>(&'a self, _stream: &'a CudaStream) -> (drv_sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

impl<T> DevicePtrMut<T> for Dev<T> {
    fn device_ptr_mut<'a>(
        &'a mut self,
        _stream: &'a CudaStream,
    ) -> (drv_sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}
