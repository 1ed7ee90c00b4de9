// The fixed part of every compiled CPU library: vector types for the host ISA, vectorizable math, a small thread
// pool, chains and replays, buffers and packing, then the row kernels (softmax, layer norm, pooling: rows.c.ts); the
// register-tile kernels are in tiles.c.ts, attention is generated per layer (codegen.ts).
// Per-layer code from codegen.ts calls these with its shapes baked in as constants.
import { ROWS_C } from './rows.c.js';

/** Declarations shared by every translation unit. */
export const RUNTIME_H = String.raw`
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX2__)
#define VW 8
#else
#define VW 4
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
/* lane masks picking the even or the odd elements of two vectors laid end to end (one permute on AVX-512): the
   stride-2 depthwise kernels read their columns this way instead of de-interleaving the input in memory */
typedef int32_t kvi __attribute__((vector_size(VW * 4)));
#if VW == 16
#define KEVEN ((kvi){ 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30 })
#define KODD ((kvi){ 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31 })
#elif VW == 8
#define KEVEN ((kvi){ 0, 2, 4, 6, 8, 10, 12, 14 })
#define KODD ((kvi){ 1, 3, 5, 7, 9, 11, 13, 15 })
#else
#define KEVEN ((kvi){ 0, 2, 4, 6 })
#define KODD ((kvi){ 1, 3, 5, 7 })
#endif
/* A 16 x 16 block of floats in 16 vectors transposed in registers: four rounds of two-vector permutes swapping the
   off-diagonal blocks of 8, 4, 2, 1 (GCC's __builtin_shuffle; elsewhere through memory). The transposed convolution's
   tiles and the channels-in-lanes depthwise kernel move between [channel][position] and [position][channel] with it. */
#if VW == 16 && defined(__GNUC__) && !defined(__clang__)
#define KILN_TR16 1
typedef int32_t tr_vi __attribute__((vector_size(64)));
static inline __attribute__((always_inline)) void ktranspose16(vf *r) {
#define TR_ROUND(b, lo, hi) for (int i = 0; i < 16; i++) if (!(i & b)) { vf a = r[i], z = r[i + b]; \
    r[i] = __builtin_shuffle(a, z, lo); r[i + b] = __builtin_shuffle(a, z, hi); }
  TR_ROUND(8, ((tr_vi){ 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23 }), ((tr_vi){ 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31 }))
  TR_ROUND(4, ((tr_vi){ 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27 }), ((tr_vi){ 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31 }))
  TR_ROUND(2, ((tr_vi){ 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29 }), ((tr_vi){ 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31 }))
  TR_ROUND(1, ((tr_vi){ 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30 }), ((tr_vi){ 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31 }))
#undef TR_ROUND
}
#elif VW == 16
static inline void ktranspose16(vf *r) {
  float t[16][16];
  for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) t[j][i] = r[i][j];
  for (int i = 0; i < 16; i++) memcpy(&r[i], t[i], sizeof(vf));
}
#endif
#define KEXPORT __attribute__((visibility("default")))
#define KMIN(a, b) ((a) < (b) ? (a) : (b))
#define KMAX(a, b) ((a) > (b) ? (a) : (b))

typedef void (*task_fn)(void *arg, int task);
void kiln_pool_run(task_fn fn, void *arg, int ntasks);
int kiln_threads(void);
void kiln_split2(int n1, int n2, int batch, int prefer2, int *c1, int *c2);
void kiln_split2n(int n1, int n2, int batch, int prefer2, int per, int *c1, int *c2);
void kiln_set_error(int64_t code);
float *kiln_scratch(int slot, size_t floats);
float *kiln_alloc(size_t floats);

typedef struct gemm_s {
  int M, N, K;
  const float *ap;                 /* A prepacked in [M/MR][K][MR] panels, or NULL */
  const float *a; int lda;         /* row-major A, packed per task when ap is NULL */
  const float *bp;                 /* B prepacked in [N/NR][K][NR] panels, or NULL */
  void (*packb)(const void *ctx, int j0, int k0, int kc, float *panel); /* fills [kc][NR] of B from row k0, col j0, zero padded */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx;
  float *c; int ldc;
  /* optional: 'batch' independent GEMMs sharing A (one per image); image b's ctx is at ctx + b * ctxbs bytes and
     its C at c + b * cbs floats (batch 0 means 1) */
  int batch; size_t cbs, ctxbs;
  int accumulate;                  /* C already holds the residual (the runner gave the layer its buffer): add to it */
  const struct kfuse_s *fuse;      /* the epilogue applied in the tile stores (kfuse_t, tiles.c.ts), or NULL */
} gemm_t;

/* Direct convolution (stride 1, group 1) on a zero-padded copy of the input, without im2col: the output is computed
   over the padded width ("wide" columns w = oh * WP + ow, those with ow >= OW dropped on store), so B row k of any
   column block is the contiguous run src + off[k] + w. */
typedef struct dconv_s {
  int M, K, OH, OW, WP;
  const float *ap;                 /* A prepacked in [M/MR][K][MR] panels */
  const int *off;                  /* [K]: offset of tap k (channel, row, column) in the padded image */
  const float *src; size_t sbs;    /* padded images, sbs floats apart */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
  float *c; size_t cbs;            /* output [M][OH * OW] per image, cbs floats apart */
  int batch;
} dconv_t;
/* Convolution with the roles of GEMM swapped ("transposed"): output positions are the tile rows (MR of them, read as
   scalar broadcasts straight from the (padded) image at tap offsets, so no im2col) and output channels the tile
   columns (NR = NV vectors, weights packed at build time in [Co/NR][K][NR] panels). Small spatial outputs (7x7,
   14x14) fill whole tiles this way where the usual orientation pads 49 columns to 64; K goes in blocks so one
   weight slice stays in L1 across a block of tiles. Tiles are transposed into the [Co][OH*OW] output. A grouped
   convolution runs as images of one group each (image i = image i / groups, group i % groups: the groups' input and
   output channels are contiguous slices), group g's weights gbs floats after group 0's. */
typedef struct tconv_s {
  int M, K, OH, OW, rs, s;         /* M output channels; rs floats between the sources of consecutive output rows; column stride s */
  const float *bp;                 /* weights packed [M/NR][K][NR] */
  const int *off;                  /* [K]: offset of tap k in the source image */
  const float *src; size_t sbs;    /* source images, sbs floats apart */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
  float *c; size_t cbs;
  int batch;
  int accumulate;                  /* as in gemm_t */
  int groups; size_t gbs;          /* 0 or 1 group, else weights per group gbs floats apart */
  /* Edges (tap non-NULL): src is the unpadded image (H x W planes, off relative to it, rs = s0 * W); tiles whose taps
     all land inside it read in place, the rest are computed position by position with bounds checks (tap: per k its
     plane offset, row and column offset), so the zero-padded copy is not made. offlo / offhi: the lowest and highest
     tap offsets, to tell which tiles read only inside the image's memory. */
  const int *tap;
  int H, W, s0, pt, pl, khs, kws;
  long offlo, offhi;
} tconv_t;
float *kiln_pad_images(const float *x, int B, int C, int H, int W, int HP, int WP, int pt, int pl, int slack, size_t *per);

void kiln_pack_a(const float *a, int rs, int cs, int M, int K, int MR, float *out);
void kiln_pack_b(const float *b, int rs, int cs, int K, int N, int NR, float *out);
void kiln_softmax_rows(const float *x, float *y, int rows, int cols);
void kiln_layernorm_rows(const float *x, const float *g, const float *b, float *y, int rows, int cols, float eps);
void kiln_pool2d(const float *x, float *y, int planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
  int dh, int dw, int ph, int pw, int is_max, int count_pad);
void kiln_global_pool(const float *x, float *y, int planes, int hw, int is_max);
typedef void (*plane_epi)(const void *ctx, float *plane, int n, int oc);
void kiln_depthwise(const float *x, const float *w, const float *bias, float *y, int N, int C, int H, int W, int OH, int OW,
  int kh, int kw, int sh, int sw, int dh, int dw, int ph, int pw, int mult, plane_epi epi, const void *ctx);

/* e^x for x clamped to [-87.3, 88.3] (saturating outside it; NaN stays NaN) */
static inline float kexp_sat(float x) {
  float c = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  /* round to nearest by the 1.5 * 2^23 trick: unlike floorf it vectorizes without -fno-trapping-math */
  float n = (c * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = c - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f; p = p * r + 8.3334519073e-3f; p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f; p = p * r + 5.0000001201e-1f;
  float e = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float s; memcpy(&s, &bits, 4);
  return e * s;
}
static inline float kexp(float x) {
  float y = kexp_sat(x);
  return x != x ? x : x < -87.3f ? 0.0f : x > 88.3f ? INFINITY : y;
}
/* the saturated exponential is exact enough here (1 / (1 + e^88.3) is 0 to float precision but for its tiny
   remainder), and without kexp's three selects EfficientNet's SiLU epilogues run a third faster (tanh and erf clamp or
   square their argument first: likewise) */
static inline float ksigmoid(float x) { return 1.0f / (1.0f + kexp_sat(-x)); }
static inline float ktanh(float x) {
  float c = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
  float t = 1.0f - 2.0f / (kexp_sat(2.0f * c) + 1.0f);
  /* near 0 the formula above cancels; the series keeps the relative error small */
  float x2 = x * x, s = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
  return x != x ? x : (x2 < 0.01f ? s : t);
}
/* erf as x P(x^2) / Q(x^2) on x clipped to +-3.92 (erf is 1 there to float precision): our own rational fit (least
   squares reweighted toward minimax), within 4e-7 of erf in float arithmetic. No exponential and no sign selects: the
   GELU epilogues of ConvNeXt's expansions ran at half this speed with the exp-based form. */
static inline float kerf(float x) {
  float c = x < -3.92f ? -3.92f : (x > 3.92f ? 3.92f : x), s = c * c;
  float p = 2.03475383e-06f;
  p = p * s + 2.87480216e-04f; p = p * s + 3.86830373e-03f; p = p * s + 5.30603938e-02f; p = p * s + 1.92763254e-01f;
  p = p * s + 1.12837899f;
  float q = 3.80708916e-05f;
  q = q * s + 1.18811242e-03f; q = q * s + 1.51722413e-02f; q = q * s + 1.15084305e-01f; q = q * s + 5.04163682e-01f;
  q = q * s + 1.0f;
  return c * p / q;
}
static inline float kmaxf(float a, float b) { return a != a || b != b ? NAN : a > b ? a : b; }
/* the same NaN-propagating max in a form GCC vectorizes (kmaxf's NAN constant keeps its loops scalar): a NaN in a
   stays, a NaN in b is taken */
static inline float kmaxv(float a, float b) { return b > a || b != b ? b : a; }
static inline float kminf(float a, float b) { return a != a || b != b ? NAN : a < b ? a : b; }
static inline float kclip(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }
static inline float ksoftplus(float x) { return x > 20.0f ? x : log1pf(kexp(x)); }
static inline float kmish(float x) { return x * ktanh(ksoftplus(x)); }
/* SiLU. With GCC on AVX-512 a SIMD function: vectorized loops (the epilogues) call the runtime's 16-, 8- and 4-lane
   versions (by the x86-64 vector ABI's names), which scale by 2^n with vscalefps. GCC vectorizes x * ksigmoid(x) into
   three masked paths for ksigmoid's clamp (about twice the instructions): 0.25 vs 0.17 ns an element, one core. */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#define KILN_VSILU 1
float ksilu(float x) __attribute__((simd("notinbranch"), const, nothrow));
#else
static inline float ksilu(float x) { return x * ksigmoid(x); }
#endif
`;

/** Thread pool, scratch memory, packing and the row kernels: compiled once per library. */
export const RUNTIME_C = String.raw`
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <float.h>
#ifdef KILN_VSILU
#include <immintrin.h>
/* x / (1 + e^-x): e^-x = 2^n e^r as in kexp_sat (its clamp, reduction and polynomial), 2^n by vscalefps */
static inline __m512 ksilu16(__m512 x) {
  __m512 c = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), x), _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), c);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 e = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_scalef_ps(e, n), _mm512_set1_ps(1.0f)));
}
/* the vector variants GCC calls and the scalar function for loop tails, all defined under assembler names: GCC then
   makes no clones of its own, and where one unit holds everything (the bench programs) it still sees only the SIMD
   declaration of ksilu (an alias or a definition of it there would be inlined, scalar, into every loop) */
__m512 ksilu_e16(__m512 x) __asm__("_ZGVeN16v_ksilu");
__m512 ksilu_e16(__m512 x) { return ksilu16(x); }
__m256 ksilu_d8(__m256 x) __asm__("_ZGVdN8v_ksilu");
__m256 ksilu_d8(__m256 x) { return _mm512_castps512_ps256(ksilu16(_mm512_zextps256_ps512(x))); }
__m256 ksilu_c8(__m256 x) __asm__("_ZGVcN8v_ksilu");
__m256 ksilu_c8(__m256 x) { return _mm512_castps512_ps256(ksilu16(_mm512_zextps256_ps512(x))); }
__m128 ksilu_b4(__m128 x) __asm__("_ZGVbN4v_ksilu");
__m128 ksilu_b4(__m128 x) { return _mm512_castps512_ps128(ksilu16(_mm512_zextps128_ps512(x))); }
float ksilu_1(float x) __asm__("ksilu");
float ksilu_1(float x) { return _mm512_cvtss_f32(ksilu16(_mm512_set1_ps(x))); }
#endif

/* The pool: a job is split into one contiguous block of tasks per thread, each block in its own word (generation,
   next task, end), so a thread can only claim tasks of the job it saw published. A thread works through its own block
   first and then takes what is left of the others' (in chunks that shrink with what is left: a layer of a thousand
   one-channel tasks costs a few dozen claims, not a thousand). The same thread thus takes the same part of every layer
   (the same channels, when tasks go by channel), so what a layer reads is mostly what the same core wrote a layer
   before, in its own L2; dynamic claiming from one shared word handed those parts to whichever thread came first
   (MobileNetV2's 14 x 14 expand -> depthwise pairs scaled 1.4-1.5x at 2 threads). Waiting is bounded
   spinning, then a futex sleep: idle workers sleep on the published generation, and a caller whose helpers were
   descheduled sleeps on the done count, so a pool burns no CPU between runs, nor for long when the machine is
   shared (a server with more busy threads than cores). Each side announces its sleep before re-checking, and the
   other side checks for sleepers after publishing (both sequentially consistent), so no wake-up is lost. */
#include <limits.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define MAXT 64
/* spin this long before sleeping: about 50 us, longer than the gap between the layers of a chain */
#define SPIN_NS 50000
static struct {
  int started, limit;
  pthread_mutex_t run;
  int blocks, ntasks;
  _Atomic uint32_t gen;            /* futex word: generation of the latest job (workers sleep on it) */
  _Atomic int done;                /* futex word: tasks finished (a caller sleeps on it) */
  _Atomic int sleepers, caller_sleeps;
  task_fn fn; void *arg;
} P = { 0, 1, PTHREAD_MUTEX_INITIALIZER };
/* per thread block: generation (24 bits) | next task (20) | end (20), one cache line each */
static struct { _Atomic uint64_t w; char pad[56]; } B[MAXT] __attribute__((aligned(64)));

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
static inline uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}
#if defined(__linux__)
static inline void futex_wait(_Atomic uint32_t *w, uint32_t v) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0); }
static inline void futex_wake(_Atomic uint32_t *w, int n) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0); }
#else
/* elsewhere one condition variable stands in for both futex words: wakers broadcast, sleepers re-check their word */
static pthread_mutex_t fx_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fx_cv = PTHREAD_COND_INITIALIZER;
static void futex_wait(_Atomic uint32_t *w, uint32_t v) {
  pthread_mutex_lock(&fx_mu);
  while (atomic_load(w) == v) pthread_cond_wait(&fx_cv, &fx_mu);
  pthread_mutex_unlock(&fx_mu);
}
static void futex_wake(_Atomic uint32_t *w, int n) {
  (void)w; (void)n;
  pthread_mutex_lock(&fx_mu);
  pthread_cond_broadcast(&fx_cv);
  pthread_mutex_unlock(&fx_mu);
}
#endif

/* Tracing (a profiler's view of a run as it really runs, chains and replays included): while a buffer is set, every
   record run appends its function's address and the monotonic clock after it (ns), two words, until the buffer is
   full; a pass that ends the run appends {0, clock} before its first record. One predictable branch per layer. */
static int64_t *trace_buf;
static _Atomic int trace_n;
static int trace_cap;
KEXPORT int kiln_trace(int64_t *buf, int cap) {
  int n = atomic_load(&trace_n);
  trace_buf = buf; trace_cap = buf ? cap : 0; atomic_store(&trace_n, 0);
  return n;
}
static inline void trace(int64_t fn) {
  int i = atomic_fetch_add(&trace_n, 2);
  if (i + 2 <= trace_cap) { trace_buf[i] = fn; trace_buf[i + 1] = (int64_t)now_ns(); }
}
/* Set when a replayed run has ended (kiln_run_replay), cleared by the next job: no job follows soon, so waiting
   workers stop spinning and sleep at once, leaving the cores to the caller's JavaScript around the run. */
static _Atomic int pool_rest;

/* Spins until *w differs from v (returns 1), or the pool rests, or no job has been in flight for SPIN_NS, or it has
   spun SPIN_BUSY_NS in all (returns 0). While a job is in flight (a thread still on its last tasks) its end, and the
   next job, are near: a worker done first with a layer of a few long tasks (ResNet-50's 7 x 7 layers, 0.1-0.2 ms a
   task) slept there twice a run and was woken late for the next layer; the cap bounds a wait on a thread the
   machine has descheduled. */
#define SPIN_BUSY_NS 2000000
static int spin_while(_Atomic uint32_t *w, uint32_t v) {
  uint64_t start = 0, idle = 0;
  for (int i = 0;; i++) {
    if (atomic_load_explicit(w, memory_order_acquire) != v) return 1;
    cpu_relax();
    if ((i & 63) == 63) {
      if (atomic_load_explicit(&pool_rest, memory_order_relaxed)) return 0;
      uint64_t t = now_ns();
      if (!start) start = t;
      if (t - start > SPIN_BUSY_NS) return 0;
      if (atomic_load_explicit(&P.done, memory_order_relaxed) < __atomic_load_n(&P.ntasks, __ATOMIC_RELAXED)) idle = 0;
      else if (!idle) idle = t;
      else if (t - idle > SPIN_NS) return 0;
    }
  }
}

/* Thread me (the caller is 0) runs its own block's tasks, then the rest of the others'. */
static void claim_all(uint32_t gen, int me) {
  int nb = P.blocks;
  for (int v = 0; v < nb; v++) {
    _Atomic uint64_t *b = &B[(me + v) % nb].w;
    for (;;) {
      uint64_t w = atomic_load(b);
      uint32_t t = (w >> 20) & 0xFFFFF, e = w & 0xFFFFF;
      if ((uint32_t)(w >> 40) != gen || t >= e) break;
      uint32_t k = (e - t) / 4;
      k = k < 1 ? 1 : k;
      if (atomic_compare_exchange_weak(b, &w, w + ((uint64_t)k << 20))) {
        for (uint32_t i = t; i < t + k; i++) P.fn(P.arg, (int)i);
        if (atomic_fetch_add(&P.done, (int)k) + (int)k == P.ntasks && atomic_load(&P.caller_sleeps)) futex_wake((_Atomic uint32_t *)&P.done, 1);
      }
    }
  }
}

static void *worker(void *idp) {
  int id = (int)(intptr_t)idp;
  uint32_t seen = atomic_load(&P.gen);
  for (;;) {
    /* a worker the current thread count leaves out goes straight to sleep */
    if (id >= P.limit - 1 || !spin_while(&P.gen, seen)) {
      if (trace_buf) trace(-9);
      atomic_fetch_add(&P.sleepers, 1);
      while (atomic_load(&P.gen) == seen) futex_wait(&P.gen, seen);
      atomic_fetch_sub(&P.sleepers, 1);
    }
    seen = atomic_load(&P.gen);
    if (id < P.limit - 1) claim_all(seen, id + 1);
  }
  return NULL;
}

KEXPORT void kiln_set_threads(int n) {
  n = n < 1 ? 1 : n > MAXT ? MAXT : n;
  /* changing the count alone never waits for a running job (callers on the event loop thread set it) */
  if (P.started >= n - 1) { P.limit = n; return; }
  pthread_mutex_lock(&P.run);
  for (; P.started < n - 1; P.started++) {
    pthread_t th;
    pthread_create(&th, NULL, worker, (void *)(intptr_t)P.started);
    pthread_detach(th);
  }
  P.limit = n;
  pthread_mutex_unlock(&P.run);
}

int kiln_threads(void) { return P.limit; }

void kiln_pool_run(task_fn fn, void *arg, int ntasks) {
  if (P.limit <= 1 || ntasks <= 1) { for (int t = 0; t < ntasks; t++) fn(arg, t); return; }
  pthread_mutex_lock(&P.run);
  if (atomic_load_explicit(&pool_rest, memory_order_relaxed)) atomic_store(&pool_rest, 0);
  P.fn = fn; P.arg = arg;
  atomic_store(&P.done, 0);
  atomic_store(&P.caller_sleeps, 0);
  uint32_t gen = (atomic_load(&P.gen) + 1) & 0xFFFFFF;
  int nb = P.limit < ntasks ? P.limit : ntasks;
  P.blocks = nb; P.ntasks = ntasks;
  for (int i = 0; i < nb; i++) atomic_store(&B[i].w, ((uint64_t)gen << 40) | ((uint64_t)(i * ntasks / nb) << 20) | (uint64_t)((i + 1) * ntasks / nb));
  atomic_store(&P.gen, gen);
  if (atomic_load(&P.sleepers)) futex_wake(&P.gen, INT_MAX);
  claim_all(gen, 0);
  /* the tasks other threads claimed: spin a while, then sleep until the last one finishes */
  _Atomic uint32_t *done = (_Atomic uint32_t *)&P.done;
  for (uint32_t d; (int)(d = atomic_load(done)) < ntasks;) {
    if (spin_while(done, d)) continue;
    atomic_store(&P.caller_sleeps, 1);
    if (trace_buf) trace(-8);
    d = atomic_load(done);
    if ((int)d < ntasks) futex_wait(done, d);
  }
  pthread_mutex_unlock(&P.run);
}

/* Splitting a job for the pool. An image's work is n1 x n2 units of about equal cost (weight panels x output tiles,
   row panels x column panels), cut into chunks of c1 x c2 units, one task each; tasks go dimension 1 fastest, then
   dimension 2, then image. Taking min(n1, 4 x threads) parts of one dimension and filling up with the other left
   ragged splits: 20 panels in parts of 3 are 7 tasks, blocks of 9 and 11 panels at two threads; 14 tiles in parts of
   4 are 4 + 4 | 4 + 2. The last task's thread then finished alone (MobileNetV2's 7 x 7 expansions and 14 x 14
   projections scaled 1.6x at two threads). Here every split of up to 4 tasks per thread is run through a model of
   the pool (per-thread blocks, claims of a quarter of what is left, the thread that is free first claims next)
   counting units, and the one that finishes first wins; ties go to more tasks, then to more cuts of the dimension
   the caller prefers. Choices are kept per shape. */
static int split_makespan(int n1, int n2, int c1, int c2, int batch, int nth) {
  int j1 = (n1 + c1 - 1) / c1, j2 = (n2 + c2 - 1) / c2, per = j1 * j2, T = per * batch;
  int nb = nth < T ? nth : T, pos[MAXT], end[MAXT], busy[MAXT], done[MAXT];
  for (int b = 0; b < nb; b++) { pos[b] = b * T / nb; end[b] = (b + 1) * T / nb; }
  for (int i = 0; i < nth; i++) { busy[i] = 0; done[i] = 0; }
  for (;;) {
    int me = -1;
    for (int i = 0; i < nth; i++) if (!done[i] && (me < 0 || busy[i] < busy[me])) me = i;
    if (me < 0) break;
    int b = -1;
    for (int v = 0; v < nb && b < 0; v++) if (pos[(me + v) % nb] < end[(me + v) % nb]) b = (me + v) % nb;
    if (b < 0) { done[me] = 1; continue; }
    int k = (end[b] - pos[b]) / 4;
    k = k < 1 ? 1 : k;
    for (int t = pos[b]; t < pos[b] + k; t++) {
      int u = t % per, i1 = u % j1, i2 = u / j1;
      busy[me] += KMIN(c1, n1 - i1 * c1) * KMIN(c2, n2 - i2 * c2);
    }
    pos[b] += k;
  }
  int m = 0;
  for (int i = 0; i < nth; i++) m = KMAX(m, busy[i]);
  return m;
}
static struct { _Atomic uint64_t key, val; } split_memo[256];
void kiln_split2n(int n1, int n2, int batch, int prefer2, int per, int *c1, int *c2) {
  int nth = kiln_threads();
  n1 = KMAX(n1, 1); n2 = KMAX(n2, 1); batch = KMAX(batch, 1); per = KMIN(KMAX(per, 4), 63);
  if (nth <= 1) { *c1 = n1; *c2 = n2; return; }
  /* images are tasks of their own; each image is split only as far as the threads still need: up to \`per\` tasks a
     thread by the preferred dimension, 4 where the other one is cut too */
  int want = (per * nth + batch - 1) / batch, base = (4 * nth + batch - 1) / batch;
  int memo = n1 < 65536 && n2 < 65536 && batch < 65536 && nth <= MAXT;
  uint64_t key = (uint64_t)n1 | (uint64_t)n2 << 16 | (uint64_t)batch << 32 | (uint64_t)nth << 48 | (uint64_t)!!prefer2 << 56 | (uint64_t)per << 57 | 1ull << 63;
  unsigned slot = (unsigned)((key * 0x9E3779B97F4A7C15ull) >> 56);
  if (memo && atomic_load_explicit(&split_memo[slot].key, memory_order_acquire) == key) {
    uint64_t v = atomic_load_explicit(&split_memo[slot].val, memory_order_acquire);
    int a = (int)(v & 0xFFFF), b = (int)(v >> 16 & 0xFFFF);
    /* a torn pair (another thread storing another shape here) fails the key echo and is recomputed */
    if ((uint32_t)(v >> 32) == (uint32_t)(key ^ key >> 32) && a >= 1 && a <= n1 && b >= 1 && b <= n2) { *c1 = a; *c2 = b; return; }
  }
  /* the other dimension is cut only as far as the preferred one leaves the job short of tasks: each cut of it reads
     the preferred one's data again (a pointwise layer cut by output channels reads its input once per cut: +12 % at
     56 x 56 on MobileNetV2; a transposed convolution cut by positions streams every weight panel per cut) */
  int lim1 = prefer2 ? KMAX(1, (base + n2 - 1) / n2) : want, lim2 = prefer2 ? want : KMAX(1, (base + n1 - 1) / n1);
  /* candidates within 4 % of the quickest count as ties, and of those the one with the most tasks wins (as many as
     the old rule made where that balances): a thread that starts late (woken from its sleep) or runs slow (a shared
     core) can then hand work over */
  struct { int m, a, b, dt, j; } c[64];
  int nc = 0, best = -1;
  for (int t1 = 1; t1 <= KMIN(n1, lim1); t1++) {
    int a = (n1 + t1 - 1) / t1, j1 = (n1 + a - 1) / a;
    if (j1 != t1) continue; /* the same chunks as a smaller count */
    for (int t2 = 1; j1 * t2 <= want && t2 <= KMIN(n2, lim2) && nc < 64; t2++) {
      int b = (n2 + t2 - 1) / t2, j2 = (n2 + b - 1) / b;
      if (j2 != t2) continue;
      int m = split_makespan(n1, n2, a, b, batch, nth);
      c[nc].m = m; c[nc].a = a; c[nc].b = b; c[nc].dt = (want - j1 * j2) * batch; c[nc].j = prefer2 ? j2 : j1;
      nc++;
      if (best < 0 || m < best) best = m;
    }
  }
  int b1 = n1, b2 = n2, k = -1;
  for (int i = 0; i < nc; i++) {
    if (c[i].m * 25 > best * 26) continue;
    if (k < 0 || c[i].dt < c[k].dt || (c[i].dt == c[k].dt && (c[i].m < c[k].m || (c[i].m == c[k].m && c[i].j > c[k].j)))) k = i;
  }
  if (k >= 0) { b1 = c[k].a; b2 = c[k].b; }
  *c1 = b1; *c2 = b2;
  if (memo) {
    atomic_store_explicit(&split_memo[slot].key, 0, memory_order_release);
    atomic_store_explicit(&split_memo[slot].val, (uint64_t)b1 | (uint64_t)b2 << 16 | (uint64_t)(uint32_t)(key ^ key >> 32) << 32, memory_order_release);
    atomic_store_explicit(&split_memo[slot].key, key, memory_order_release);
  }
}

void kiln_split2(int n1, int n2, int batch, int prefer2, int *c1, int *c2) { kiln_split2n(n1, n2, batch, prefer2, 4, c1, c2); }

/* A chain of layer calls in one foreign call (one thread handoff for many layers): n records of 10 words each,
   the layer function's address, its eight pointer arguments and the batch. */
typedef void (*layer_fn)(void *, void *, void *, void *, void *, void *, void *, void *, int);
KEXPORT void kiln_run_chain(const int64_t *prog, int n) {
  int traced = trace_buf != NULL;
  if (traced) trace(0);
  for (int i = 0; i < n; i++) {
    const int64_t *r = prog + (size_t)i * 10;
    ((layer_fn)(intptr_t)r[0])((void *)(intptr_t)r[1], (void *)(intptr_t)r[2], (void *)(intptr_t)r[3], (void *)(intptr_t)r[4],
      (void *)(intptr_t)r[5], (void *)(intptr_t)r[6], (void *)(intptr_t)r[7], (void *)(intptr_t)r[8], (int)r[9]);
    if (traced) trace(r[0]);
  }
}

/* A layer that meets bad run-time data (a Gather index out of range) cannot throw: it records its layer's number
   here and goes on; the runner takes it after the foreign call and raises the error for that layer. */
static _Atomic int64_t kiln_err = 0;
void kiln_set_error(int64_t code) { int64_t z = 0; atomic_compare_exchange_strong(&kiln_err, &z, code); }
KEXPORT int64_t kiln_take_error(void) { return atomic_exchange(&kiln_err, 0); }

/* A replayed run (see replay.ts) as exactly one foreign call: the thread count, the chain, and the error word it
   left. Through koffi each of the three calls costs the main thread 5-15 us on caches a run has just flushed. */
KEXPORT int64_t kiln_run_replay(const int64_t *prog, int n, int threads) {
  static int rest = -1;
  if (rest < 0) { const char *e = getenv("KILN_POOL_REST"); rest = !(e && e[0] == '0'); }
  kiln_set_threads(threads);
  kiln_run_chain(prog, n);
  if (rest) atomic_store(&pool_rest, 1);
  return kiln_take_error();
}

/* One output of a Split inside a chain: rows of a strided source copied to a contiguous output. p holds int64
   {rows, run, source stride, source offset}, in floats; rows are spread over the pool when there is enough to copy. */
typedef struct { const float *s; float *d; int64_t rows, run, stride, per; } copy_rows_t;
static void copy_rows_task(void *arg, int t) {
  const copy_rows_t *c = arg;
  int64_t r1 = KMIN(c->rows, (t + 1) * c->per);
  for (int64_t r = t * c->per; r < r1; r++) memcpy(c->d + r * c->run, c->s + r * c->stride, (size_t)c->run * sizeof(float));
}
KEXPORT void kiln_copy_rows(void *src, void *dst, void *p, void *a3, void *a4, void *a5, void *a6, void *a7, int nb) {
  (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)nb;
  const int64_t *q = p;
  int64_t rows = q[0], run = q[1];
  int tasks = rows * run < (1 << 16) ? 1 : (int)KMIN((int64_t)kiln_threads(), rows);
  copy_rows_t c = { (const float *)src + q[3], dst, rows, run, q[2], (rows + tasks - 1) / (tasks ? tasks : 1) };
  if (tasks <= 1) copy_rows_task(&c, 0);
  else kiln_pool_run(copy_rows_task, &c, tasks);
}

float *kiln_alloc(size_t floats) {
  size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  float *p = aligned_alloc(64, bytes ? bytes : 64);
  if (p) memset(p, 0, bytes);
  return p;
}
KEXPORT void kiln_free(void *p) { free(p); }
/* The bytes a kiln_alloc block holds (at least what was asked), for evicting packed weights (kiln_time_cold); 0 where
   the C library cannot tell. */
#if defined(__GLIBC__)
#include <malloc.h>
KEXPORT int64_t kiln_alloc_bytes(void *p) { return p ? (int64_t)malloc_usable_size(p) : 0; }
#else
KEXPORT int64_t kiln_alloc_bytes(void *p) { (void)p; return 0; }
#endif

/* Writes back and evicts [p, p + bytes) from every cache level. */
static void kiln_evict(const void *p, size_t bytes) {
  const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63), *e = (const char *)p + bytes;
#if defined(__x86_64__) || defined(__i386__)
  for (; c < e; c += 64) __builtin_ia32_clflush(c);
  __builtin_ia32_mfence();
#elif defined(__aarch64__)
  for (; c < e; c += 64) __asm__ volatile("dc civac, %0" : : "r"(c) : "memory");
  __asm__ volatile("dsb ish" : : : "memory");
#else
  (void)c; (void)e;
#endif
}

/* The builder's timing of one layer (a chain of one record, see kiln_run_chain) as it meets its weights in a whole
   model's run: not in any cache, since the model's other layers ran in between (a ResNet's weights are tens of MB;
   timed hot, a variant whose weights are 4x larger, such as Winograd's, wins alone and loses in the model). Per rep,
   the listed ranges ({address, bytes} pairs) are evicted, then the call is timed by the calling thread's CPU clock
   (the builder times at one thread, where the pool runs inline). Writes the reps' times (ns) to out. */
KEXPORT void kiln_time_cold(const int64_t *prog, const int64_t *ranges, int nranges, int reps, double *out) {
  for (int r = 0; r < reps; r++) {
    for (int i = 0; i < nranges; i++) kiln_evict((const void *)(intptr_t)ranges[2 * i], (size_t)ranges[2 * i + 1]);
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    kiln_run_chain(prog, 1);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    out[r] = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
  }
}

static __thread float *scratch[4];
static __thread size_t scratch_cap[4];
float *kiln_scratch(int slot, size_t floats) {
  if (floats > scratch_cap[slot]) {
    free(scratch[slot]);
    scratch[slot] = kiln_alloc(floats);
    scratch_cap[slot] = floats;
  }
  return scratch[slot];
}

/* Zero-padded copies of B images [C][H][W] into [C][HP][WP] planes (top/left pads pt/pl), each image followed by
   'slack' zeros, in the calling thread's scratch slot 2. *per gets the floats per image. A few planes per task over
   the pool: the copy is memory-bound and, run serially, leaves the other cores idle before every padded convolution. */
typedef struct { const float *x; float *out; int B, C, H, W, HP, WP, pt, pl, slack, per; size_t img; } pad_job;
static void pad_task(void *p, int t) {
  const pad_job *j = p;
  int HP = j->HP, WP = j->WP, H = j->H, W = j->W, pt = j->pt, pl = j->pl, C = j->C;
  size_t plane = (size_t)HP * WP;
  for (int i = t * j->per; i < KMIN(j->B * C, (t + 1) * j->per); i++) {
    int b = i / C, c = i % C;
    const float *xc = j->x + (size_t)i * H * W;
    float *o = j->out + (size_t)b * j->img, *oc = o + (size_t)c * plane;
    memset(oc, 0, (size_t)pt * WP * sizeof(float));
    for (int h = 0; h < H; h++) {
      float *row = oc + (size_t)(h + pt) * WP;
      memset(row, 0, pl * sizeof(float));
      memcpy(row + pl, xc + (size_t)h * W, W * sizeof(float));
      memset(row + pl + W, 0, (WP - pl - W) * sizeof(float));
    }
    memset(oc + (size_t)(pt + H) * WP, 0, (size_t)(HP - pt - H) * WP * sizeof(float));
    if (c == C - 1) memset(o + (size_t)C * plane, 0, j->slack * sizeof(float));
  }
}
float *kiln_pad_images(const float *x, int B, int C, int H, int W, int HP, int WP, int pt, int pl, int slack, size_t *per) {
  size_t plane = (size_t)HP * WP, img = (size_t)C * plane + slack;
  float *out = kiln_scratch(2, (size_t)B * img);
  *per = img;
  int planes = B * C;
  /* below 8K floats a handoff to the other threads (spinning between a run's layers: about 1.5 us) costs more than
     the copy; up to 64K floats ResNet-50's 7 x 7 layers copied alone for long enough that the other thread went to
     sleep twice a run (and woke late, 10-80 us on a VM, for the next layer) */
  int tasks = (size_t)planes * plane < (1 << 13) ? 1 : KMIN(planes, 4 * kiln_threads());
  pad_job j = { x, out, B, C, H, W, HP, WP, pt, pl, slack, (planes + (tasks ? tasks : 1) - 1) / (tasks ? tasks : 1), img };
  if (tasks <= 1) { if (planes) { j.per = planes; pad_task(&j, 0); } }
  else kiln_pool_run(pad_task, &j, tasks);
  return out;
}

/* [M][K] (element (i,k) at a[i*rs + k*cs]) -> panels [M/MR][K][MR], zero padded. */
void kiln_pack_a(const float *a, int rs, int cs, int M, int K, int MR, float *out) {
  for (int i0 = 0; i0 < M; i0 += MR, out += (size_t)K * MR) {
    int mi = KMIN(MR, M - i0);
    for (int k = 0; k < K; k++) {
      for (int r = 0; r < mi; r++) out[k * MR + r] = a[(size_t)(i0 + r) * rs + (size_t)k * cs];
      for (int r = mi; r < MR; r++) out[k * MR + r] = 0;
    }
  }
}
/* [K][N] (element (k,j) at b[k*rs + j*cs]) -> panels [N/NR][K][NR], zero padded. */
void kiln_pack_b(const float *b, int rs, int cs, int K, int N, int NR, float *out) {
  for (int j0 = 0; j0 < N; j0 += NR, out += (size_t)K * NR) {
    int nj = KMIN(NR, N - j0);
    for (int k = 0; k < K; k++) {
      for (int j = 0; j < nj; j++) out[k * NR + j] = b[(size_t)k * rs + (size_t)(j0 + j) * cs];
      for (int j = nj; j < NR; j++) out[k * NR + j] = 0;
    }
  }
}
${ROWS_C}`;
