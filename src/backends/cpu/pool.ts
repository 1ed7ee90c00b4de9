// Max/AveragePool, the global pools and ReduceMean/ReduceMax over trailing axes on the CPU: 2-D windows with few taps
// get a kernel with the shapes baked in (rows combined first, only border rows and columns clip their window); larger
// windows use the runtime's generic loop.
import { cFloat } from './expr-c.js';
import { attrOf, exported, prod, MIN_ELEMENTS, type Ctx, type Gen, type GenResult } from './codegen.js';
import { windowPads } from './conv.js';

/** kh + kw taps get unrolled into the baked pool's two passes; larger windows keep the generic loop */
const MAX_POOL_TAPS = 32;
export const pool = (isMax: boolean): Gen => (c, n, ins, out) => {
  const [x] = ins;
  if (!x || x.length !== 4 || prod(out) < MIN_ELEMENTS) return undefined;
  const [, , H, W] = x, [N, C, OH, OW] = out;
  const [kh, kw] = attrOf<number[]>(n, 'kernel_shape', []);
  if (kh === undefined || kw === undefined || attrOf(n, 'storage_order', 0)) return undefined;
  const s = attrOf(n, 'strides', [1, 1]), d = attrOf(n, 'dilations', [1, 1]);
  const p = windowPads(n, x, out, [kh, kw], s, d);
  const countPad = attrOf(n, 'count_include_pad', 0);
  if (!isMax && countPad && (attrOf(n, 'ceil_mode', 0) || attrOf(n, 'auto_pad', 'NOTSET') !== 'NOTSET')) return undefined;
  const fn = `L${c.id}_pool`;
  if (isMax && c.isa === 'avx512' && s[1] === 2 && d[1] === 1 && (kw === 2 || kw === 3) && kh <= MAX_POOL_TAPS) {
    return maxPoolS2(c, fn, [N, C, H, W, OH, OW, kh, kw], s[0], d[0], p);
  }
  // one input row lives on the baked pool's stack: very wide rows keep the generic loop too
  if (kh + kw <= MAX_POOL_TAPS && W <= 8192) return windowPool(c, fn, isMax, countPad, [N, C, H, W, OH, OW, kh, kw], s, d, p);
  return { variants: [{ tactic: `native-${c.isa}-pool`, fn }], args: [{ in: 0 }, { out: true }],
    batched: !!c.batch?.[0], work: prod(out) * kh * kw,
    source: exported(fn, `  kiln_pool2d(a0, a1, ${c.batch?.[0] ? 'nb' : N} * ${C}, ${H}, ${W}, ${OH}, ${OW}, ${kh}, ${kw}, ${s[0]}, ${s[1]}, ${d[0]}, ${d[1]}, ${p[0]}, ${p[1]}, ${isMax ? 1 : 0}, ${countPad});`) };
};

/** Baked window pooling, separable: per output row, the window's input rows are combined column by column into one
 * row (contiguous, vectorizes), then each output column combines kw entries of it. Output columns whose window lies
 * inside the image run one loop with the taps unrolled; only the border columns (padding, ceil_mode overhang) clip
 * tap by tap, and rows clip by leaving padded input rows out. A few planes per task. */
function windowPool(c: Ctx, fn: string, isMax: boolean, countPad: number, g: number[], s: number[], d: number[], p: number[]): GenResult {
  const [N, C, H, W, OH, OW, kh, kw] = g;
  const id = c.id;
  // output columns whose window lies inside the image: ow * s - p >= 0 and ow * s - p + (kw - 1) * d <= W - 1
  const ow0 = Math.min(OW, Math.ceil(p[1] / s[1]));
  const last = W - 1 - (kw - 1) * d[1] + p[1];
  const ow1 = last < 0 ? ow0 : Math.max(ow0, Math.min(OW, Math.floor(last / s[1]) + 1));
  const op = (a: string, b: string) => (isMax ? `kmaxv(${a}, ${b})` : `${a} + ${b}`);
  let vert = `xr[w]`, horiz = `r[ow * ${s[1]} + ${-p[1]}]`;
  for (let a = 1; a < kh; a++) vert = op(vert, `xr[${a * d[0] * W} + w]`);
  for (let b = 1; b < kw; b++) horiz = op(horiz, `r[ow * ${s[1]} + ${b * d[1] - p[1]}]`);
  // average divisor: the whole window with count_include_pad (floor mode only, so it never overhangs the padded input)
  const div = (cols: string) => (countPad ? cFloat(kh * kw) : `(nr * ${cols})`);
  const planes = `${c.batch?.[0] ? 'nb' : N} * ${C}`;
  // the two full-window passes live in functions of their own: inlined into the loop nest below, GCC leaves them scalar
  const hv = isMax ? horiz : `(${horiz}) / ${div(String(kw))}`;
  // the horizontal pass runs a whole number of vectors into a scratch row (then copied out), reading past the row's
  // end into \`r\`'s zeroed tail: GCC's scalar tail loop of a max is a data-dependent branch per element
  const np = ow1 - ow0 >= 8 ? Math.ceil((ow1 - ow0) / 16) * 16 : 0;
  const rw = Math.max(W, np ? (ow0 + np - 1) * s[1] + (kw - 1) * d[1] - p[1] + 1 : 0);
  const src = `static __attribute__((noinline)) void pv${id}(const float *restrict xr, float *restrict r) {
${blocked('w', 0, W, `r[w] = ${vert};`)}
}
static __attribute__((noinline)) void ph${id}(const float *restrict r, float *restrict yr, float nr) {
  (void)nr;${np ? `
  float tt[${np}] __attribute__((aligned(64)));
  for (int q = 0; q < ${np}; q++) { const int ow = q + ${ow0}; tt[q] = ${hv}; }
  memcpy(yr + ${ow0}, tt, ${(ow1 - ow0) * 4});` : `
  for (int ow = ${ow0}; ow < ${ow1}; ow++) yr[ow] = ${hv};`}
}
static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  int planes = (int)(intptr_t)q[2], per = (planes + (int)(intptr_t)q[3] - 1) / (int)(intptr_t)q[3];
  float r[${rw}];${rw > W ? `
  memset(r + ${W}, 0, ${(rw - W) * 4});` : ''}
  for (int pl = t * per; pl < KMIN(planes, (t + 1) * per); pl++) {
    const float *x = (const float *)q[0] + (size_t)pl * ${H * W};
    float *y = (float *)q[1] + (size_t)pl * ${OH * OW};
    for (int oh = 0; oh < ${OH}; oh++) {
      int h0 = oh * ${s[0]} - ${p[0]}, nr = 0;
      float *yr = y + oh * ${OW};
      if (h0 >= 0 && h0 + ${(kh - 1) * d[0]} < ${H}) {
        const float *xr = x + h0 * ${W};
        nr = ${kh};
        pv${id}(xr, r);
      } else {
        for (int a = 0; a < ${kh}; a++) {
          int h = h0 + a * ${d[0]};
          if (h < 0 || h >= ${H}) continue;
          const float *xr = x + h * ${W};
          if (nr++) for (int w = 0; w < ${W}; w++) r[w] = ${op('r[w]', 'xr[w]')};
          else memcpy(r, xr, ${W * 4});
        }
        if (!nr) { for (int ow = 0; ow < ${OW}; ow++) yr[ow] = ${isMax ? '-INFINITY' : countPad ? '0' : 'NAN'}; continue; }
      }
      ph${id}(r, yr, (float)nr);
      for (int ow = 0; ow < ${OW}; ow++) {
        if (ow == ${ow0}) ow = ${ow1};
        if (ow >= ${OW}) break;
        int w0 = ow * ${s[1]} - ${p[1]}, nc = 0;
        float v = ${isMax ? '-INFINITY' : '0'};
        for (int b = 0; b < ${kw}; b++) {
          int w = w0 + b * ${d[1]};
          if (w >= 0 && w < ${W}) { v = ${op('v', 'r[w]')}; nc++; }
        }
        ${isMax || countPad ? '(void)nc; ' : ''}yr[ow] = ${isMax ? 'v' : `v / ${div('nc')}`};
      }
    }
  }
}
${exported(fn, `  int planes = ${planes}, tasks = KMIN(planes, 4 * kiln_threads());
  void *q[4] = { a0, a1, (void *)(intptr_t)planes, (void *)(intptr_t)tasks };
  kiln_pool_run(t${id}, q, tasks);`)}`;
  return { variants: [{ tactic: `native-${c.isa}-pool`, fn }], args: [{ in: 0 }, { out: true }], batched: !!c.batch?.[0], work: N * C * OH * OW * kh * kw, source: src };
}

/** Max pools of stride 2 along rows with 2 or 3 taps (SqueezeNet's 3x3 s2, ResNet's stem pool), AVX-512: one pass per
 * output row with everything in registers. Per 16 outputs the rows' maximum over 32 (+1) input columns is taken in two
 * vectors and split into even and odd columns by permutes. The separable two-pass kernel above went through a scratch
 * row, and its vector stores read back at other offsets stalled on store forwarding (about 90 cycles a row, most of
 * the time at 27 x 27). Loads are masked at the row's end, so nothing past the input is touched. A task is a band of an
 * image's output rows over all its planes, not a few planes: the convolution before it (SqueezeNet's stem, by blocks of
 * rows) leaves each thread the rows it wrote in its own cache, and by planes every thread read half its input from the
 * other core's (the stem's pool 161-165 -> 146-148 us at 2 threads in the model, the second pool 64-65 -> 55). */
function maxPoolS2(c: Ctx, fn: string, g: number[], sh: number, dh: number, p: number[]): GenResult {
  const [N, C, H, W, OH, OW, kh, kw] = g;
  const id = c.id;
  // output columns whose window lies inside the row (the rest clip tap by tap)
  const ow0 = Math.min(OW, Math.ceil(p[1] / 2));
  const last = W - kw + p[1];
  const ow1 = last < 0 ? ow0 : Math.max(ow0, Math.min(OW, Math.floor(last / 2) + 1));
  const n = ow1 - ow0;
  const idx = (f: (i: number) => number) => `_mm512_setr_epi32(${Array.from({ length: 16 }, (_, i) => f(i)).join(', ')})`;
  const block = (ow: string, mask: string) => `{
        const int c0 = (${ow}) * 2 - ${p[1]};
        __m512 lo = mv${id}(rows, nr, c0, 16), hi = mv${id}(rows, nr, c0 + 16, 16);
        __m512 v = km${id}(_mm512_permutex2var_ps(lo, ie, hi), _mm512_permutex2var_ps(lo, io, hi));${kw === 3 ? `
        v = km${id}(v, _mm512_permutex2var_ps(_mm512_permutex2var_ps(lo, ie, hi), is, mv${id}(rows, nr, c0 + 32, 1)));` : ''}
        _mm512_mask_storeu_ps(yr + (${ow}), ${mask}, v);
      }`;
  const images = c.batch?.[0] ? 'nb' : String(N);
  const src = `#include <immintrin.h>
/* kmaxv per lane: NaN from either side wins */
static inline __m512 km${id}(__m512 a, __m512 b) { return _mm512_mask_mov_ps(_mm512_max_ps(b, a), _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), b); }
/* the maximum over the window's rows of up to \`lim\` columns from c0 (c0 >= 0), lanes past the row's end zero */
static inline __m512 mv${id}(const float *const *rows, int nr, int c0, int lim) {
  int k = KMIN(${W} - c0, lim);
  __mmask16 m = k >= 16 ? (__mmask16)0xffff : k <= 0 ? (__mmask16)0 : (__mmask16)((1u << k) - 1);
  __m512 v = _mm512_maskz_loadu_ps(m, rows[0] + c0);
  for (int a = 1; a < nr; a++) v = km${id}(v, _mm512_maskz_loadu_ps(m, rows[a] + c0));
  return v;
}
static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  int bands = (int)(intptr_t)q[2], img = t / bands, oh0 = t % bands * ${OH} / bands, oh1 = (t % bands + 1) * ${OH} / bands;
  const __m512i ie = ${idx((i) => 2 * i)}, io = ${idx((i) => 2 * i + 1)}, is = ${idx((i) => i + 1)};
  (void)ie; (void)io; (void)is;
  for (int pl = img * ${C}; pl < (img + 1) * ${C}; pl++) {
    const float *x = (const float *)q[0] + (size_t)pl * ${H * W};
    float *y = (float *)q[1] + (size_t)pl * ${OH * OW};
    for (int oh = oh0; oh < oh1; oh++) {
      const float *rows[${kh}];
      int nr = 0;
      for (int a = 0; a < ${kh}; a++) {
        int h = oh * ${sh} - ${p[0]} + a * ${dh};
        if (h >= 0 && h < ${H}) rows[nr++] = x + (size_t)h * ${W};
      }
      float *yr = y + oh * ${OW};
      if (!nr) { for (int ow = 0; ow < ${OW}; ow++) yr[ow] = -INFINITY; continue; }${n >= 16 ? `
      for (int s0 = ${ow0}; s0 < ${ow1}; s0 += 16) ${block(`(s0 + 16 <= ${ow1} ? s0 : ${ow1 - 16})`, '(__mmask16)0xffff')}` : n > 0 ? `
      ${block(String(ow0), `(__mmask16)${(1 << n) - 1}`)}` : ''}
      for (int ow = 0; ow < ${OW}; ow++) {
        if (ow == ${ow0}) ow = ${ow1};
        if (ow >= ${OW}) break;
        float v = -INFINITY;
        for (int a = 0; a < nr; a++)
          for (int b = 0; b < ${kw}; b++) {
            int w = ow * 2 - ${p[1]} + b;
            if (w >= 0 && w < ${W}) v = kmaxv(v, rows[a][w]);
          }
        yr[ow] = v;
      }
    }
  }
}
${exported(fn, `  int bands = kiln_threads() > 1 ? KMIN(${OH}, 4 * kiln_threads()) : 1;
  void *q[3] = { a0, a1, (void *)(intptr_t)bands };
  kiln_pool_run(t${id}, q, ${images} * bands);`)}`;
  return { variants: [{ tactic: `native-${c.isa}-pool`, fn }], args: [{ in: 0 }, { out: true }], batched: !!c.batch?.[0], work: N * C * OH * OW * kh * kw, source: src };
}

/**
 * \`body\` for \`v\` in [from, to) as blocks of 16 (or 8) whole iterations, the last block moved back to end at \`to\`
 * (it recomputes a few of its predecessor's, which is harmless: every iteration writes its own element from inputs the
 * loop does not write). GCC vectorizes a block but leaves a loop's tail scalar, and a scalar max of the row's data is a
 * data-dependent branch: SqueezeNet's 111-wide rows spent most of their time in mispredicted tails.
 */
function blocked(v: string, from: number, to: number, body: string): string {
  const n = to - from, b = n >= 16 ? 16 : n >= 8 ? 8 : 0;
  if (!b) return `  for (int ${v} = ${from}; ${v} < ${to}; ${v}++) ${body}`;
  return `  for (int s0 = ${from}; s0 < ${to}; s0 += ${b}) {
    const int b0 = s0 + ${b} <= ${to} ? s0 : ${to - b};
    for (int ${v} = b0; ${v} < b0 + ${b}; ${v}++) ${body}
  }`;
}

export const globalPool = (isMax: boolean): Gen => (c, n, ins) => {
  const [x] = ins;
  if (!x || x.length < 3 || prod(x) < MIN_ELEMENTS) return undefined;
  return poolTrailing(c, x, 2, isMax, `L${c.id}_gpool`, `native-${c.isa}-pool`);
};

/** Max or mean over the axes of \`x\` from \`first\` on: rows of that size through the runtime's global pool, batch-generic
 * where the leading axis is kept. */
function poolTrailing(c: Ctx, x: number[], first: number, isMax: boolean, fn: string, tactic: string): GenResult {
  const bt = !!c.batch?.[0] && first > 0;
  return { variants: [{ tactic, fn }], args: [{ in: 0 }, { out: true }], batched: bt, work: prod(x),
    source: exported(fn, `  kiln_global_pool(a0, a1, ${bt ? `nb * ${prod(x.slice(1, first))}` : prod(x.slice(0, first))}, ${prod(x.slice(first))}, ${isMax ? 1 : 0});`) };
}


/** ReduceMean / ReduceMax over a run of trailing axes (ShuffleNet's mean over H and W, a token mean): the global pool
 * over rows of the reduced size. Axes from the attribute (opsets < 18) or a constant input; keepdims either way. */
export const reduceTrailing = (isMax: boolean): Gen => (c, n, ins, out) => {
  const [x] = ins;
  if (!x || !x.length || prod(x) < MIN_ELEMENTS) return undefined;
  const r = x.length;
  const given = n.inputs[1] ? c.model.graph.initializers.get(n.inputs[1])?.toNumberArray() : attrOf<number[] | undefined>(n, 'axes', undefined);
  if (n.inputs[1] && !given) return undefined;
  // no axes: every axis, unless noop_with_empty_axes (then an identity, left to the reference kernel)
  if ((!given || !given.length) && attrOf(n, 'noop_with_empty_axes', 0)) return undefined;
  const axes = [...new Set((given?.length ? given : x.map((_, i) => i)).map((a) => (a < 0 ? a + r : a)))].sort((a, b) => a - b);
  const first = axes[0];
  if (axes.some((a, i) => a !== first + i) || axes[axes.length - 1] !== r - 1 || prod(out) !== prod(x.slice(0, first))) return undefined;
  return poolTrailing(c, x, first, isMax, `L${c.id}_red`, `native-${c.isa}-reduce`);
};
