// Kernels whose control flow the probe must read right, built by
// tests/integration/test_control_flow.py for every SASS generation nvcc 13 compiles.
// Hollow (every path traps): k_trap, k_loop_trap. All others can exit normally.
#include <cstdio>
#include <cassert>
__device__ __noinline__ int helper(int x) { if (x > 3) __trap(); return x * 2; }
__device__ int (*fptr)(int) = helper;
extern "C" __global__ void k_trap(float* out) { printf("Attempting %d\n", threadIdx.x); __trap(); }
extern "C" __global__ void k_cond_trap(float* out, int n) { if (n > 1) { printf("bad\n"); __trap(); } out[threadIdx.x] = n; }
extern "C" __global__ void k_brkpt(float* out, int n) { if (n > 1) __brkpt(); out[0] = 1; }
extern "C" __global__ void k_assert(float* out, int n) { assert(n < 4); out[0] = n; }
extern "C" __global__ void k_switch(float* out, int n) { float v; switch (n & 15) { case 0: v = 1; break; case 1: v = 3; break; case 2: v = 7; break; case 3: v= 11; break; case 4: v = 13; break; case 5: v = 17; break; case 6: v = 19; break; case 7: v = 23; break; default: v = 0; } out[0] = v; }
extern "C" __global__ void k_indirect(float* out, int n) { out[0] = fptr(n); }
extern "C" __global__ void k_call(float* out, int n) { out[0] = helper(n); }
extern "C" __global__ void k_loop_trap(float* out, int n) { for (int i = 0; i < n; ++i) { if (out[i] < 0) { printf("neg\n"); __trap(); } } __trap(); }
