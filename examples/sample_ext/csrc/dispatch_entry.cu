// The dispatcher, compiled for every requested arch (vLLM's *_entry.cu files).
// Its kernel exists everywhere, so it must never make another family look present.
//
// sample_dispatch_image() also reports which code object the driver really ran:
// SM number * 10 + variant (0 plain, 1 'a', 2 'f') -- 901 for sm_90a, 1002 for
// sm_100f, 800 for compute_80 PTX JIT-compiled on a newer GPU -- or minus the
// CUDA error. This is how kernel-matrix checks its driver-selection rule on a GPU.
#include "common.cuh"

namespace {
__global__ void dispatch_entry_kernel(float* out, int n, float scale) {
  sample::body(out, n, scale);
}

__global__ void dispatch_image_kernel(int* out) {
#if defined(__CUDA_ARCH__)
  int variant = 0;
#if defined(__CUDA_ARCH_SPECIFIC__)
  variant = 1;
#elif defined(__CUDA_ARCH_FAMILY_SPECIFIC__)
  variant = 2;
#endif
  out[0] = (__CUDA_ARCH__ / 10) * 10 + variant;
#endif
}
}  // namespace

extern "C" int sample_dispatch_run() { return sample::run(dispatch_entry_kernel, 1.0f); }

extern "C" int sample_dispatch_image() {
  int* d_out = nullptr;
  cudaError_t err = cudaMalloc(&d_out, sizeof(int));
  if (err != cudaSuccess) return -static_cast<int>(err);
  cudaMemset(d_out, 0, sizeof(int));
  dispatch_image_kernel<<<1, 1>>>(d_out);
  err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  int code = 0;
  if (err == cudaSuccess) err = cudaMemcpy(&code, d_out, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d_out);
  return err == cudaSuccess ? code : -static_cast<int>(err);
}
