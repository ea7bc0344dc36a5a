// Compiled for every requested arch, like vLLM's generic kernels, but its body
// needs FP8 hardware (8.9+) and is compiled out below that by __CUDA_ARCH__.
// For an older cubin -- or for PTX generated for an older virtual arch and
// JIT-compiled on a newer GPU -- the kernel exists and does nothing: hollow.
#include "common.cuh"

namespace {
__global__ void fp8_guarded_kernel(float* out, int n, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  sample::body(out, n, scale);
#endif
}
}  // namespace

extern "C" int sample_fp8_guarded_run() { return sample::run(fp8_guarded_kernel, 1.75f); }
