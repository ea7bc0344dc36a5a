// A real CUTLASS/CuTe dependency: the kernel fences Hopper's wgmma through CuTe
// (cute::warpgroup_arrive / commit_batch / wait). CuTe emits the wgmma instructions
// only when CUTE_ARCH_MMA_SM90A_ENABLED, i.e. for an sm_90a target. Built for plain
// sm_90, CuTe turns each of them into printf("Attempting to use wgmma.fence without
// CUTE_ARCH_MMA_SM90A_ENABLED") + trap: the kernel is there, with more than a
// hundred instructions, and traps at once on an H100. Headers: PyPI nvidia-cutlass.
#include <cute/arch/mma_sm90_gmma.hpp>

#include "common.cuh"

namespace {
__global__ void cutlass_wgmma_sm90_kernel(float* out, int n, float scale) {
  // Every thread of the (128-thread) warpgroup, before any early return: as in
  // CUTLASS's SM90 mainloops.
  cute::warpgroup_arrive();
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
  sample::body(out, n, scale);
}
}  // namespace

namespace {
// The shape of CUTLASS's warp-specialized kernels: one warpgroup does its part and
// exits, the other fences wgmma. In plain sm_90 only the second path traps: the
// kernel is not "every path traps", but it prints CuTe's arch-guard message and has
// no tensor-core instruction, and the launch fails as soon as the second warpgroup
// reaches its trap.
__global__ void cutlass_ws_sm90_kernel(float* out, int n, float scale) {
  if (threadIdx.x < 128) {
    sample::body(out, n, scale, blockIdx.x * 128 + threadIdx.x);
    return;
  }
  cute::warpgroup_arrive();
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
}
}  // namespace

extern "C" int sample_cutlass_wgmma_sm90_run() {
  return sample::run(cutlass_wgmma_sm90_kernel, 1.25f);
}

extern "C" int sample_cutlass_ws_sm90_run() {
  return sample::run(cutlass_ws_sm90_kernel, 1.5f, 256);
}
