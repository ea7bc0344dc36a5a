// FP8 scaled matmul, Hopper (9.0a: wgmma needs the arch-specific target).
#include "common.cuh"
SAMPLE_FAMILY_KERNEL(scaled_mm_sm90_kernel, sample_scaled_mm_sm90_run, 0.75f)
