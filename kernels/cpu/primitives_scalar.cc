// The primitives built for the scalar instruction set (flags in kernels/CMakeLists.txt).
#define DSERVE_ISA_NAMESPACE scalar
#define DSERVE_ISA_VALUE ::dserve::kernels::cpu::Isa::kScalar
#include "kernels/cpu/primitives_impl.inc"
