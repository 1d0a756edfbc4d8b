// Whole-vector error measures shared by the tests that compare a computed result with a reference
// (kernels against scalar references, GPU against CPU, reloaded against in-memory models).
#pragma once

#include <vector>

namespace compactor::test {

// ‖got − want‖₂ / ‖want‖₂ (the denominator floored at 1e-30).
double rel_l2_error(const std::vector<float>& got, const std::vector<float>& want);

// max |a − b| / max |b| over all elements.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace compactor::test
