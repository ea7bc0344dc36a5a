// FP8 scaled matmul, datacenter Blackwell (10.0 / 10.3).
#include "common.cuh"
SAMPLE_FAMILY_KERNEL(scaled_mm_sm100_kernel, sample_scaled_mm_sm100_run, 0.5f)
