// CUTLASS-MLA-like attention decode kernel, datacenter Blackwell (10.x).
#include "common.cuh"
SAMPLE_FAMILY_KERNEL(cutlass_mla_sm100_kernel, sample_mla_sm100_run, 0.25f)
