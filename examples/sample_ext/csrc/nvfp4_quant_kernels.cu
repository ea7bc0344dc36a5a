// NVFP4 quantization (Blackwell 10.x / 12.x only in a real extension).
#include "common.cuh"
SAMPLE_FAMILY_KERNEL(nvfp4_quant_kernel, sample_nvfp4_quant_run, 1.25f)
