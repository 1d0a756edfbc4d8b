// Host reference of the repacked intN layout (quant_repack.h): plan, repack, unpack.
// Test: build-*/tests/test_quant_repack.
#include "formats/quant_repack.h"

#include <algorithm>
#include <numeric>

namespace compactor {

namespace {

bool power_of_two(int v) { return v > 0 && (v & (v - 1)) == 0; }

int log2_int(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

// Columns sorted stably by group; checks that position p then lies in group p / group_size.
Status act_order_perm(const int32_t* g_idx, int64_t k, int64_t k_padded, int group_size, std::vector<int32_t>* perm) {
  std::vector<int32_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return g_idx[a] < g_idx[b]; });
  for (int64_t p = 0; p < k; ++p)
    if (g_idx[order[p]] != p / group_size)
      return unsupported("repack: g_idx groups are not all of size {} (sorted position {} holds column {} of group "
                         "{}); only GPTQ-style act-order can be repacked",
                         group_size, p, order[p], g_idx[order[p]]);
  if (perm != nullptr) {
    perm->assign(k_padded, -1);
    std::copy(order.begin(), order.end(), perm->begin());
  }
  return Status::ok();
}

}  // namespace

Result<RepackPlan> plan_repack(int bits, int group_size, int64_t n, int64_t k, const int32_t* g_idx,
                               std::vector<int32_t>* perm) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    return invalid_argument("repack: bits {} (expected 2, 3, 4 or 8)", bits);
  if (n <= 0 || k <= 0) return invalid_argument("repack: shape [{}, {}] is empty", n, k);
  if (group_size != 0 && (!power_of_two(group_size) || group_size < kRepackBlockK))
    return unsupported("repack: group size {} is not a power of two >= {} (or 0, per-channel)", group_size,
                       kRepackBlockK);
  if (g_idx != nullptr && group_size == 0) return invalid_argument("repack: g_idx given for a per-channel linear");
  RepackPlan plan;
  plan.bits = bits;
  plan.group_size = group_size;
  plan.group_shift = group_size == 0 ? 31 : log2_int(group_size);
  plan.n = n;
  plan.k = k;
  plan.k_padded = (k + kRepackTileK - 1) / kRepackTileK * kRepackTileK;
  plan.words_per_row = plan.k_padded * bits / 32;
  plan.groups_padded = group_size == 0 ? 1 : (plan.k_padded + group_size - 1) / group_size;
  plan.permuted = g_idx != nullptr;
  if (g_idx != nullptr) RETURN_IF_ERROR(act_order_perm(g_idx, k, plan.k_padded, group_size, perm));
  return plan;
}

Result<RepackedLinear> repack_linear_ref(const PackedRef& p) {
  RepackedLinear r;
  ASSIGN_OR_RETURN(r.plan, plan_repack(p.bits, p.group_size, p.out_features, p.in_features, p.g_idx, &r.perm));
  const RepackPlan& plan = r.plan;
  const int bits = plan.bits;
  const int64_t n = plan.n, k = plan.k, groups = p.groups();
  r.qweight.assign(n * plan.words_per_row, 0);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t b = 0; b < plan.k_padded / kRepackBlockK; ++b) {
      uint32_t codes[kRepackBlockK];
      for (int i = 0; i < kRepackBlockK; ++i) {
        const int64_t pos = b * kRepackBlockK + i;
        const int64_t col = plan.permuted ? r.perm[pos] : (pos < k ? pos : -1);
        codes[i] = col >= 0 ? packed_value(p.qweight + row, n, bits, col) : 0u;
      }
      pack_repacked_block(codes, bits, &r.qweight[row * plan.words_per_row + b * bits]);
    }
  }
  const int64_t zero_words = packed_words(bits, n);
  r.scale_zero.assign(n * plan.groups_padded, 0);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t zero = packed_value(p.qzeros + g * zero_words, 1, bits, row);
      const uint32_t zero_f16 = f32_to_f16(static_cast<float>(zero));
      r.scale_zero[row * plan.groups_padded + g] = p.scales[g * n + row] | (zero_f16 << 16);
    }
  }
  return r;
}

QuantizedLinear unpack_repacked_ref(const RepackedLinear& r, bool symmetric) {
  const RepackPlan& plan = r.plan;
  QuantizedLinear q;
  q.spec = QuantSpec{plan.bits, plan.group_size, symmetric};
  q.out_features = plan.n;
  q.in_features = plan.k;
  const int64_t n = plan.n, k = plan.k, groups = q.groups();
  q.codes.resize(n * k);
  for (int64_t row = 0; row < n; ++row) {
    const uint32_t* words = &r.qweight[row * plan.words_per_row];
    for (int64_t pos = 0; pos < plan.k_padded; ++pos) {
      const int64_t col = plan.permuted ? r.perm[pos] : (pos < k ? pos : -1);
      if (col < 0) continue;
      const uint32_t* block = words + (pos / kRepackBlockK) * plan.bits;
      q.codes[row * k + col] = static_cast<uint8_t>(repacked_code(block, plan.bits, static_cast<int>(pos % kRepackBlockK)));
    }
  }
  q.scales.resize(n * groups);
  q.zeros.resize(n * groups);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t sz = r.scale_zero[row * plan.groups_padded + g];
      q.scales[row * groups + g] = f16_to_f32(static_cast<uint16_t>(sz & 0xffffu));
      q.zeros[row * groups + g] = f16_to_f32(static_cast<uint16_t>(sz >> 16));
    }
  }
  if (plan.permuted) {
    q.g_idx.resize(k);
    for (int64_t pos = 0; pos < k; ++pos) q.g_idx[r.perm[pos]] = static_cast<int32_t>(pos / plan.group_size);
  }
  return q;
}

std::vector<uint32_t> repack_tc_ref(const RepackedLinear& r) {
  const RepackPlan& plan = r.plan;
  COMPACTOR_ASSERT(plan.bits == 4 || plan.bits == 8, "repack_tc_ref: bits {} (int4 or int8)", plan.bits);
  const int per_word = 32 / plan.bits;
  const int64_t chunks = tc_chunks(plan);
  std::vector<uint32_t> tc(tc_padded_rows(plan.n) * plan.k_padded * plan.bits / 32, 0);
  for (int64_t word = 0; word < static_cast<int64_t>(tc.size()); ++word) {
    for (int q = 0; q < per_word; ++q) {
      int64_t row = 0, pos = 0;
      if (plan.bits == 4) {
        tc_int4_source(word, q, chunks, &row, &pos);
      } else {
        tc_int8_source(word, q, chunks, &row, &pos);
      }
      if (row >= plan.n) continue;
      const uint32_t* block = &r.qweight[row * plan.words_per_row + (pos / kRepackBlockK) * plan.bits];
      tc[word] |= repacked_code(block, plan.bits, static_cast<int>(pos % kRepackBlockK)) << (plan.bits * q);
    }
  }
  return tc;
}

uint32_t tc_code(const std::vector<uint32_t>& tc, int bits, int64_t chunks, int64_t row, int64_t pos) {
  const int chunk_k = tc_chunk_positions(bits);
  const int64_t tile = (row / kTcRows) * chunks + pos / chunk_k;
  const int r = static_cast<int>(row % kTcRows), kk = static_cast<int>(pos % chunk_k);
  const int g = r % 8, s = kk / 16, kq = kk % 16, t = kq / 4;
  if (bits == 8) {
    const int64_t word = (tile * 32 + 4 * g + t) * 4 + 2 * s + r / 8;
    return (tc[word] >> (8 * (kq % 4))) & 0xFFu;
  }
  const int p = (r / 8) + 2 * ((kq % 4) / 2), second = kq % 2;
  const int64_t word = (tile * 32 + 4 * g + t) * 4 + s;
  return (tc[word] >> (4 * (p + 4 * second))) & 15u;
}

}  // namespace compactor
