// The primitives built for the avx512 instruction set (flags in kernels/CMakeLists.txt).
#define DSERVE_ISA_NAMESPACE avx512
#define DSERVE_ISA_VALUE ::dserve::kernels::cpu::Isa::kAvx512
#include "kernels/cpu/primitives_impl.inc"
