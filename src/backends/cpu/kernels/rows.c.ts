// The row kernels of every compiled CPU library (part of RUNTIME_C, runtime.c.ts): sums and maxima in vector lanes,
// softmax and layer norm over rows, window and global pooling, and the generic depthwise convolution, each spread
// over the thread pool.
export const ROWS_C = String.raw`
static inline float vsum(vf v) { float s = 0; for (int i = 0; i < VW; i++) s += v[i]; return s; }
/* Sums and maxima in vector lanes: strict float semantics keep the compiler from vectorizing a serial reduction. */
static float ksum(const float *x, int n) {
  vf a = {0}; int i = 0;
  for (; i + VW <= n; i += VW) a += *(const vfu *)(x + i);
  float s = vsum(a);
  for (; i < n; i++) s += x[i];
  return s;
}
static float ksqdev(const float *x, int n, float mean) {
  vf a = {0}; int i = 0;
  for (; i + VW <= n; i += VW) { vf d = *(const vfu *)(x + i) - mean; a += d * d; }
  float s = vsum(a);
  for (; i < n; i++) { float d = x[i] - mean; s += d * d; }
  return s;
}
static float kmax_arr(const float *x, int n) {
  vf a = {0}; a -= INFINITY; int i = 0;
  typedef int32_t vi __attribute__((vector_size(VW * 4)));
  for (; i + VW <= n; i += VW) { vf v = *(const vfu *)(x + i); vi m = v > a; a = (vf)(((vi)v & m) | ((vi)a & ~m)); }
  float m = -INFINITY;
  for (int l = 0; l < VW; l++) m = a[l] > m ? a[l] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

static void softmax_row(const float *x, float *y, int n) {
  float m = kmax_arr(x, n);
  for (int i = 0; i < n; i++) y[i] = kexp(x[i] - m);
  float r = 1.0f / ksum(y, n);
  for (int i = 0; i < n; i++) y[i] *= r;
}

typedef struct { const float *x; float *y; int rows, cols, per; const float *g, *b; float eps; } rows_job;
static void softmax_task(void *p, int t) {
  const rows_job *j = p;
  for (int r = t * j->per; r < KMIN(j->rows, (t + 1) * j->per); r++) softmax_row(j->x + (size_t)r * j->cols, j->y + (size_t)r * j->cols, j->cols);
}
static int rows_per_task(int rows) { int tasks = KMIN(rows, 8 * kiln_threads()); return (rows + tasks - 1) / tasks; }
void kiln_softmax_rows(const float *x, float *y, int rows, int cols) {
  rows_job j = { x, y, rows, cols, rows_per_task(rows), 0, 0, 0 };
  kiln_pool_run(softmax_task, &j, (rows + j.per - 1) / j.per);
}

static void layernorm_task(void *p, int t) {
  const rows_job *j = p;
  int n = j->cols;
  for (int r = t * j->per; r < KMIN(j->rows, (t + 1) * j->per); r++) {
    const float *x = j->x + (size_t)r * n;
    float *y = j->y + (size_t)r * n;
    float mean = ksum(x, n) / n;
    float inv = 1.0f / sqrtf(ksqdev(x, n, mean) / n + j->eps);
    if (j->b) for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * j->g[i] + j->b[i];
    else for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * j->g[i];
  }
}
void kiln_layernorm_rows(const float *x, const float *g, const float *b, float *y, int rows, int cols, float eps) {
  rows_job j = { x, y, rows, cols, rows_per_task(rows), g, b, eps };
  kiln_pool_run(layernorm_task, &j, (rows + j.per - 1) / j.per);
}

typedef struct { const float *x; float *y; int planes, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, is_max, count_pad; } pool_job;
/* One plane per task, one output row at a time: for each window tap, a branch-free pass over the output columns
   whose input column is inside the image (the others are padding and skipped). */
static void pool_task(void *p, int c) {
  const pool_job *j = p;
  const float *x = j->x + (size_t)c * j->H * j->W;
  float *y = j->y + (size_t)c * j->OH * j->OW;
  int OW = j->OW, sw = j->sw;
  int *cw = (int *)kiln_scratch(0, OW);
  for (int ow = 0; ow < OW; ow++) cw[ow] = 0;
  for (int b = 0; b < j->kw; b++) {
    int off = b * j->dw - j->pw;
    int lo = off < 0 ? (-off + sw - 1) / sw : 0, hi = (j->W - 1 - off) < 0 ? 0 : KMIN(OW, (j->W - 1 - off) / sw + 1);
    for (int ow = lo; ow < hi; ow++) cw[ow]++;
  }
  for (int oh = 0; oh < j->OH; oh++) {
    float *acc = y + oh * OW;
    for (int ow = 0; ow < OW; ow++) acc[ow] = j->is_max ? -INFINITY : 0;
    int h0 = oh * j->sh - j->ph, ch = 0;
    for (int a = 0; a < j->kh; a++) {
      int h = h0 + a * j->dh;
      if (h < 0 || h >= j->H) continue;
      ch++;
      const float *xr = x + h * j->W;
      for (int b = 0; b < j->kw; b++) {
        int off = b * j->dw - j->pw;
        int lo = off < 0 ? (-off + sw - 1) / sw : 0, hi = (j->W - 1 - off) < 0 ? 0 : KMIN(OW, (j->W - 1 - off) / sw + 1);
        if (j->is_max) for (int ow = lo; ow < hi; ow++) { float v = xr[ow * sw + off]; acc[ow] = v > acc[ow] || v != v ? v : acc[ow]; }
        else for (int ow = lo; ow < hi; ow++) acc[ow] += xr[ow * sw + off];
      }
    }
    if (j->is_max) continue;
    for (int ow = 0; ow < OW; ow++) {
      /* count_include_pad counts the whole window: the builder sends it here in floor mode only, where no window
         overhangs the padded input (clipping against the top/left pads alone got asymmetric pads wrong) */
      int cnt = j->count_pad ? j->kh * j->kw : ch * cw[ow];
      acc[ow] = cnt ? acc[ow] / cnt : NAN;
    }
  }
}
void kiln_pool2d(const float *x, float *y, int planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
    int dh, int dw, int ph, int pw, int is_max, int count_pad) {
  pool_job j = { x, y, planes, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, is_max, count_pad };
  kiln_pool_run(pool_task, &j, planes);
}

typedef struct { const float *x; float *y; int hw, is_max, planes, tasks; } gpool_job;
static void gpool_task(void *p, int c) {
  const gpool_job *j = p;
  const float *x = j->x + (size_t)c * j->hw;
  if (!j->is_max) { j->y[c] = ksum(x, j->hw) / j->hw; return; }
  float acc = -INFINITY;
  for (int i = 0; i < j->hw; i++) acc = x[i] > acc || x[i] != x[i] ? x[i] : acc;
  j->y[c] = acc;
}
static void gpool_tasks(void *p, int t) {
  const gpool_job *j = p;
  int per = (j->planes + j->tasks - 1) / j->tasks;
  for (int c = t * per; c < KMIN(j->planes, (t + 1) * per); c++) gpool_task(p, c);
}
void kiln_global_pool(const float *x, float *y, int planes, int hw, int is_max) {
  /* a few planes per task: one plane is often less work than handing it to another thread */
  gpool_job j = { x, y, hw, is_max, planes, KMIN(planes, 4 * kiln_threads()) };
  kiln_pool_run(gpool_tasks, &j, j.tasks);
}

typedef struct { const float *x, *w, *bias; float *y; int C, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, mult; plane_epi epi; const void *ctx; } dw_job;
static void dw_task(void *p, int t) {
  const dw_job *j = p;
  int oc = t % (j->C * j->mult), n = t / (j->C * j->mult), ic = oc / j->mult;
  const float *x = j->x + ((size_t)n * j->C + ic) * j->H * j->W;
  const float *w = j->w + (size_t)oc * j->kh * j->kw;
  float *y = j->y + ((size_t)n * j->C * j->mult + oc) * j->OH * j->OW;
  float b = j->bias ? j->bias[oc] : 0;
  for (int oh = 0; oh < j->OH; oh++) {
    float *yr = y + oh * j->OW;
    for (int ow = 0; ow < j->OW; ow++) yr[ow] = b;
    for (int a = 0; a < j->kh; a++) {
      int h = oh * j->sh - j->ph + a * j->dh;
      if (h < 0 || h >= j->H) continue;
      const float *xr = x + h * j->W;
      for (int c = 0; c < j->kw; c++) {
        float wv = w[a * j->kw + c];
        int off = c * j->dw - j->pw;
        /* valid ow: 0 <= ow*sw + off < W */
        int lo = off < 0 ? (-off + j->sw - 1) / j->sw : 0;
        int hi = (j->W - 1 - off) < 0 ? 0 : KMIN(j->OW, (j->W - 1 - off) / j->sw + 1);
        if (j->sw == 1) for (int ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow + off];
        else for (int ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow * j->sw + off];
      }
    }
  }
  if (j->epi) j->epi(j->ctx, y, n, oc);
}
void kiln_depthwise(const float *x, const float *w, const float *bias, float *y, int N, int C, int H, int W, int OH, int OW,
    int kh, int kw, int sh, int sw, int dh, int dw, int ph, int pw, int mult, plane_epi epi, const void *ctx) {
  dw_job j = { x, w, bias, y, C, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, mult, epi, ctx };
  kiln_pool_run(dw_task, &j, N * C * mult);
}
`;
