// NVFP4 scaled matmul (Blackwell 10.x / 12.x).
#include "common.cuh"
SAMPLE_FAMILY_KERNEL(nvfp4_scaled_mm_kernel, sample_nvfp4_scaled_mm_run, 1.5f)
