#include "kernels/cpu/primitives.h"

namespace dserve::kernels::cpu {

const Primitives& GetPrimitives(Isa isa) {
#if defined(DSERVE_X86)
  switch (isa) {
    case Isa::kAvx512:
      return avx512::kPrimitives;
    case Isa::kAvx2:
      return avx2::kPrimitives;
    case Isa::kScalar:
      break;
  }
#endif
  return scalar::kPrimitives;
}

}  // namespace dserve::kernels::cpu
