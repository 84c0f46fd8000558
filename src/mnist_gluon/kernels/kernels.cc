// mnist_gluon's own operators, as an MXNet extension library (loaded with mx.library.load):
//
//   mnist_fused_update  one call updates every parameter in place: NAG, SGD with momentum, Adam
//                       (and adds `adds` pairs of arrays after them: target += value, for the
//                       epoch's running sums, which would cost an operator call of their own).
//                       The arithmetic is MXNet's own kernels' (optimizer_op-inl.h), operation
//                       for operation, so the parameters are bit-identical to theirs. Its
//                       hyperparameters are read by MXNet's own parser of operator arguments
//                       (dmlc::stof, from the headers the mxnet wheel ships), which is not
//                       correctly rounded: the nearest float would not always be MXNet's.
//   mnist_elastic_warp  a batch gathered from the training set, each image moved by its affine
//                       draws and distorted elastically: random fields, Gaussian blur and
//                       bilinear resampling in one pass. Its random numbers are a hash of
//                       (seed, epoch, image index), so they depend neither on the step an
//                       interrupted run resumed at nor on how the batch is split over devices.
//
// Built with -ffp-contract=off and without -ffast-math: every clone below (AVX-512, AVX2,
// plain x86-64, chosen at load time) does the same IEEE operations in the same order, so the
// results do not depend on the CPU.

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "dmlc/strtonum.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;

using Attrs = std::unordered_map<std::string, std::string>;

#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace {

float attr_float(const Attrs& attrs, const char* key, float fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : static_cast<float>(std::strtod(it->second.c_str(), nullptr));
}

int64_t attr_int(const Attrs& attrs, const char* key, int64_t fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : std::strtoll(it->second.c_str(), nullptr, 10);
}

// mshadow_op::clip
inline float clip(float x, float bound) {
  if (x > bound) return bound;
  if (x < -bound) return -bound;
  return x;
}

// ---- the fused update -----------------------------------------------------------------------

struct Hyper {
  float lr, momentum, wd, rescale, clip, beta1, beta2, epsilon;
};

// As MXNet reads a float argument of its own operators.
float mxnet_float(const Attrs& attrs, const char* key, float fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : dmlc::stof(it->second);
}

Hyper hyper(const Attrs& attrs) {
  return {mxnet_float(attrs, "lr", 0.f),       mxnet_float(attrs, "momentum", 0.f),
          mxnet_float(attrs, "wd", 0.f),       mxnet_float(attrs, "rescale_grad", 1.f),
          mxnet_float(attrs, "clip_gradient", -1.f), mxnet_float(attrs, "beta1", 0.9f),
          mxnet_float(attrs, "beta2", 0.999f), mxnet_float(attrs, "epsilon", 1e-8f)};
}

// NAGMomKernel, called by MXNet with out=weight: the momentum's last term reads the weight
// just written.
CLONES void nag(float* w, const float* g, float* m, int64_t n, Hyper h) {
  const float m1 = h.momentum + 1;
  if (h.clip >= 0.0f) {
    for (int64_t i = 0; i < n; ++i) {
      float mom = h.momentum * m[i];
      w[i] = w[i] - mom + m1 * (mom - (h.lr * (clip(h.rescale * g[i], h.clip) + (h.wd * w[i]))));
      m[i] = mom - (h.lr * ((clip(h.rescale * g[i], h.clip)) + (h.wd * w[i])));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      float mom = h.momentum * m[i];
      w[i] = w[i] - mom + m1 * (mom - (h.lr * (h.rescale * g[i] + h.wd * w[i])));
      m[i] = mom - h.lr * ((h.rescale * g[i]) + (h.wd * w[i]));
    }
  }
}

// SGDMomKernel
CLONES void sgd_momentum(float* w, const float* g, float* m, int64_t n, Hyper h) {
  if (h.clip >= 0.0f) {
    for (int64_t i = 0; i < n; ++i) {
      m[i] = h.momentum * m[i] - h.lr * h.wd * w[i] - h.lr * clip(h.rescale * g[i], h.clip);
      w[i] = w[i] + m[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      m[i] = h.momentum * m[i] - h.lr * h.wd * w[i] - h.lr * h.rescale * g[i];
      w[i] = w[i] + m[i];
    }
  }
}

// AdamUpdateKernel (the bias correction is in lr, as mx.optimizer.Adam passes it)
CLONES void adam(float* w, const float* g, float* mean, float* var, int64_t n, Hyper h) {
  const float keep1 = 1.f - h.beta1, keep2 = 1.f - h.beta2;
  for (int64_t i = 0; i < n; ++i) {
    float grad = g[i] * h.rescale + w[i] * h.wd;
    if (h.clip >= 0.f) grad = clip(grad, h.clip);
    mean[i] = h.beta1 * mean[i] + keep1 * grad;
    var[i] = h.beta2 * var[i] + keep2 * grad * grad;
    w[i] = w[i] - h.lr * mean[i] / (std::sqrt(var[i]) + h.epsilon);
  }
}

int slots(const std::string& kind) { return kind == "adam" ? 2 : 1; }

std::string attr_kind(const Attrs& attrs) {
  auto it = attrs.find("kind");
  return it == attrs.end() ? "" : it->second;
}

MXReturnValue update_parse(const Attrs& attrs, int* num_in, int* num_out) {
  const std::string kind = attr_kind(attrs);
  if (kind != "nag" && kind != "sgd" && kind != "adam") {
    MX_ERROR_MSG << "mnist_fused_update: kind must be nag, sgd or adam, not '" << kind << "'";
    return MX_FAIL;
  }
  const int64_t count = attr_int(attrs, "count", 0), adds = attr_int(attrs, "adds", 0);
  if (count < 1 || adds < 0) {
    MX_ERROR_MSG << "mnist_fused_update: count must be at least 1, adds at least 0";
    return MX_FAIL;
  }
  *num_in = static_cast<int>(count * (2 + slots(kind)) + 2 * adds);
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue update_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  for (int t : *in) {
    if (t != kFloat32) {
      MX_ERROR_MSG << "mnist_fused_update: every array must be float32";
      return MX_FAIL;
    }
  }
  (*out)[0] = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue update_shape(const Attrs&, std::vector<std::vector<unsigned int>>*,
                           std::vector<std::vector<unsigned int>>* out) {
  (*out)[0] = {1};
  return MX_SUCCESS;
}

MXReturnValue update_mutates(const Attrs& attrs, std::vector<int>* indices) {
  const std::string kind = attr_kind(attrs);
  const int group = 2 + slots(kind);
  const int64_t count = attr_int(attrs, "count", 0), adds = attr_int(attrs, "adds", 0);
  for (int64_t p = 0; p < count; ++p) {
    indices->push_back(static_cast<int>(p * group));  // the weight
    for (int s = 0; s < slots(kind); ++s) indices->push_back(static_cast<int>(p * group + 2 + s));
  }
  for (int64_t a = 0; a < adds; ++a) indices->push_back(static_cast<int>(count * group + 2 * a));
  return MX_SUCCESS;
}

// Elements per thread below which one thread does the whole update: a parallel region costs
// more than the arithmetic of the small MLP's parameters.
constexpr int64_t kParallelGrain = 1 << 18;

MXReturnValue update_forward(const Attrs& attrs, std::vector<MXTensor>* in,
                             std::vector<MXTensor>* out, const OpResource&) {
  const std::string kind = attr_kind(attrs);
  Hyper h;
  try {
    h = hyper(attrs);
  } catch (const std::exception& error) {
    MX_ERROR_MSG << "mnist_fused_update: " << error.what();
    return MX_FAIL;
  }
  const int group = 2 + slots(kind);
  const int64_t count = attr_int(attrs, "count", 0), adds = attr_int(attrs, "adds", 0);
  for (int64_t a = 0; a < adds; ++a) {  // target += value, as MXNet's elemwise_add does
    MXTensor& target = (*in)[count * group + 2 * a];
    MXTensor& value = (*in)[count * group + 2 * a + 1];
    if (target.size() != value.size()) {
      MX_ERROR_MSG << "mnist_fused_update: addition " << a << " has arrays of different sizes";
      return MX_FAIL;
    }
    float* to = target.data<float>();
    const float* from = value.data<float>();
    for (int64_t i = 0; i < target.size(); ++i) to[i] = to[i] + from[i];
  }
  for (int64_t p = 0; p < count; ++p) {
    MXTensor* t = &(*in)[p * group];
    const int64_t n = t[0].size();
    for (int k = 1; k < group; ++k) {
      if (t[k].size() != n) {
        MX_ERROR_MSG << "mnist_fused_update: parameter " << p << " has arrays of different sizes";
        return MX_FAIL;
      }
    }
    const int threads = n >= 2 * kParallelGrain ? omp_get_max_threads() : 1;
    const int64_t chunk = (n + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int c = 0; c < threads; ++c) {
      const int64_t begin = c * chunk, len = std::min(chunk, n - begin);
      if (len <= 0) continue;
      float* w = t[0].data<float>() + begin;
      const float* g = t[1].data<float>() + begin;
      float* s0 = t[2].data<float>() + begin;
      if (kind == "nag") nag(w, g, s0, len, h);
      else if (kind == "sgd") sgd_momentum(w, g, s0, len, h);
      else adam(w, g, s0, t[3].data<float>() + begin, len, h);
    }
  }
  (*out)[0].data<float>()[0] = 0.f;
  return MX_SUCCESS;
}

// ---- the elastic warp -----------------------------------------------------------------------

constexpr int kSide = 28;
constexpr int kPixels = kSide * kSide;
constexpr int kStride = 32;  // blur rows padded to whole vectors

// splitmix64's finaliser: a well-mixed 64-bit hash of a 64-bit counter.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

// The stream of one image: its index and the epoch, under the run's seed.
inline uint64_t image_key(uint64_t seed, uint32_t epoch, uint32_t index) {
  return mix64(mix64(seed + kGamma) ^ ((static_cast<uint64_t>(epoch) << 32) | index));
}

// Pixel j's two uniform [-1, 1) draws (x, then y) are the top two 24-bit fields of
// mix64(key + (j + 1) * gamma); multiples of 2^-23 - 1, exact in float.
CLONES void draw_fields(uint64_t key, float* fx, float* fy) {
  const float unit = 1.0f / (1 << 23);
  for (int j = 0; j < kPixels; ++j) {
    const uint64_t bits = mix64(key + static_cast<uint64_t>(j + 1) * kGamma);
    const int y = j / kSide, x = j % kSide;
    fx[y * kStride + x] = static_cast<float>(bits >> 40) * unit - 1.0f;
    fy[y * kStride + x] = static_cast<float>((bits >> 16) & 0xffffff) * unit - 1.0f;
  }
}

// plane <- B plane B (B symmetric and banded, rows padded to kStride): the Gaussian blur along
// rows and columns, zero beyond the edge. The second product skips the zeros of the band.
CLONES void blur(const float* b, int radius, float* plane, float* scratch) {
  for (int y = 0; y < kSide; ++y) {
    float* row = scratch + y * kStride;
    for (int x = 0; x < kStride; ++x) row[x] = 0.f;
    for (int k = 0; k < kSide; ++k) {
      const float v = plane[y * kStride + k];
      const float* taps = b + k * kStride;
      for (int x = 0; x < kStride; ++x) row[x] += v * taps[x];
    }
  }
  for (int y = 0; y < kSide; ++y) {
    float* row = plane + y * kStride;
    for (int x = 0; x < kStride; ++x) row[x] = 0.f;
    const int first = y - radius < 0 ? 0 : y - radius;
    const int last = y + radius >= kSide ? kSide - 1 : y + radius;
    for (int k = first; k <= last; ++k) {
      const float v = b[y * kStride + k];
      const float* from = scratch + k * kStride;
      for (int x = 0; x < kStride; ++x) row[x] += v * from[x];
    }
  }
}

int blur_radius(float sigma) { return static_cast<int>(std::ceil(3 * sigma)); }

std::vector<float> make_blur_matrix(float sigma) {
  const int radius = blur_radius(sigma);
  double total = 0;
  for (int k = -radius; k <= radius; ++k) total += std::exp(-0.5 * (k / sigma) * (k / sigma));
  std::vector<float> b(kSide * kStride, 0.f);
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      const int d = x - y;
      if (std::abs(d) <= radius) {
        b[y * kStride + x] = static_cast<float>(std::exp(-0.5 * (d / sigma) * (d / sigma)) / total);
      }
    }
  }
  return b;
}

// The matrix of the last sigma this thread warped with: a run has one, and making it takes
// 800 exponentials, every step.
const std::vector<float>& blur_matrix(float sigma) {
  thread_local float cached_sigma = -1.f;
  thread_local std::vector<float> cached;
  if (sigma != cached_sigma) {
    cached = make_blur_matrix(sigma);
    cached_sigma = sigma;
  }
  return cached;
}

struct Warp {
  float alpha, background;
  int radius;
  const float* b;  // the blur matrix, kSide x kStride
};

// Where each output pixel (x, y) is sampled from: A(p + alpha * field(p)), A the image's
// affine draws about the centre.
CLONES void sources(const float* fx, const float* fy, float alpha, const float* draw, float* sx,
                    float* sy) {
  const float angle = draw[0], scale = draw[1], dy = draw[2], dx = draw[3], mirror = draw[4];
  const float cs = std::cos(angle) / scale, sn = std::sin(angle) / scale;
  const float centre = (kSide - 1) / 2.0f;
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      const float qx = x + alpha * fx[y * kStride + x] - centre;
      const float qy = y + alpha * fy[y * kStride + x] - centre;
      sx[y * kSide + x] = centre + (cs * mirror * qx - sn * qy) - dx;
      sy[y * kSide + x] = centre + (sn * mirror * qx + cs * qy) - dy;
    }
  }
}

inline int clamp_index(int i) { return i < 0 ? 0 : (i >= kSide ? kSide - 1 : i); }
inline float inside(int i) { return i >= 0 && i < kSide ? 1.f : 0.f; }

// Bilinear resampling; a neighbour outside the image counts as the background. Branch-free,
// so that the compiler can use gathers.
CLONES void resample(const float* image, const float* sx, const float* sy, float background,
                     float* out) {
  for (int j = 0; j < kPixels; ++j) {
    const float x0f = std::floor(sx[j]), y0f = std::floor(sy[j]);
    const float wx = sx[j] - x0f, wy = sy[j] - y0f;
    const int x0 = static_cast<int>(x0f), y0 = static_cast<int>(y0f);
    const int xa = clamp_index(x0), xb = clamp_index(x0 + 1);
    const int ya = clamp_index(y0) * kSide, yb = clamp_index(y0 + 1) * kSide;
    const float ux = 1.f - wx, uy = 1.f - wy;
    const float kx0 = inside(x0), kx1 = inside(x0 + 1), ky0 = inside(y0), ky1 = inside(y0 + 1);
    const float top = ux * kx0 * (image[ya + xa] - background) +
                      wx * kx1 * (image[ya + xb] - background);
    const float bottom = ux * kx0 * (image[yb + xa] - background) +
                         wx * kx1 * (image[yb + xb] - background);
    out[j] = uy * ky0 * top + wy * ky1 * bottom + background;
  }
}

struct Buffers {
  std::vector<float> data = std::vector<float>(3 * kSide * kStride + 2 * kPixels);
  float* fx() { return data.data(); }
  float* fy() { return fx() + kSide * kStride; }
  float* scratch() { return fy() + kSide * kStride; }
  float* sx() { return scratch() + kSide * kStride; }
  float* sy() { return sx() + kPixels; }
};

void warp_image(const Warp& warp, const float* image, const float* draw, uint64_t key,
                float* out, Buffers* buffers) {
  draw_fields(key, buffers->fx(), buffers->fy());
  blur(warp.b, warp.radius, buffers->fx(), buffers->scratch());
  blur(warp.b, warp.radius, buffers->fy(), buffers->scratch());
  sources(buffers->fx(), buffers->fy(), warp.alpha, draw, buffers->sx(), buffers->sy());
  resample(image, buffers->sx(), buffers->sy(), warp.background, out);
}

MXReturnValue warp_parse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 4;  // images (N, 784), index (B,), affine draws (B, 5), (seed, epoch) (B, 2)
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue warp_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if ((*in)[0] != kFloat32 || (*in)[2] != kFloat32) {
    MX_ERROR_MSG << "mnist_elastic_warp: the images and the draws must be float32";
    return MX_FAIL;
  }
  if ((*in)[1] != kInt32 || (*in)[3] != kInt32) {
    MX_ERROR_MSG << "mnist_elastic_warp: the index and the keys must be int32";
    return MX_FAIL;
  }
  (*out)[0] = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue warp_shape(const Attrs&, std::vector<std::vector<unsigned int>>* in,
                         std::vector<std::vector<unsigned int>>* out) {
  const auto& images = (*in)[0];
  const auto& index = (*in)[1];
  if (images.size() != 2 || images[1] != kPixels || index.size() != 1 ||
      (*in)[2] != std::vector<unsigned int>{index[0], 5} ||
      (*in)[3] != std::vector<unsigned int>{index[0], 2}) {
    MX_ERROR_MSG << "mnist_elastic_warp: expects images (N, 784), index (B,), draws (B, 5) "
                    "and keys (B, 2)";
    return MX_FAIL;
  }
  (*out)[0] = {index[0], static_cast<unsigned int>(kPixels)};
  return MX_SUCCESS;
}

MXReturnValue warp_forward(const Attrs& attrs, std::vector<MXTensor>* in,
                           std::vector<MXTensor>* out, const OpResource&) {
  const float sigma = attr_float(attrs, "sigma", 1.f);
  const Warp warp{attr_float(attrs, "alpha", 0.f), attr_float(attrs, "background", 0.f),
                  blur_radius(sigma), blur_matrix(sigma).data()};
  const float* images = (*in)[0].data<float>();
  const int64_t rows = (*in)[0].shape[0];
  const int32_t* index = (*in)[1].data<int32_t>();
  const float* draws = (*in)[2].data<float>();
  const int32_t* keys = (*in)[3].data<int32_t>();
  float* result = (*out)[0].data<float>();
  const int64_t batch = (*in)[1].shape[0];
  for (int64_t i = 0; i < batch; ++i) {
    if (index[i] < 0 || index[i] >= rows) {
      MX_ERROR_MSG << "mnist_elastic_warp: index " << index[i] << " is outside the "
                   << rows << " images";
      return MX_FAIL;
    }
  }
#pragma omp parallel
  {
    Buffers buffers;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < batch; ++i) {
      const uint64_t key = image_key(static_cast<uint32_t>(keys[2 * i]),
                                     static_cast<uint32_t>(keys[2 * i + 1]),
                                     static_cast<uint32_t>(index[i]));
      warp_image(warp, images + index[i] * kPixels, draws + 5 * i, key, result + i * kPixels,
                 &buffers);
    }
  }
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mnist_fused_update)
    .setParseAttrs(update_parse)
    .setInferType(update_type)
    .setInferShape(update_shape)
    .setMutateInputs(update_mutates)
    .setForward(update_forward, "cpu");

REGISTER_OP(mnist_elastic_warp)
    .setParseAttrs(warp_parse)
    .setInferType(warp_type)
    .setInferShape(warp_shape)
    .setForward(warp_forward, "cpu");

MXReturnValue initialize(int version) {
  if (version < 10900 || version >= 11000) {
    MX_ERROR_MSG << "mnist_gluon's kernels are built for MXNet 1.9, not " << version;
    return MX_FAIL;
  }
  return MX_SUCCESS;
}
