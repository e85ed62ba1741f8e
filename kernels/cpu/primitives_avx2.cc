// The primitives built for the avx2 instruction set (flags in kernels/CMakeLists.txt).
#define DSERVE_ISA_NAMESPACE avx2
#define DSERVE_ISA_VALUE ::dserve::kernels::cpu::Isa::kAvx2
#include "kernels/cpu/primitives_impl.inc"
