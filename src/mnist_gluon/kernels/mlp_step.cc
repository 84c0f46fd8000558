// mnist_mlp_step: the MLP's whole training steps, any number of them in one call, on a fixed
// team of threads.
//
// Forward (inputs -> hidden relu -> classes), softmax cross-entropy (with label smoothing), its
// gradients and the update (NAG or SGD with momentum, MXNet's arithmetic), for a batch gathered
// by index from the images. Most of an MNIST image is background (80% of its pixels): each
// image is taken as its pixels apart from the background, plus the background everywhere, so
// fc1's products skip most of the work of dense ones. fc1's weights and momenta are kept in a
// mirror laid out input by input, which these products read and update a row at a time;
// mnist_mlp_mirror copies them between the mirror and MXNet's arrays.
//
// One parallel region a call; in each step, two barriers:
//   1. rows: the threads take groups of batch rows as they come: their hidden units, logits,
//      loss and the gradients of the logits and the hidden units;
//   2. weights: the threads take chunks of fc1's inputs and fc2's classes as they come, and
//      compute those weights' gradients and updates (one thread the biases and the sums).
// Every output element is computed by one thread, its sum over the batch in batch order, so the
// numbers do not depend on the number of threads. The products use AVX-512 or AVX2 with FMA,
// chosen when the library loads (MNIST_GLUON_ISA=avx2 asks for the second where both run); the
// two round differently, so a run records which it used.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "dmlc/strtonum.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

using Attrs = std::unordered_map<std::string, std::string>;

struct Update {
  bool nag;
  float lr, momentum, wd, rescale, clip;
};

struct Step {
  const float* const* x;  // the batch's rows (pointers into the images)
  const float* labels;    // per batch row
  int64_t batch, inputs, hidden, classes;
  float *b1, *w2, *b2, *mb1, *m2, *mb2;
  float *w1t, *m1t;  // fc1's weights and momenta, inputs x hidden (the mirror)
  float background;   // the images' background pixel
  float smoothing;
  Update u;
  float *h, *dh;  // scratch: batch x stride each (hidden + 16: rows a power of two apart would
  int64_t stride;  // fall into the same few cache sets)
  float *dz, *loss, *correct;  // batch x classes, batch, batch
  int32_t* nonzero_index;  // batch x padded: each row's pixels apart from the background,
  float* nonzero_value;    // as inputs and (pixel - background)
  int32_t* counts;         // how many each row has
  int64_t padded;          // inputs + 16: room for whole vectors written past the end
};

// The hidden units come in whole vectors of either instruction set: a multiple of this many.
constexpr int64_t kUnitGroup = 16;

inline float clip(float x, float bound) { return x > bound ? bound : (x < -bound ? -bound : x); }

// The log-softmax of one row's logits z, its loss, whether it is right, and the logits'
// gradient (softmax - target) into dz.
void loss_row(const float* z, int classes, int label, float smoothing, float* dz, float* loss,
              float* correct) {
  float top = z[0];
  int arg = 0;
  for (int c = 1; c < classes; ++c) {
    if (z[c] > top) top = z[c], arg = c;
  }
  float total = 0.f;
  for (int c = 0; c < classes; ++c) total += std::exp(z[c] - top);
  const float log_total = std::log(total);
  float mean_log_p = 0.f;
  for (int c = 0; c < classes; ++c) mean_log_p += z[c] - top - log_total;
  mean_log_p /= classes;
  const float nll = -(z[label] - top - log_total);
  *loss = smoothing != 0.f ? (1 - smoothing) * nll - smoothing * mean_log_p : nll;
  *correct = arg == label ? 1.f : 0.f;
  const float spread = smoothing / classes;
  for (int c = 0; c < classes; ++c) {
    const float target = (c == label ? 1 - smoothing : 0.f) + spread;
    dz[c] = std::exp(z[c] - top - log_total) - target;
  }
}

// apart_from and union_of below, one input at a time from `i` on: AVX2's whole loop, and the
// AVX-512 loop's tail. Without branches: where they would go is anyone's guess.
inline int32_t apart_from_each(const float* x, int64_t i, int64_t n, float background,
                               int32_t* index, float* value, int32_t count) {
  for (; i < n; ++i) {
    index[count] = static_cast<int32_t>(i);
    value[count] = x[i] - background;
    count += x[i] != background;
  }
  return count;
}

inline int32_t union_of_each(const float* const* x, int rows, int64_t i, int64_t n,
                             float background, int32_t* index, float* values, int64_t stride,
                             int32_t count) {
  for (; i < n; ++i) {
    bool any = false;
    for (int r = 0; r < rows; ++r) any |= x[r][i] != background;
    index[count] = static_cast<int32_t>(i);
    for (int r = 0; r < rows; ++r) values[r * stride + count] = x[r][i] - background;
    count += any;
  }
  return count;
}

}  // namespace

// ---- the products, once per instruction set (mlp_step_isa.h) ---------------------------------

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,fma")
namespace avx512 {
using V = __m512;
constexpr int W = 16;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vset(float x) { return _mm512_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vrelu_grad(V h, V g) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(h, _mm512_setzero_ps(), _CMP_GT_OQ), g);
}
inline float vsum(V v) {  // lanes 0-7 + 8-15, then the AVX2 order below
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(v),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
  const __m128 pairs = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}
// The pixels of x (n of them) that are not the background: their inputs and (pixel -
// background), stored compactly, whole vectors at a time (up to 15 entries past the count are
// written); returns how many.
inline int32_t apart_from(const float* x, int64_t n, float background, int32_t* index,
                          float* value) {
  const __m512 back = _mm512_set1_ps(background);
  __m512i k = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int32_t count = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16, k = _mm512_add_epi32(k, _mm512_set1_epi32(16))) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 apart = _mm512_cmp_ps_mask(v, back, _CMP_NEQ_UQ);
    _mm512_storeu_si512(index + count, _mm512_maskz_compress_epi32(apart, k));
    _mm512_storeu_ps(value + count, _mm512_maskz_compress_ps(apart, _mm512_sub_ps(v, back)));
    count += __builtin_popcount(apart);
  }
  return apart_from_each(x, i, n, background, index, value, count);
}

// The inputs where any of `rows` images is not the background, and each image's (pixel -
// background) there (rows `stride` apart in `values`, 0 where it is the background).
inline int32_t union_of(const float* const* x, int rows, int64_t n, float background,
                        int32_t* index, float* values, int64_t stride) {
  const __m512 back = _mm512_set1_ps(background);
  __m512i k = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int32_t count = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16, k = _mm512_add_epi32(k, _mm512_set1_epi32(16))) {
    __mmask16 any = 0;
    for (int r = 0; r < rows; ++r)
      any |= _mm512_cmp_ps_mask(_mm512_loadu_ps(x[r] + i), back, _CMP_NEQ_UQ);
    _mm512_storeu_si512(index + count, _mm512_maskz_compress_epi32(any, k));
    for (int r = 0; r < rows; ++r) {
      const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x[r] + i), back);
      _mm512_storeu_ps(values + r * stride + count, _mm512_maskz_compress_ps(any, v));
    }
    count += __builtin_popcount(any);
  }
  return union_of_each(x, rows, i, n, background, index, values, stride, count);
}

#include "mlp_step_isa.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using V = __m256;
constexpr int W = 8;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vset(float x) { return _mm256_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vrelu_grad(V h, V g) {
  return _mm256_and_ps(_mm256_cmp_ps(h, _mm256_setzero_ps(), _CMP_GT_OQ), g);
}
inline float vsum(V v) {
  const __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}
inline int32_t apart_from(const float* x, int64_t n, float background, int32_t* index,
                          float* value) {
  return apart_from_each(x, 0, n, background, index, value, 0);
}

inline int32_t union_of(const float* const* x, int rows, int64_t n, float background,
                        int32_t* index, float* values, int64_t stride) {
  return union_of_each(x, rows, 0, n, background, index, values, stride, 0);
}

#include "mlp_step_isa.h"
}  // namespace avx2
#pragma GCC pop_options

namespace {

enum Isa { kNone = 0, kAvx2 = 2, kAvx512 = 512 };

Isa detect_isa() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  const char* asked = std::getenv("MNIST_GLUON_ISA");
  if (asked != nullptr && std::strcmp(asked, "avx2") == 0) return avx2 ? kAvx2 : kNone;
  return avx512 ? kAvx512 : (avx2 ? kAvx2 : kNone);
}

const Isa kIsa = detect_isa();

float mxnet_float(const Attrs& attrs, const char* key, float fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : dmlc::stof(it->second);
}

int64_t attr_int(const Attrs& attrs, const char* key, int64_t fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : std::strtoll(it->second.c_str(), nullptr, 10);
}

// Inputs, those the steps write first: the mirror of fc1's weights and momenta (2 * D * H,),
// fc1's bias (H,), fc2's weight (C, H) and bias (C,), their momenta; then the images (N, D),
// their labels (N,), each step's batch as indices into both (K, B) int32, each step's learning
// rate (K,), and the epoch's sums of even and odd steps (2,) each, which step t adds to (the
// first step's parity is the attribute `parity`). Output: each step's (loss sum, number
// correct), (K, 2).
enum Input { kMirror, kB1, kW2, kB2, kMomenta, kImages = kMomenta + 3, kLabels, kIndex, kRates,
             kEvenSums, kOddSums, kInputs };

MXReturnValue step_parse(const Attrs& attrs, int* num_in, int* num_out) {
  auto kind = attrs.find("kind");
  if (kind == attrs.end() || (kind->second != "nag" && kind->second != "sgd")) {
    MX_ERROR_MSG << "mnist_mlp_step: kind must be nag or sgd";
    return MX_FAIL;
  }
  *num_in = kInputs;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue all_float32_but(int integer, int count, std::vector<int>* in,
                              std::vector<int>* out, const char* op) {
  for (int i = 0; i < count; ++i) {
    if ((*in)[i] != (i == integer ? kInt32 : kFloat32)) {
      MX_ERROR_MSG << op << ": input " << i << " must be " << (i == integer ? "int32" : "float32");
      return MX_FAIL;
    }
  }
  (*out)[0] = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue step_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  return all_float32_but(kIndex, kInputs, in, out, "mnist_mlp_step");
}

MXReturnValue step_shape(const Attrs&, std::vector<std::vector<unsigned int>>* in,
                         std::vector<std::vector<unsigned int>>* out) {
  const auto& s = *in;
  using Shape = std::vector<unsigned int>;
  const bool ok = s[kB1].size() == 1 && s[kW2].size() == 2 && s[kW2][1] == s[kB1][0] &&
                  s[kB2] == Shape{s[kW2][0]} && s[kMomenta] == s[kB1] &&
                  s[kMomenta + 1] == s[kW2] && s[kMomenta + 2] == s[kB2] &&
                  s[kImages].size() == 2 &&
                  s[kMirror] == Shape{2 * s[kImages][1] * s[kB1][0]} &&
                  s[kLabels] == Shape{s[kImages][0]} && s[kIndex].size() == 2 &&
                  s[kRates] == Shape{s[kIndex][0]} && s[kEvenSums] == Shape{2} &&
                  s[kOddSums] == Shape{2} && s[kB1][0] % kUnitGroup == 0;
  if (!ok) {
    MX_ERROR_MSG << "mnist_mlp_step: expects the mirror (2 * D * H,), fc1's bias (H,), fc2's "
                    "weight (C, H) and bias (C,), their momenta, images (N, D), labels (N,), "
                    "indices (K, B), learning rates (K,) and two sums (2,), with H a multiple "
                    "of 16";
    return MX_FAIL;
  }
  (*out)[0] = {s[kIndex][0], 2};
  return MX_SUCCESS;
}

MXReturnValue step_mutates(const Attrs&, std::vector<int>* indices) {
  for (int i = kMirror; i < kImages; ++i) indices->push_back(i);
  indices->push_back(kEvenSums);
  indices->push_back(kOddSums);
  return MX_SUCCESS;
}

int attr_threads(const Attrs& attrs) {
  return static_cast<int>(std::max<int64_t>(1, attr_int(attrs, "threads", 1)));
}

MXReturnValue step_forward(const Attrs& attrs, std::vector<MXTensor>* in,
                           std::vector<MXTensor>* out, const OpResource&) {
  if (kIsa == kNone) {
    MX_ERROR_MSG << "mnist_mlp_step needs a CPU with AVX2 and FMA";
    return MX_FAIL;
  }
  std::vector<MXTensor>& t = *in;
  const int64_t rows = t[kImages].shape[0], inputs = t[kImages].shape[1];
  const int64_t steps = t[kIndex].shape[0], batch = t[kIndex].shape[1];
  const int64_t hidden = t[kB1].shape[0], classes = t[kW2].shape[0];
  const int32_t* index = t[kIndex].data<int32_t>();
  const float* all_labels = t[kLabels].data<float>();
  thread_local std::vector<const float*> x;
  thread_local std::vector<float> labels, scratch;
  thread_local std::vector<int32_t> integers;
  x.resize(steps * batch);
  labels.resize(steps * batch);
  for (int64_t i = 0; i < steps * batch; ++i) {
    const float label = index[i] >= 0 && index[i] < rows ? all_labels[index[i]] : -1.f;
    if (index[i] < 0 || index[i] >= rows || !(label >= 0.f && label < classes)) {
      MX_ERROR_MSG << "mnist_mlp_step: row " << i % batch << " of step " << i / batch
                   << "'s batch has index " << index[i]
                   << " and label " << label << " (" << rows << " images, " << classes
                   << " classes)";
      return MX_FAIL;
    }
    x[i] = t[kImages].data<float>() + index[i] * inputs;
    labels[i] = label;
  }
  Step s;
  try {
    s.smoothing = mxnet_float(attrs, "smoothing", 0.f);
    s.u = {attrs.at("kind") == "nag", 0.f,
           mxnet_float(attrs, "momentum", 0.f), mxnet_float(attrs, "wd", 0.f),
           mxnet_float(attrs, "rescale_grad", 1.f), mxnet_float(attrs, "clip_gradient", -1.f)};
  } catch (const std::exception& error) {
    MX_ERROR_MSG << "mnist_mlp_step: " << error.what();
    return MX_FAIL;
  }
  auto background = attrs.find("background");  // correctly rounded: it must match the pixels
  s.background = background == attrs.end() ? 0.f : std::strtof(background->second.c_str(), nullptr);
  s.batch = batch, s.inputs = inputs, s.hidden = hidden, s.classes = classes;
  s.w1t = t[kMirror].data<float>(), s.m1t = s.w1t + inputs * hidden;
  s.b1 = t[kB1].data<float>(), s.w2 = t[kW2].data<float>(), s.b2 = t[kB2].data<float>();
  s.mb1 = t[kMomenta].data<float>(), s.m2 = t[kMomenta + 1].data<float>();
  s.mb2 = t[kMomenta + 2].data<float>();
  s.stride = hidden + kUnitGroup;
  s.padded = inputs + 16;
  scratch.resize(static_cast<size_t>(batch * (2 * s.stride + classes + 2 + s.padded)));
  integers.resize(static_cast<size_t>(batch * (s.padded + 1)));
  s.h = scratch.data();
  s.dh = s.h + batch * s.stride;
  s.dz = s.dh + batch * s.stride;
  s.loss = s.dz + batch * classes;
  s.correct = s.loss + batch;
  s.nonzero_value = s.correct + batch;
  s.nonzero_index = integers.data();
  s.counts = s.nonzero_index + batch * s.padded;
  float* sums[2] = {t[kEvenSums].data<float>(), t[kOddSums].data<float>()};
  const int parity = static_cast<int>(attr_int(attrs, "parity", 0) % 2);
  const float* lrs = t[kRates].data<float>();
  float* stats = (*out)[0].data<float>();
  if (kIsa == kAvx512) {
    avx512::run(s, steps, x.data(), labels.data(), lrs, attr_threads(attrs), sums, parity, stats);
  } else {
    avx2::run(s, steps, x.data(), labels.data(), lrs, attr_threads(attrs), sums, parity, stats);
  }
  return MX_SUCCESS;
}

// ---- mnist_mlp_mirror -------------------------------------------------------------------------
// fc1's weight (H, D) and momentum (H, D) to the step's mirror (2 * D * H,) with to_mirror=1,
// or back with to_mirror=0: before a run's first step (and after anything else changed them),
// and before anything reads them.

MXReturnValue mirror_parse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 3;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue mirror_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  return all_float32_but(-1, 3, in, out, "mnist_mlp_mirror");
}

MXReturnValue mirror_shape(const Attrs&, std::vector<std::vector<unsigned int>>* in,
                           std::vector<std::vector<unsigned int>>* out) {
  const auto& s = *in;
  if (s[0].size() != 2 || s[1] != s[0] ||
      s[2] != std::vector<unsigned int>{2 * s[0][0] * s[0][1]}) {
    MX_ERROR_MSG << "mnist_mlp_mirror: expects fc1's weight (H, D), its momentum (H, D) and the "
                    "mirror (2 * D * H,)";
    return MX_FAIL;
  }
  (*out)[0] = {1};
  return MX_SUCCESS;
}

MXReturnValue mirror_mutates(const Attrs&, std::vector<int>* indices) {
  *indices = {0, 1, 2};
  return MX_SUCCESS;
}

MXReturnValue mirror_forward(const Attrs& attrs, std::vector<MXTensor>* in,
                             std::vector<MXTensor>* out, const OpResource&) {
  std::vector<MXTensor>& t = *in;
  const int64_t hidden = t[0].shape[0], inputs = t[0].shape[1];
  const bool to_mirror = attr_int(attrs, "to_mirror", 1) != 0;
  const int threads = attr_threads(attrs);
  float* mirror = t[2].data<float>();
  for (int a = 0; a < 2; ++a) {
    float* rows_major = t[a].data<float>();
    float* mirrored = mirror + a * inputs * hidden;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t j = 0; j < hidden; ++j) {
      for (int64_t k = 0; k < inputs; ++k) {
        if (to_mirror) {
          mirrored[k * hidden + j] = rows_major[j * inputs + k];
        } else {
          rows_major[j * inputs + k] = mirrored[k * hidden + j];
        }
      }
    }
  }
  (*out)[0].data<float>()[0] = 0.f;
  return MX_SUCCESS;
}

}  // namespace

// Which products the step uses here: 512 (AVX-512), 2 (AVX2 with FMA), or 0 (it cannot run).
extern "C" int mnist_mlp_step_isa() { return kIsa; }

REGISTER_OP(mnist_mlp_step)
    .setParseAttrs(step_parse)
    .setInferType(step_type)
    .setInferShape(step_shape)
    .setMutateInputs(step_mutates)
    .setForward(step_forward, "cpu");

REGISTER_OP(mnist_mlp_mirror)
    .setParseAttrs(mirror_parse)
    .setInferType(mirror_type)
    .setInferShape(mirror_shape)
    .setMutateInputs(mirror_mutates)
    .setForward(mirror_forward, "cpu");
