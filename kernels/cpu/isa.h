// Which vector instruction set the CPU kernels use: detected at run time (AVX-512 where the
// CPU has it, else AVX2+FMA, else portable scalar code), overridable with DSERVE_CPU_ISA.
#pragma once

#include <optional>
#include <string_view>

namespace dserve::kernels::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

std::string_view IsaName(Isa isa);
std::optional<Isa> ParseIsa(std::string_view name);
// The best ISA this CPU supports.
Isa DetectIsa();
bool IsaSupported(Isa isa);
// DSERVE_CPU_ISA (scalar|avx2|avx512) if set and supported, else DetectIsa().
Isa DefaultIsa();

}  // namespace dserve::kernels::cpu
