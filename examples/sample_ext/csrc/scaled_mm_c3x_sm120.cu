// FP8 scaled matmul, consumer Blackwell (12.0 / 12.1).
//
// With SAMPLE_EXT_SM120_EXACT_GUARD the body exists only when __CUDA_ARCH__ is
// exactly 1200 and traps otherwise -- the shape of vLLM's enable_sm120_only
// wrapper that made every FP8 GEMM trap on DGX Spark (12.1) once 12.1f cubins
// were built (eugr/spark-vllm-docker issue 143). The kernel then exists in the
// sm_121 cubin but is hollow there.
#include "common.cuh"

namespace {
__global__ void scaled_mm_sm120_kernel(float* out, int n, float scale) {
#if defined(SAMPLE_EXT_SM120_EXACT_GUARD) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ != 1200
  asm volatile("trap;");
#else
  sample::body(out, n, scale);
#endif
}
}  // namespace

extern "C" int sample_scaled_mm_sm120_run() { return sample::run(scaled_mm_sm120_kernel, 2.0f); }
