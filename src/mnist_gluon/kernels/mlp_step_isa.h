// The body of mnist_mlp_step for one instruction set: included by mlp_step.cc once per set,
// inside a namespace that defines the vector type V of W floats, its operations, and
// `apart_from` and `union_of` (which pixels of an image, or of a group of images, are not the
// background).
//
// Each element of a product is one lane of one accumulator, summed from zero in input (or
// batch) order, so neither the blocking nor the split between threads changes a bit.

namespace {

constexpr int kGroupRows = 4;      // batch rows whose hidden units are computed together
constexpr int64_t kInputChunk = 16;  // inputs whose gradients a thread takes at a time

// MXNet's NAGMomKernel (whose momentum reads the weight just written, as MXNet calls it with
// out=weight) and SGDMomKernel, element by element; no FMA contraction, as in MXNet. The
// settings are copied into locals and the arrays marked unaliased, so that the loops vectorise.
inline void update(float* __restrict w, const float* __restrict g, float* __restrict m,
                   int64_t n, const Update& u) {
  const float lr = u.lr, momentum = u.momentum, wd = u.wd, rescale = u.rescale, bound = u.clip;
  const float m1 = momentum + 1, lr_wd = lr * wd;
  const bool clipped = bound >= 0.f;
  if (u.nag) {
    for (int64_t i = 0; i < n; ++i) {
      const float grad = clipped ? clip(rescale * g[i], bound) : rescale * g[i];
      const float mom = momentum * m[i];
      const float wi = w[i] - mom + m1 * (mom - (lr * (grad + (wd * w[i]))));
      w[i] = wi;
      m[i] = mom - (lr * (grad + (wd * wi)));
    }
  } else {
    const float lr_rescale = lr * rescale;
    for (int64_t i = 0; i < n; ++i) {
      const float step = clipped ? lr * clip(rescale * g[i], bound) : lr_rescale * g[i];
      const float mi = momentum * m[i] - lr_wd * w[i] - step;
      m[i] = mi;
      w[i] = w[i] + mi;
    }
  }
}

// sum over the inputs k of s.w1t[k][j..j+NV*W-1], into out (fc1's weights' row sums, for the
// background's share of every image).
template <int NV>
inline void column_sums(const Step& s, int64_t j, float* out) {
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = vzero();
  for (int64_t k = 0; k < s.inputs; ++k)
    for (int v = 0; v < NV; ++v) acc[v] = vadd(acc[v], vload(s.w1t + k * s.hidden + j + v * W));
  for (int v = 0; v < NV; ++v) vstore(out + j + v * W, acc[v]);
}

// Hidden units j..j+NV*W-1 of a group of rows, before the bias: over the inputs where any of
// them is not the background (`count` of them; `values`, kGroupRows rows `stride` apart, 0 where a row is
// the background), then the background times fc1's row sums.
template <int NV>
inline void hidden_chunk(const Step& s, const int32_t* index, const float* values,
                         int64_t stride, int32_t count, const float* sums, int64_t j,
                         float* const* h) {
  V acc[kGroupRows][NV];
  for (int r = 0; r < kGroupRows; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vzero();
  for (int32_t n = 0; n < count; ++n) {
    const float* w = s.w1t + index[n] * s.hidden + j;
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = vload(w + v * W);
    for (int r = 0; r < kGroupRows; ++r) {
      const V x = vset(values[r * stride + n]);
      for (int v = 0; v < NV; ++v) acc[r][v] = vfma(x, wv[v], acc[r][v]);
    }
  }
  const V background = vset(s.background);
  for (int r = 0; r < kGroupRows; ++r)
    for (int v = 0; v < NV; ++v)
      vstore(h[r] + j + v * W, vfma(background, vload(sums + j + v * W), acc[r][v]));
}

// Row q of the batch, its hidden units before the bias already in s.h: the hidden units, its
// logits, loss, the logits' gradient and the hidden units' gradient.
void finish_row(const Step& s, int64_t q) {
  float* h = s.h + q * s.stride;
  for (int64_t u = 0; u < s.hidden; ++u) {
    const float v = h[u] + s.b1[u];
    h[u] = v > 0.f ? v : 0.f;
  }
  float* z = s.dz + q * s.classes;
  for (int64_t c = 0; c < s.classes; ++c) {
    V acc = vzero();
    const float* w = s.w2 + c * s.hidden;
    for (int64_t k = 0; k < s.hidden; k += W) acc = vfma(vload(h + k), vload(w + k), acc);
    z[c] = vsum(acc) + s.b2[c];
  }
  loss_row(z, static_cast<int>(s.classes), static_cast<int>(s.labels[q]), s.smoothing, z,
           s.loss + q, s.correct + q);
  float* dh = s.dh + q * s.stride;
  for (int64_t u = 0; u < s.hidden; u += W) {
    V acc = vzero();
    for (int64_t c = 0; c < s.classes; ++c)
      acc = vfma(vset(z[c]), vload(s.w2 + c * s.hidden + u), acc);
    vstore(dh + u, vrelu_grad(vload(h + u), acc));
  }
}

// Rows q0..q0+kGroupRows-1 (those below the batch's end): each row's pixels apart from the
// background (for the gradients), the group's hidden units together, then each row.
void row_group(const Step& s, int64_t q0, const float* sums, std::vector<int32_t>* ints,
               std::vector<float>* floats) {
  const int64_t rows = std::min<int64_t>(kGroupRows, s.batch - q0);
  const float* x[kGroupRows];
  float* h[kGroupRows];
  floats->resize(static_cast<size_t>(kGroupRows * (s.padded + s.stride)));
  ints->resize(static_cast<size_t>(s.padded));
  float* values = floats->data();
  float* spare = values + kGroupRows * s.padded;
  for (int r = 0; r < kGroupRows; ++r) {  // a short group repeats its first row, unkept
    x[r] = s.x[r < rows ? q0 + r : q0];
    h[r] = r < rows ? s.h + (q0 + r) * s.stride : spare + r * s.stride;
  }
  for (int64_t q = q0; q < q0 + rows; ++q) {
    s.counts[q] = apart_from(s.x[q], s.inputs, s.background, s.nonzero_index + q * s.padded,
                             s.nonzero_value + q * s.padded);
  }
  const int32_t count = union_of(x, kGroupRows, s.inputs, s.background, ints->data(), values,
                                 s.padded);
  int64_t j = 0;
  for (; j + 4 * W <= s.hidden; j += 4 * W)
    hidden_chunk<4>(s, ints->data(), values, s.padded, count, sums, j, h);
  for (; j < s.hidden; j += W)
    hidden_chunk<1>(s, ints->data(), values, s.padded, count, sums, j, h);
  for (int64_t q = q0; q < q0 + rows; ++q) finish_row(s, q);
}

// fc1's gradient for inputs k0..k0+kInputChunk-1 (of those below s.inputs), every hidden unit:
// the rows with a pixel apart from the background there, in batch order, then the
// background's share; then the update of those inputs' weights. `cursor` is the thread's
// place in each row's list, which only moves forward as its chunks do.
void input_chunk(const Step& s, int64_t k0, const float* bias_grad, int32_t* cursor,
                 std::vector<int32_t>* lists, std::vector<float>* grads) {
  const int64_t k1 = std::min<int64_t>(s.inputs, k0 + kInputChunk);
  // Per input: the (row, value) pairs there, rows in order.
  lists->resize(static_cast<size_t>(kInputChunk * (s.batch + 1)));
  int32_t* counts = lists->data();
  int32_t* rows = counts + kInputChunk;
  grads->resize(static_cast<size_t>(kInputChunk * s.batch + s.hidden));
  float* values = grads->data();
  float* g = values + kInputChunk * s.batch;
  for (int64_t k = 0; k < kInputChunk; ++k) counts[k] = 0;
  for (int64_t i = 0; i < s.batch; ++i) {
    const int32_t* index = s.nonzero_index + i * s.padded;
    const float* value = s.nonzero_value + i * s.padded;
    int32_t n = cursor[i];
    while (n < s.counts[i] && index[n] < k0) ++n;
    for (; n < s.counts[i] && index[n] < k1; ++n) {
      const int64_t k = index[n] - k0;
      rows[k * s.batch + counts[k]] = static_cast<int32_t>(i);
      values[k * s.batch + counts[k]++] = value[n];
    }
    cursor[i] = n;
  }
  const V background = vset(s.background);
  for (int64_t k = k0; k < k1; ++k) {
    const int32_t* at = rows + (k - k0) * s.batch;
    const float* by = values + (k - k0) * s.batch;
    for (int64_t j = 0; j < s.hidden; j += 4 * W) {
      const int nv = static_cast<int>(std::min<int64_t>(4, (s.hidden - j) / W));
      V acc[4] = {vzero(), vzero(), vzero(), vzero()};
      for (int32_t n = 0; n < counts[k - k0]; ++n) {
        const V x = vset(by[n]);
        const float* d = s.dh + at[n] * s.stride + j;
        for (int v = 0; v < 4; ++v)
          if (v < nv) acc[v] = vfma(x, vload(d + v * W), acc[v]);
      }
      for (int v = 0; v < nv; ++v)
        vstore(g + j + v * W, vfma(background, vload(bias_grad + j + v * W), acc[v]));
    }
    update(s.w1t + k * s.hidden, g, s.m1t + k * s.hidden, s.hidden, s.u);
  }
}

// fc2's weights of class c: their gradient, summed over the batch in order, and update.
void class_row(const Step& s, int64_t c, float* g) {
  for (int64_t j = 0; j < s.hidden; j += W) {
    V acc = vzero();
    for (int64_t i = 0; i < s.batch; ++i)
      acc = vfma(vset(s.dz[i * s.classes + c]), vload(s.h + i * s.stride + j), acc);
    vstore(g + j, acc);
  }
  update(s.w2 + c * s.hidden, g, s.m2 + c * s.hidden, s.hidden, s.u);
}

// fc1's and fc2's biases and the step's sums, each in batch order.
void biases(const Step& s, const float* bias_grad, float* sums, float* stats) {
  std::vector<float> g(static_cast<size_t>(s.classes), 0.f);
  for (int64_t i = 0; i < s.batch; ++i)
    for (int64_t c = 0; c < s.classes; ++c) g[c] += s.dz[i * s.classes + c];
  update(s.b2, g.data(), s.mb2, s.classes, s.u);
  g.assign(bias_grad, bias_grad + s.hidden);
  update(s.b1, g.data(), s.mb1, s.hidden, s.u);
  float loss = 0.f, correct = 0.f;
  for (int64_t i = 0; i < s.batch; ++i) loss += s.loss[i], correct += s.correct[i];
  stats[0] = loss, stats[1] = correct;
  sums[0] = sums[0] + loss, sums[1] = sums[1] + correct;
}

// `steps` steps on a team of `threads` threads, in one parallel region: in each, groups of
// rows as they come; a barrier; then inputs' chunks of fc1 as they come, and fc2's classes;
// a barrier. Step t reads its batch from x[t * batch...], its labels and learning rate, and
// adds its stats (row t of `stats`) to sums[(parity + t) % 2].
void run(const Step& first, int64_t steps, const float* const* x, const float* labels,
         const float* lrs, int threads, float* const* sums, int parity, float* stats) {
  const int64_t groups = (first.batch + kGroupRows - 1) / kGroupRows;
  const int64_t chunks = (first.inputs + kInputChunk - 1) / kInputChunk;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    thread_local std::vector<float> floats, more;
    thread_local std::vector<int32_t> ints;
    // fc1's row sums, and later its bias's gradient: every thread makes its own, in the same
    // order (cheaper than waiting for one).
    std::vector<float> own(static_cast<size_t>(first.hidden));
    std::vector<int32_t> cursor(static_cast<size_t>(first.batch));
    for (int64_t t = 0; t < steps; ++t) {
      Step s = first;
      s.x = x + t * s.batch;
      s.labels = labels + t * s.batch;
      s.u.lr = lrs[t];
      int64_t j = 0;
      for (; j + 8 * W <= s.hidden; j += 8 * W) column_sums<8>(s, j, own.data());
      for (; j < s.hidden; j += W) column_sums<1>(s, j, own.data());
#pragma omp for schedule(dynamic, 2)
      for (int64_t group = 0; group < groups; ++group)
        row_group(s, group * kGroupRows, own.data(), &ints, &floats);
      // (the implicit barrier: every row is done)
      for (int64_t u = 0; u < s.hidden; u += W) {
        V acc = vzero();
        for (int64_t i = 0; i < s.batch; ++i) acc = vadd(acc, vload(s.dh + i * s.stride + u));
        vstore(own.data() + u, acc);
      }
      std::fill(cursor.begin(), cursor.end(), 0);
#pragma omp for schedule(dynamic) nowait
      for (int64_t chunk = 0; chunk < chunks; ++chunk)
        input_chunk(s, chunk * kInputChunk, own.data(), cursor.data(), &ints, &floats);
      more.resize(static_cast<size_t>(s.hidden));
#pragma omp for schedule(dynamic) nowait
      for (int64_t c = 0; c < s.classes; ++c) class_row(s, c, more.data());
#pragma omp single nowait
      biases(s, own.data(), sums[(parity + t) % 2], stats + 2 * t);
#pragma omp barrier
    }
  }
}

}  // namespace
