// Shared pieces of the sample kernels: a body with enough real work that a
// compiled kernel is clearly not hollow, and a host runner that reports what
// really happened on the device.
#pragma once

#include <cuda_runtime.h>

namespace sample {

constexpr int kElements = 256;

// out[i] = a short chain of dependent FMAs seeded by i: dozens of instructions.
__device__ __forceinline__ void body(float* out, int n, float scale, int i) {
  if (i >= n) return;
  float acc = 1.0f;
#pragma unroll 4
  for (int k = 0; k < 16; ++k) acc = fmaf(acc, scale, static_cast<float>((i + k) & 7));
  out[i] = acc;
}

__device__ __forceinline__ void body(float* out, int n, float scale) {
  body(out, n, scale, blockIdx.x * blockDim.x + threadIdx.x);
}

inline float expected(int i, float scale) {
  float acc = 1.0f;
  for (int k = 0; k < 16; ++k) acc = acc * scale + static_cast<float>((i + k) & 7);
  return acc;
}

// Result codes of the extern "C" sample_<family>_run() entry points:
//   0        the kernel ran and computed the right values
//  -1        the kernel launched but did no work (hollow: body compiled out)
//  >0        the CUDA error code (209 = cudaErrorNoKernelImageForDevice)
constexpr int kHollow = -1;

// ``threads`` per block; each block's first 128 threads cover 128 elements.
template <typename Kernel>
int run(Kernel kernel, float scale, int threads = 128) {
  float* d_out = nullptr;
  cudaError_t err = cudaMalloc(&d_out, kElements * sizeof(float));
  if (err != cudaSuccess) return static_cast<int>(err);
  cudaMemset(d_out, 0, kElements * sizeof(float));
  kernel<<<(kElements + 127) / 128, threads>>>(d_out, kElements, scale);
  err = cudaGetLastError();  // a missing kernel image shows here, at launch
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  float h_out[kElements];
  if (err == cudaSuccess)
    err = cudaMemcpy(h_out, d_out, sizeof(h_out), cudaMemcpyDeviceToHost);
  cudaFree(d_out);
  if (err != cudaSuccess) return static_cast<int>(err);
  for (int i = 0; i < kElements; ++i) {
    float want = expected(i, scale);
    float diff = h_out[i] - want;
    if (diff > 1e-3f * (want > 0 ? want : -want) + 1e-3f || -diff > 1e-3f * (want > 0 ? want : -want) + 1e-3f)
      return kHollow;
  }
  return 0;
}

}  // namespace sample

// One family source = one kernel in an anonymous namespace (so its mangled name
// carries the source file, as nvcc encodes it) + an extern "C" runner.
#define SAMPLE_FAMILY_KERNEL(KERNEL, RUNNER, SCALE)                         \
  namespace {                                                                \
  __global__ void KERNEL(float* out, int n, float scale) {                   \
    sample::body(out, n, scale);                                             \
  }                                                                          \
  }                                                                          \
  extern "C" int RUNNER() { return sample::run(KERNEL, SCALE); }
