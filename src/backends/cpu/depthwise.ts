// Depthwise convolution on the CPU (codegen.ts's fusedConv hands grouped convolutions with one input channel per group
// here): padded planes filled in bands of rows that stay in L1, stride 2 by permutes; on AVX-512 also a variant with
// 16 channels in vector lanes (see lanes); and the pair with a pointwise expansion whose output only this layer reads
// (LayerKernel.pair), in either form.
import type { Node } from '../../ir/graph.js';
import { KILN_DOMAIN } from '../../ops/fused.js';
import { VW, activation, activation512, exported, isConst, nbOr, prod, typeOfName, MIN_ELEMENTS, type Ctx, type Gen, type LayerKernel } from './codegen.js';
import { convGeometry, type ConvGeom } from './conv.js';

/** A pointwise convolution whose output only a depthwise layer reads: the pair can run as one kernel that computes
 * the expanded rows straight into the depthwise layer's padded planes (MobileNetV2's 16 -> 96 channel expansion at
 * 112x112 writes 4.8 MB that the depthwise layer reads back; fused, those rows never leave L1). */
interface Expand { producer: string; K: number; act: string; act512?: string }

/** Expanded tensors of at least this many floats per image (and inputs of at most EXPAND_MAX_K channels) fuse with the
 * banded row kernel: 4 MB, well past these cores' L2. MobileNetV2's 96 x 112 x 112 expansion: 0.83 vs 0.99-1.29 ms at
 * one thread, 0.60 vs 0.81 ms at two; its 144 x 56 x 56 ones (1.8 MB) come out even with the GEMM, and the 28 x 28
 * ones lose. */
const EXPAND_MIN = 1 << 20;
const EXPAND_MAX_K = 64;
/** With channels in lanes (see lanes) every expansion from at most this many channels fuses, whatever its size: the
 * pointwise layer computes straight into the depthwise scratch's [position][channel] layout (bench/cpu/dw-c.ts, us per
 * call, pair vs banded pair: 96 x 112 x 112 s2 from 16 channels 566 / 768, 144 x 56 x 56 from 24: s1 344 / 475, s2 253 /
 * 361; 192 x 28 x 28 from 32: s1 155 / 181, s2 125 / 153, against ~175 and ~148 for the two layers apart). From 64
 * channels and up its 8-position sums lose to the GEMM tiles (384 x 14 x 14 from 64: 187-222 vs ~145 apart). */
const LANES_EXPAND_MAX_K = 32;

function expandFeeding(c: Ctx, n: Node, g: ConvGeom, minSize: number, maxK: number): Expand | undefined {
  const e = n.inputs[0], graph = c.model.graph;
  if (g.Co !== g.C || g.C * g.H * g.W < minSize || graph.outputs.some((o) => o.name === e)) return undefined;
  const pw = graph.nodes.find((m) => m.outputs[0] === e);
  if (!pw || pw.domain !== KILN_DOMAIN || pw.opType !== 'FusedConv' || pw.attrs.layout || pw.inputs[3] || !pw.inputs[1] || !isConst(c, pw.inputs[1])) return undefined;
  if (pw.inputs[2] && !isConst(c, pw.inputs[2])) return undefined;
  // the expanded tensor is never written: nothing else may read it, nor this layer as its residual
  if (graph.nodes.some((m) => m !== n && m.inputs.includes(e)) || n.inputs.lastIndexOf(e) !== 0) return undefined;
  const x = typeOfName(c, pw.inputs[0]), w = typeOfName(c, pw.inputs[1]), y = typeOfName(c, e);
  if (x?.dtype !== 'float32' || !w || !y || x.dims.length !== 4 || w.dims.length !== 4 || y.dims.length !== 4) return undefined;
  const pg = convGeometry(pw, x.dims, w.dims, y.dims);
  const act = activation(pw);
  if (!pg || act === undefined || pg.group !== 1 || pg.kh !== 1 || pg.kw !== 1 || pg.s.some((v) => v !== 1) || pg.p.some((v) => v !== 0)) return undefined;
  if (pg.Co !== g.C || pg.OH !== g.H || pg.OW !== g.W || pg.C > maxK || (pw.inputs[2] && prod(typeOfName(c, pw.inputs[2])?.dims ?? []) !== g.C)) return undefined;
  return { producer: pw.name, K: pg.C, act, act512: activation512(pw) };
}

/** Depthwise convolution with everything baked in. Per (image, channel) task, bands of output rows: the input rows a
 * band reads are copied into zero-padded planes so that every tap of every output reads a plane at a constant offset
 * from w = oh * WQ + ow, the band's output rows laid end to end at the planes' width: one long vectorizable loop over
 * all taps, then the valid columns are copied out with the residual and activation. Bands keep the planes in L1
 * (a whole 112x112 plane is 52 KB). Stride 1: one padded plane. Column stride 2: one plane per row phase (whole rows,
 * so the fill is row copies), read as pairs of vectors whose even or odd lanes one permute picks. Other strides: one
 * plane per (row, column) phase over the whole image, filled by strided scalar loops. Where a pointwise convolution
 * feeds the layer (see Expand), a second function computes the pair, its band rows from the pointwise input. */
export function depthwise(c: Ctx, n: Node, g: ConvGeom, batch: number, hasBias: boolean, hasRes: boolean, act: string): ReturnType<Gen> {
  const { C, H, W, Co, OH, OW, kh, kw, s, d, p } = g;
  if (batch * Co * OH * OW < MIN_ELEMENTS) return undefined;
  const id = c.id, N = OH * OW, mult = Co / C, vw = VW[c.isa];
  const HP = Math.max((OH - 1) * s[0] + (kh - 1) * d[0] + 1, p[0] + H), WP = Math.max((OW - 1) * s[1] + (kw - 1) * d[1] + 1, p[1] + W);
  const mode = s[0] === 1 && s[1] === 1 ? 'one' : s[1] === 2 ? 'pairs' : 'phases';
  // the pair with a pointwise expansion: channels in lanes where that variant exists (see lanes), else banded rows
  const inLanes = lanesApply(c, g);
  const expand = inLanes ? expandFeeding(c, n, g, 0, LANES_EXPAND_MAX_K) : mode === 'phases' ? undefined : expandFeeding(c, n, g, EXPAND_MIN, EXPAND_MAX_K);
  // pairs: plane rows of WR = 2 * WQ columns, so output column ow of wide row oh reads plane columns 2 * w + constant
  const WQ = Math.ceil(WP / s[1]), WR = mode === 'pairs' ? 2 * WQ : WQ;
  // output rows per band: the band's padded rows about 8 KB (phases: one band)
  const span = (kh - 1) * d[0] + 1;
  const rmax = mode === 'phases' ? OH : Math.max(1, Math.floor((Math.floor(2048 / WR) - span) / s[0]) + 1);
  const R = Math.ceil(OH / Math.ceil(OH / Math.min(rmax, OH)));
  // padded rows per band, rows per plane, plane stride (pairs: planes back to back; else with a row and more of slack,
  // which the 7x7 planes are ~3% faster with)
  const BH = mode === 'phases' ? HP : (R - 1) * s[0] + span, HQ = Math.ceil(BH / s[0]);
  const PQ = mode === 'pairs' ? HQ * WR : HQ * WQ + WQ + 16, nw = (R - 1) * WQ + OW;
  // whole vectors over the wide rows (the lanes past nw are dropped): the planes plus slack cover the last reads
  const nwv = Math.ceil(nw / vw) * vw;
  const taps: string[] = [], loads = new Map<number, string>();
  let maxRead = 0;
  for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
    const ra = a * d[0], cb = b * d[1], k = a * kw + b;
    if (mode === 'pairs') {
      // tap column cb: the even (cb even) or odd lanes of the pair of vectors from plane column 2 * w + cb - cb % 2
      const off = (ra % s[0]) * PQ + Math.floor(ra / s[0]) * WR + cb - (cb % 2);
      if (!loads.has(off)) loads.set(off, `vf u${loads.size} = *(const vfu *)(q + ${off} + 2 * w), z${loads.size} = *(const vfu *)(q + ${off + vw} + 2 * w);`);
      const i = [...loads.keys()].indexOf(off);
      taps.push(`v += wk[${k}] * __builtin_shuffle(u${i}, z${i}, ${cb % 2 ? 'KODD' : 'KEVEN'});`);
      maxRead = Math.max(maxRead, off + 2 * nwv);
    } else {
      const plane = (ra % s[0]) * s[1] + (cb % s[1]);
      const off = plane * PQ + Math.floor(ra / s[0]) * WQ + Math.floor(cb / s[1]);
      taps.push(`v += wk[${k}] * *(const vfu *)(q + ${off} + w);`);
      maxRead = Math.max(maxRead, off + nwv);
    }
  }
  const planes = mode === 'one' ? 1 : mode === 'pairs' ? s[0] : s[0] * s[1];
  const qa = Math.ceil(Math.max(planes * PQ, maxRead) / 16) * 16;
  const rowAt = (hh: string) => (planes > 1 ? `q + (size_t)(${hh} % ${s[0]}) * ${PQ} + (size_t)(${hh} / ${s[0]}) * ${WR}` : `q + (size_t)(${hh}) * ${WR}`);
  // stride 1 in one band: the rows of padding above and below (with the slack) are zeroed around the data rows, in
  // a few long stores (per-row zeroing that the first taps then read back costs ~8% on 7x7 planes)
  const whole = mode === 'one' && R >= OH;
  // otherwise the band's padded row hh (input row oh0 * s0 + hh - pt) goes whole to plane hh % s0, row hh / s0: data
  // rows (copied, or expanded by the pair) with their pad columns zeroed, padding rows all zeros; rows past the band's
  // and the slack after the planes only meet dropped lanes, and are zeroed once per task
  const fill = (data: (dst: string, h: string) => string) => whole ? `memset(q, 0, ${p[0] * WQ} * sizeof(float));
    for (int h = 0; h < ${H}; h++) {
      float *qr = q + (size_t)(h + ${p[0]}) * ${WQ};
      for (int i = 0; i < ${p[1]}; i++) qr[i] = 0;
      ${data(`qr + ${p[1]}`, 'h')}
      for (int i = ${p[1] + W}; i < ${WQ}; i++) qr[i] = 0;
    }
    memset(q + ${(p[0] + H) * WQ}, 0, ${qa - (p[0] + H) * WQ} * sizeof(float));`
    : mode === 'phases'
    // input (h, x) lands in plane ((h + pt) % s0, (x + pl) % s1) at ((h + pt) / s0, (x + pl) / s1)
    ? `memset(q, 0, ${qa} * sizeof(float));
    for (int h = 0; h < ${H}; h++) {
      int hh = h + ${p[0]};
      float *qr = q + (size_t)(hh % ${s[0]}) * ${s[1] * PQ} + (size_t)(hh / ${s[0]}) * ${WQ};
      const float *xr = x + (size_t)h * ${W};
      ${colPhases(W, p[1], s[1], PQ)}
    }`
    : `for (int hh = 0; hh < ${BH}; hh++) {
      float *qr = ${rowAt('hh')};
      int h = oh0 * ${s[0]} + hh - ${p[0]};
      if ((unsigned)h < ${H}u) {
        for (int i = 0; i < ${p[1]}; i++) qr[i] = 0;
        ${data(`qr + ${p[1]}`, 'h')}
        for (int i = ${p[1] + W}; i < ${WR}; i++) qr[i] = 0;
      } else memset(qr, 0, ${WR} * sizeof(float));
    }`;
  const zeroOnce = mode === 'phases' || whole ? '' : `for (int hh = ${BH}; hh < ${planes * HQ}; hh++) memset(${rowAt('hh')}, 0, ${WR} * sizeof(float));
  memset(q + ${planes * PQ}, 0, ${qa - planes * PQ} * sizeof(float));`;
  // the activation in registers before the wide rows' stores, where AVX-512 has a short form of it (see
  // renderActivation512) and no residual comes after it: the copy-out is then a plain copy
  const inTaps = c.isa === 'avx512' && !hasRes ? activation512(n, 'u') : undefined;
  const actOut = inTaps ? 'v' : act;
  // output rows shorter than a vector (7, 14): the activation runs over the wide rows as whole vectors and the rows
  // are fixed-size copies; per row, a loop of 7 or 14 would run scalar
  const copyOut = hasRes || OW >= vw ? `for (int r = 0; r < rows; r++) {
      const float *wr = wide + r * ${WQ};
      float *yr = y + (size_t)(oh0 + r) * ${OW};
      #pragma GCC ivdep
      for (int ow = 0; ow < ${OW}; ow++) {
        float v = wr[ow]${hasRes ? ` + res[(oh0 + r) * ${OW} + ow]` : ''};
        yr[ow] = ${actOut};
      }
    }` : `${actOut === 'v' ? '' : `#pragma GCC ivdep
    for (int w = 0; w < ${nwv}; w++) { float v = wide[w]; wide[w] = ${actOut}; }`}
    for (int r = 0; r < rows; r++) memcpy(y + (size_t)(oh0 + r) * ${OW}, wide + r * ${WQ}, ${OW} * sizeof(float));`;
  // the loop over bands (one band: constants, so the row loops have fixed counts)
  const bands = R >= OH ? `{
    const int oh0 = 0, rows = ${OH};` : `for (int oh0 = 0; oh0 < ${OH}; oh0 += ${R}) {
    int rows = KMIN(${R}, ${OH} - oh0);`;
  // one channel's band: planes, taps, copy-out (with wk, b, res, y, q, wide, oh0 and rows in scope)
  const band = (data: (dst: string, h: string) => string) => `${fill(data)}
    for (int w = 0; w < ${nwv}; w += VW) {
      vf v = (vf){0} + b;
      ${[...loads.values()].join(' ')}
      ${taps.join(' ')}
      ${inTaps ? `{ __m512 u = (__m512)v; *(__m512 *)(wide + w) = ${inTaps}; }` : '*(vf *)(wide + w) = v;'}
    }
    ${copyOut}`;
  // one (image, channel) per task
  const fn = `L${id}_dw`;
  // (AVX-512: the intrinsics of the activations in registers and of the lanes variant)
  let src = `${c.isa === 'avx512' ? '#include <immintrin.h>\n' : ''}static void t${id}(void *ctx, int t) {
  void *const *qa = ctx;
  int n = t / ${Co}, oc = t % ${Co}, ic = oc / ${mult};
  const float *x = (const float *)qa[0] + ((size_t)n * ${C} + ic) * ${H * W};
  const float *wt = (const float *)qa[1] + (size_t)oc * ${kh * kw};
  float b = qa[2] ? ((const float *)qa[2])[oc] : 0.0f;
  const float *res = qa[3] ? (const float *)qa[3] + ((size_t)n * ${Co} + oc) * ${N} : NULL; (void)res;
  float *y = (float *)qa[4] + ((size_t)n * ${Co} + oc) * ${N};
  float *q = kiln_scratch(0, ${qa + nwv});
  float *wide = q + ${qa};
  float wk[${kh * kw}];
  for (int i = 0; i < ${kh * kw}; i++) wk[i] = wt[i];
  ${zeroOnce}
  ${bands}
    ${band((dst, h) => `memcpy(${dst}, x + (size_t)${h} * ${W}, ${W} * sizeof(float));`)}
  }
}
`;
  src += exported(fn, `  void *q[5] = { a0, a1, ${hasBias ? 'a2' : 'NULL'}, a3, a4 };
  kiln_pool_run(t${id}, q, ${nbOr(c, batch)} * ${Co});`);
  let pair: LayerKernel['pair'];
  if (expand && !inLanes) {
    // the pair: x [K][H][W] of the image, the pointwise weights [C][K] and bias, then the depthwise layer's arguments.
    // A task takes G channels: per band, their expanded rows first (the band's input rows are contiguous in every
    // input channel, so one flat span; each input vector loaded meets G channels, U vectors at a time so the sums
    // are independent), then each channel's planes, taps and copy-out as in the layer alone.
    const { K, act: act1 } = expand, HW = H * W, G = 8, U = 2, NG = Math.ceil(Co / G), EX = BH * W;
    const sums = (u: number, load: (k: string, u: string) => string, store: (g: string, u: string) => string, type = 'vf', zero = '(vf){0} + ') => `{
        ${type} v[${G}][${u}];
        for (int g = 0; g < ${G}; g++) for (int u = 0; u < ${u}; u++) v[g][u] = ${zero}b1[g];
        _Pragma("GCC unroll 64") for (int k = 0; k < ${K}; k++) {
          ${type} xv[${u}];
          _Pragma("GCC unroll 8") for (int u = 0; u < ${u}; u++) xv[u] = ${load('k', 'u')};
          _Pragma("GCC unroll 8") for (int g = 0; g < ${G}; g++) _Pragma("GCC unroll 8") for (int u = 0; u < ${u}; u++) v[g][u] += w1[g][k] * xv[u];
        }
        for (int g = 0; g < ${G}; g++) for (int u = 0; u < ${u}; u++) ${store('g', 'u')} = v[g][u];
      }`;
    src += `static void x${id}(void *ctx, int t) {
  void *const *qa = ctx;
  int n = t / ${NG}, oc0 = (t % ${NG}) * ${G}, ng = KMIN(${G}, ${Co} - oc0);
  const float *xk = (const float *)qa[0] + (size_t)n * ${K * HW};
  float w1[${G}][${K}], b1[${G}];
  for (int g = 0; g < ${G}; g++) {
    for (int k = 0; k < ${K}; k++) w1[g][k] = g < ng ? ((const float *)qa[1])[(size_t)(oc0 + g) * ${K} + k] : 0.0f;
    b1[g] = qa[2] && g < ng ? ((const float *)qa[2])[oc0 + g] : 0.0f;
  }
  float *q = kiln_scratch(0, ${qa + nwv + G * EX});
  float *wide = q + ${qa}, *exs = wide + ${nwv};
  ${zeroOnce}
  ${bands}
    int hlo = KMAX(0, oh0 * ${s[0]} - ${p[0]}), hhi = KMIN(${H}, oh0 * ${s[0]} - ${p[0]} + ${BH});
    {
      const float *xs = xk + (size_t)hlo * ${W};
      int L = (hhi - hlo) * ${W}, i = 0;
      for (; i + ${U} * VW <= L; i += ${U} * VW) ${sums(U, (k, u) => `*(const vfu *)(xs + (size_t)${k} * ${HW} + i + ${u} * VW)`, (g, u) => `*(vfu *)(exs + (size_t)${g} * ${EX} + i + ${u} * VW)`)}
      for (; i + VW <= L; i += VW) ${sums(1, (k) => `*(const vfu *)(xs + (size_t)${k} * ${HW} + i)`, (g) => `*(vfu *)(exs + (size_t)${g} * ${EX} + i)`)}
      for (; i < L; i++) ${sums(1, (k) => `xs[(size_t)${k} * ${HW} + i]`, (g) => `exs[(size_t)${g} * ${EX} + i]`, 'float', '')}
      ${act1 === 'v' ? '' : `for (int g = 0; g < ng; g++) {
        float *ex = exs + (size_t)g * ${EX};
        #pragma GCC ivdep
        for (int i = 0; i < L; i++) { float v = ex[i]; ex[i] = ${act1}; }
      }`}
    }
    for (int g = 0; g < ng; g++) {
      int oc = oc0 + g;
      const float *ex = exs + (size_t)g * ${EX};
      const float *wt = (const float *)qa[3] + (size_t)oc * ${kh * kw};
      float b = qa[4] ? ((const float *)qa[4])[oc] : 0.0f;
      const float *res = qa[5] ? (const float *)qa[5] + ((size_t)n * ${Co} + oc) * ${N} : NULL; (void)res;
      float *y = (float *)qa[6] + ((size_t)n * ${Co} + oc) * ${N};
      float wk[${kh * kw}];
      for (int i = 0; i < ${kh * kw}; i++) wk[i] = wt[i];
      ${band((dst, h) => `memcpy(${dst}, ex + (size_t)(${h} - hlo) * ${W}, ${W} * sizeof(float));`)}
    }
  }
}
`;
    src += exported(`X${id}_pwdw`, `  void *q[7] = { a0, a1, a2, a3, ${hasBias ? 'a4' : 'NULL'}, a5, a6 };
  kiln_pool_run(x${id}, q, ${nbOr(c, batch)} * ${NG});`);
    pair = { producer: expand.producer, fn: `X${id}_pwdw` };
  }
  const c16 = lanes(c, g, batch, hasBias, hasRes, act, activation512(n), expand);
  if (c16) src += c16.src;
  if (c16?.pair && expand) pair = { producer: expand.producer, fn: c16.pair };
  const variants = [{ tactic: `native-${c.isa}-depthwise`, fn }, ...(c16?.fn ? [{ tactic: `native-${c.isa}-depthwise-c16`, fn: c16.fn }] : [])];
  return { variants, args: [{ in: 0 }, { in: 1 }, { in: 2 }, { in: 3 }, { out: true }], source: src,
    batched: !!c.batch, work: batch * Co * N * kh * kw, ...(pair ? { pair } : {}) };
}

/** Copies one input row \`xr\` into its column phase planes (\`qr\` + phase * PQ): input column x goes to phase
 * (x + pl) % s at (x + pl) / s, one strided loop per phase. */
function colPhases(W: number, pl: number, s: number, PQ: number): string {
  const loops: string[] = [];
  for (let ph = 0; ph < s; ph++) {
    const x0 = (((ph - pl) % s) + s) % s, n = Math.max(0, Math.ceil((W - x0) / s));
    if (n) loops.push(`{ float *dst = qr + ${ph * PQ + (x0 + pl - ph) / s}; for (int i = 0; i < ${n}; i++) dst[i] = xr[${x0} + i * ${s}]; }`);
  }
  return loops.join('\n    ');
}

/** Input planes up to this many floats get the channels-in-lanes pair (MobileNetV2's 16 -> 96 expansion at 112 x 112
 * included), up to LANES_ALONE_HW the layer alone too: past 56 x 56 the banded row kernel wins (32 x 112 x 112: 150-153
 * us vs 163-167), and each variant costs build time (MobileNetV2 built in 10.3 s with it at every size, 6.1 s before). */
const LANES_MAX_HW = 112 * 112;
const LANES_ALONE_HW = 56 * 56;
const lanesApply = (c: Ctx, g: ConvGeom) => c.isa === 'avx512' && g.H * g.W <= LANES_MAX_HW;

/** The channels-in-lanes variant (AVX-512): per task 16 channels of one image and a band of output rows. The band's
 * input rows are transposed 16 positions at a time into a zero-padded [rows][WP][16] scratch, so every tap of an
 * output position is one aligned vector of 16 channels whatever the stride; blocks of up to 16 output positions along
 * a row (see block) accumulate in registers and are transposed back to the [channel][position] output with bias,
 * residual and activation. Small planes (7x7, 14x14) waste most of a row-vector kernel's lanes and pay a padded copy
 * per channel; here nothing is wasted but the transposes. Planes past 56 x 56 go in bands (their scratch about 64 KB; the rows a band shares with the next are
 * transposed twice), which also gives layers of few channels enough tasks for the threads. The builder times it
 * against the banded row kernel. */
function lanes(c: Ctx, g: ConvGeom, batch: number, hasBias: boolean, hasRes: boolean, act: string, act512: string | undefined, expand?: Expand): { src: string; fn?: string; pair?: string } | undefined {
  const { C, H, W, Co, OH, OW, kh, kw, s, d, p } = g;
  const alone = H * W <= LANES_ALONE_HW;
  if (!lanesApply(c, g) || (!alone && !expand)) return undefined;
  const id = c.id, N = OH * OW, HW = H * W, mult = Co / C, KK = kh * kw, NB = Math.ceil(Co / 16);
  const HP = Math.max((OH - 1) * s[0] + (kh - 1) * d[0] + 1, p[0] + H), WP = Math.max((OW - 1) * s[1] + (kw - 1) * d[1] + 1, p[1] + W);
  const span = (kh - 1) * d[0] + 1;
  // output rows per band: the whole plane up to 28 x 28 inputs, two bands up to 56 x 56 (tasks for two threads where a
  // layer has few channels; 144 x 56 x 56 alone: 169 us whole, 182 in bands of 8 rows), else about 64 KB of scratch
  // rows (at least 4 rows)
  const R = HW <= 28 * 28 ? OH : HW <= 56 * 56 ? Math.ceil(OH / 2) : Math.min(OH, Math.max(4, Math.floor((Math.floor(1024 / WP) - span) / s[0]) + 1));
  const NBANDS = Math.ceil(OH / R), BH = R >= OH ? HP : (R - 1) * s[0] + span;
  // channel l's m positions from the transposed block, by masked stores (a 14-float memcpy from a vector just stored
  // stalls store forwarding), through the epilogue where there is one: per vector where the activation has an AVX-512
  // form (act512), else over all 16 x 16 lanes at once (a loop of m < 16 positions per channel runs it scalar:
  // EfficientNet's SiLU on 14-position blocks cost twice the taps)
  const plain = !hasRes && act === 'v';
  const store = (m: number) => {
    const mask = `(__mmask16)${(1 << m) - 1}`;
    const res = hasRes ? ` + (vf)_mm512_maskz_loadu_ps(${mask}, res + (size_t)l * ${N} + p0)` : '';
    return plain || act512 ? `for (int l = 0; l < nc; l++) { __m512 v = (__m512)(r[l]${res}); _mm512_mask_storeu_ps(y + (size_t)l * ${N} + p0, ${mask}, ${act512 ?? 'v'}); }`
      : `float tt[256] __attribute__((aligned(64)));
      for (int l = 0; l < 16; l++) *(vf *)(tt + l * 16) = r[l]${hasRes ? ` + (vf)_mm512_maskz_loadu_ps(${mask}, res + (size_t)KMIN(l, nc - 1) * ${N} + p0)` : ''};
      #pragma GCC ivdep
      for (int i = 0; i < 256; i++) { float v = tt[i]; tt[i] = ${act}; }
      for (int l = 0; l < nc; l++) _mm512_mask_storeu_ps(y + (size_t)l * ${N} + p0, ${mask}, *(const __m512 *)(tt + l * 16));`;
  };
  // scratch offsets of every input position, for a band starting at row 0 (a band at output row oh0 subtracts oh0 * s0
  // rows): a table, so that the transposes' scatter of 16 positions unrolls without index arithmetic
  const inOff = Array.from({ length: HW }, (_, i) => ((Math.floor(i / W) + p[0]) * WP + (i % W) + p[1]) * 16);
  // output positions in blocks of at most 16 that lie in whole runs of a row: a row cut in equal pieces (rows of 16
  // and more), or as many whole rows as fit (shorter rows); the last rows of a band one at a time
  const pieces = Math.ceil(OW / 16), P = Math.ceil(OW / pieces), G = OW >= 16 ? 1 : Math.floor(16 / OW);
  const full = Math.floor(OW / P), tail = OW - full * P;
  // one block of gr rows x pw columns at (oh, ow0), transposed back and stored: per kernel row, every scratch vector
  // the block reads is loaded once and meets each of its taps' outputs (register accumulators, one per position), so
  // a 5 x 5 window costs about (pw + 4) / (5 pw) loads per FMA instead of one (or two, where the weights spill)
  const block = (gr: number, pw: number) => {
    const m = gr * pw, fmas: string[] = [];
    for (let r = 0; r < gr; r++) {
      for (let col = 0; col <= (pw - 1) * s[1] + (kw - 1) * d[1]; col++) {
        const uses: string[] = [];
        for (let b = 0; b < kw; b++) {
          const j = (col - b * d[1]) / s[1];
          if (Number.isInteger(j) && j >= 0 && j < pw) uses.push(`a${r * pw + j} += w${b} * x;`);
        }
        if (uses.length) fmas.push(`{ vf x = *(const vf *)(q + ${(r * s[0] * WP + col) * 16}); ${uses.join(' ')} }`);
      }
    }
    return `{
      vf ${Array.from({ length: m }, (_, i) => `a${i} = bv`).join(', ')};
      for (int ka = 0; ka < ${kh}; ka++) {
        const float *q = S + ((size_t)oh * ${s[0]} + ka * ${d[0]}) * ${WP * 16} + (size_t)ow0 * ${s[1] * 16};
        ${Array.from({ length: kw }, (_, b) => `vf w${b} = wv[ka * ${kw} + ${b}];`).join(' ')}
        ${fmas.join('\n        ')}
      }
      vf r[16] = { ${Array.from({ length: m }, (_, i) => `a${i}`).join(', ')} };
      ktranspose16(r);
      int p0 = oh * ${OW} + ow0;
      ${store(m)}
    }`;
  };
  const fn = `L${id}_dwc`;
  // the task of the layer alone (a0..a4 as the layer's arguments) or of the pair (a0 the pointwise input, a1 and a2 its
  // weights and bias, then the layer's arguments): the same but for how the band's rows are filled
  const task = (name: string, pw: boolean) => `static void ${name}(void *ctx, int t) {
  void *const *qa = ctx;
  int band = t % ${NBANDS}, n = t / ${NBANDS * NB}, oc0 = ((t / ${NBANDS}) % ${NB}) * 16, nc = KMIN(16, ${Co} - oc0);
  int oh0 = band * ${R}, oh1 = KMIN(${OH}, oh0 + ${R});
  const int o = ${pw ? 2 : 0};
  const float *x = (const float *)qa[0] + (size_t)n * ${(pw ? expand!.K : C) * HW};
  const float *wt = qa[o + 1], *bias = qa[o + 2];
  const float *res = qa[o + 3] ? (const float *)qa[o + 3] + ((size_t)n * ${Co} + oc0) * ${N} : NULL; (void)res;
  float *y = (float *)qa[o + 4] + ((size_t)n * ${Co} + oc0) * ${N};
  /* S: the scratch as the tables see it (S + table offset lands in the band's rows) */
  float *S0 = kiln_scratch(0, ${BH * WP * 16});
  float *S = S0 - (ptrdiff_t)oh0 * ${s[0] * WP * 16};
  /* lanes past the last channel repeat it (read, never stored) with zero weights */
  const float *xs[16];
  float wl[${KK}][16] __attribute__((aligned(64))), bl[16] __attribute__((aligned(64)));
  for (int l = 0; l < 16; l++) {
    int oc = oc0 + KMIN(l, nc - 1);
    xs[l] = x + (size_t)(oc / ${mult}) * ${HW};
    for (int k = 0; k < ${KK}; k++) wl[k][l] = l < nc ? wt[(size_t)oc * ${KK} + k] : 0.0f;
    bl[l] = bias && l < nc ? bias[oc] : 0.0f;
  }
  vf wv[${KK}], bv = *(const vf *)bl;
  for (int k = 0; k < ${KK}; k++) wv[k] = *(const vf *)wl[k];
  /* the band's padded rows: padding zeroed, input rows [hlo, hhi) transposed in */
  int hlo = KMAX(0, oh0 * ${s[0]} - ${p[0]}), hhi = KMIN(${H}, oh0 * ${s[0]} - ${p[0]} + ${BH});
  for (int hh = 0; hh < ${BH}; hh++) {
    vf *row = (vf *)(S0 + (size_t)hh * ${WP * 16});
    int h = oh0 * ${s[0]} + hh - ${p[0]};
    if (h < hlo || h >= hhi) { for (int w = 0; w < ${WP}; w++) row[w] = (vf){0}; }
    else { for (int w = 0; w < ${p[1]}; w++) row[w] = (vf){0}; for (int w = ${p[1] + W}; w < ${WP}; w++) row[w] = (vf){0}; }
  }
  ${pw ? expandRows(expand!, id, W, HW) : transposeRows(id, W)}
  /* blocks of output positions, transposed back */
  for (int oh = oh0; oh < oh1; oh += ${G}) {
    ${G > 1 ? `if (oh + ${G} > oh1) { for (; oh < oh1; oh++) { const int ow0 = 0; ${block(1, OW)} } break; }
    const int ow0 = 0;
    ${block(G, OW)}` : `${full > 1 ? `for (int ow0 = 0; ow0 < ${full * P}; ow0 += ${P}) ${block(1, P)}` : `{ const int ow0 = 0; ${block(1, P)} }`}
    ${tail ? `{ const int ow0 = ${full * P}; ${block(1, tail)} }` : ''}`}
  }
}
`;
  let src = `static const int ip${id}[${HW}] = { ${inOff.join(', ')} };
`;
  if (alone) {
    src += `${task(`c${id}`, false)}
${exported(fn, `  void *q[5] = { a0, a1, ${hasBias ? 'a2' : 'NULL'}, a3, a4 };
  kiln_pool_run(c${id}, q, ${nbOr(c, batch)} * ${NB * NBANDS});`)}`;
  }
  if (!expand) return { src, fn };
  src += `${task(`cx${id}`, true)}
${exported(`X${id}_pwdwc`, `  void *q[7] = { a0, a1, a2, a3, ${hasBias ? 'a4' : 'NULL'}, a5, a6 };
  kiln_pool_run(cx${id}, q, ${nbOr(c, batch)} * ${NB * NBANDS});`)}`;
  return { src, ...(alone ? { fn } : {}), pair: `X${id}_pwdwc` };
}

/** The band's input rows [hlo, hhi) of 16 channel planes (xs) transposed 16 positions at a time into the scratch. */
function transposeRows(id: string, W: number): string {
  return `int i0 = hlo * ${W};
  for (; i0 + 16 <= hhi * ${W}; i0 += 16) {
    vf r[16];
    for (int l = 0; l < 16; l++) r[l] = *(const vfu *)(xs[l] + i0);
    ktranspose16(r);
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) *(vf *)(S + ip${id}[i0 + i]) = r[i];
  }
  for (; i0 < hhi * ${W}; i0++) {
    float *o = S + ip${id}[i0];
    for (int l = 0; l < 16; l++) o[l] = xs[l][i0];
  }`;
}

/** The pair's fill: the band's input rows [hlo, hhi) of the 16 expanded channels computed straight into the scratch in
 * its [position][channel] layout (the pointwise layer with output channels in lanes: per input channel one weight
 * vector times the input value broadcast, 8 positions at a time), with the pointwise layer's activation in registers where
 * it has an AVX-512 form (renderActivation512), else over each row once computed. */
function expandRows(e: Expand, id: string, W: number, HW: number): string {
  const { K, act, act512 } = e, P = 8;
  const acc = (m: number) => `{
      vf a[${m}];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${m}; j++) a[j] = b1v;
      for (int k = 0; k < ${K}; k++) {
        vf wv = *(const vf *)w1l[k];
        const float *xk = xr + (size_t)k * ${HW} + w;
        _Pragma("GCC unroll 8") for (int j = 0; j < ${m}; j++) a[j] += xk[j] * wv;
      }
      _Pragma("GCC unroll 8") for (int j = 0; j < ${m}; j++) { __m512 v = (__m512)a[j]; *(__m512 *)(row + (size_t)(w + j) * 16) = ${act512 ?? 'v'}; }
    }`;
  return `float w1l[${K}][16] __attribute__((aligned(64))), b1l[16] __attribute__((aligned(64)));
  for (int l = 0; l < 16; l++) {
    int oc = oc0 + KMIN(l, nc - 1);
    for (int k = 0; k < ${K}; k++) w1l[k][l] = l < nc ? ((const float *)qa[1])[(size_t)oc * ${K} + k] : 0.0f;
    b1l[l] = qa[2] && l < nc ? ((const float *)qa[2])[oc] : 0.0f;
  }
  vf b1v = *(const vf *)b1l;
  for (int h = hlo; h < hhi; h++) {
    float *row = S + ip${id}[h * ${W}];
    const float *xr = x + (size_t)h * ${W};
    int w = 0;
    for (; w + ${P} <= ${W}; w += ${P}) ${acc(P)}
    for (; w < ${W}; w++) ${acc(1)}
    ${act === 'v' || act512 ? '' : `#pragma GCC ivdep
    for (int i = 0; i < ${W * 16}; i++) { float v = row[i]; row[i] = ${act}; }`}
  }`;
}

/** Depthwise outputs of at least this many floats per image pair with the pointwise layer reading them: past L2
 * (MobileNetV2's 32 x 112 x 112 layer writes 1.6 MB that its 32 -> 16 projection reads back from L3). */
const DWPW_MIN = 1 << 18;

/**
 * The pair of a pointwise layer (`n`, geometry `g`: 1x1, stride 1, unpadded, group 1) with the stride-1 depthwise layer
 * producing its input, where only it reads that output: per band of output rows, the depthwise rows of every channel
 * go to a scratch [C][positions] (in L2) and the pointwise tiles (16 output channels x 16 positions, kiln_pw_tile_16x1)
 * run from there, with the pointwise layer's epilogue `epi`; the depthwise output never reaches memory. The pair reads
 * the pointwise weights packed in [Co/16][K][16] panels: `tactics` are the pointwise layer's variants packing them so.
 */
export function depthwisePointwise(c: Ctx, n: Node, g: ConvGeom, batch: number, epi: string): { src: string; pair: NonNullable<LayerKernel['pair']> } | undefined {
  if (c.isa !== 'avx512') return undefined;
  const e = n.inputs[0], graph = c.model.graph;
  if (graph.outputs.some((o) => o.name === e) || graph.nodes.some((m) => m !== n && m.inputs.includes(e)) || n.inputs.lastIndexOf(e) !== 0) return undefined;
  const dw = graph.nodes.find((m) => m.outputs[0] === e);
  if (!dw || dw.domain !== KILN_DOMAIN || dw.opType !== 'FusedConv' || dw.inputs[3] || !dw.inputs[1] || !isConst(c, dw.inputs[1])) return undefined;
  if (dw.inputs[2] && !isConst(c, dw.inputs[2])) return undefined;
  const x = typeOfName(c, dw.inputs[0]), w = typeOfName(c, dw.inputs[1]), y = typeOfName(c, e);
  if (x?.dtype !== 'float32' || !w || !y) return undefined;
  const d = convGeometry(dw, x.dims, w.dims, y.dims);
  const act = activation(dw), act512 = activation512(dw, 'u');
  if (!d || act === undefined || d.group !== d.C || d.Co !== d.C || w.dims[1] !== 1 || d.s.some((v) => v !== 1) || d.d.some((v) => v !== 1)) return undefined;
  if (d.C !== g.C || d.OH * d.OW !== g.OH * g.OW || d.C * d.OH * d.OW < DWPW_MIN) return undefined;
  // a depthwise layer that may pair with its expansion (see expandFeeding) runs in that pair, not as its own call
  if (expandFeeding(c, dw, d, 0, Infinity)) return undefined;
  if (dw.inputs[2] && prod(typeOfName(c, dw.inputs[2])?.dims ?? []) !== d.C) return undefined;
  const { C, H, W, OH, OW, kh, kw, p } = d, Co = g.Co, N = OH * OW, id = c.id;
  // bands of rows whose [C][positions] scratch fills up to 128 KB of L2: each band copies kh - 1 input rows more than
  // it computes (MobileNetV2's 32 x 112 x 112 layer and its projection, in the model, paired runs: 1 vs 4 rows 497 /
  // 407 us, 4 vs 9 rows 416 / 394, 9 vs 18 rows 326 / 324)
  const R = Math.max(1, Math.min(OH, Math.floor(32768 / (C * OW))));
  const NBANDS = Math.ceil(OH / R), RW = R * OW;
  // scratch rows: the band's positions rounded up to whole 16-wide blocks, plus a vector of slack for the
  // depthwise's last vector of a row (it spills into the next row, which is written after it)
  const LB = Math.ceil(RW / 16) * 16 + 16;
  const WP = Math.max(Math.ceil(OW / 16) * 16 + kw - 1, p[1] + W), PR = R + kh - 1;
  const taps: string[] = [];
  for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) taps.push(`acc += wk[${a * kw + b}] * *(const vfu *)(pr + ${a * WP + b});`);
  const src = `#include <immintrin.h>
static void dwpw${id}(void *ctx, int t) {
  void *const *qa = ctx;
  int per = (int)(intptr_t)qa[7], bpt = (int)(intptr_t)qa[8];
  int img = t / per, b0 = (t % per) * bpt, b1 = KMIN(${NBANDS}, b0 + bpt);
  const float *x = (const float *)qa[0] + (size_t)img * ${C * H * W}, *wd = qa[1], *bd = qa[2], *ap = qa[3];
  float *y = (float *)qa[6] + (size_t)img * ${Co * N};
  const float *pp[3] = { NULL, qa[4], qa[5] ? (const float *)qa[5] + (size_t)img * ${Co * N} : NULL }; (void)pp;
  float *pb = kiln_scratch(0, ${PR * WP + C * LB + 16});
  float *S = pb + ${PR * WP};
  float tile[16 * 16] __attribute__((aligned(64)));
  /* the padded rows' pad columns stay zero: only their middles are written below */
  memset(pb, 0, ${PR * WP} * sizeof(float));
  for (int band = b0; band < b1; band++) {
    int oh0 = band * ${R}, rows = KMIN(${R}, ${OH} - oh0), L = rows * ${OW};
    for (int ch = 0; ch < ${C}; ch++) {
      const float *xc = x + (size_t)ch * ${H * W};
      for (int r = 0; r < rows + ${kh - 1}; r++) {
        int h = oh0 - ${p[0]} + r;
        float *dst = pb + r * ${WP} + ${p[1]};
        if ((unsigned)h >= ${H}u) memset(dst, 0, ${W} * sizeof(float));
        else memcpy(dst, xc + (size_t)h * ${W}, ${W} * sizeof(float));
      }
      float wk[${kh * kw}];
      for (int i = 0; i < ${kh * kw}; i++) wk[i] = wd[ch * ${kh * kw} + i];
      float bb = bd ? bd[ch] : 0.0f;
      float *sc = S + (size_t)ch * ${LB};
      for (int r = 0; r < rows; r++)
        for (int ow = 0; ow < ${OW}; ow += VW) {
          const float *pr = pb + r * ${WP} + ow;
          vf acc = (vf){0} + bb;
          ${taps.join('\n          ')}
          ${act512 ? `{ __m512 u = (__m512)acc; _mm512_storeu_ps(sc + r * ${OW} + ow, ${act512}); }` : `*(vfu *)(sc + r * ${OW} + ow) = acc;`}
        }
      ${act === 'v' || act512 ? '' : `#pragma GCC ivdep
      for (int i = 0; i < L; i++) { float v = sc[i]; sc[i] = ${act}; }`}
    }
    int j0 = oh0 * ${OW};
    for (int j = 0; j < L; j += 16) {
      int nj = KMIN(16, L - j);
      for (int i = 0; i < ${Co}; i += 16) {
        int mi = KMIN(16, ${Co} - i);
        const float *a = ap + (size_t)(i / 16) * ${C * 16};
        float *cc = y + (size_t)i * ${N} + j0 + j;
        if (mi == 16 && nj == 16) kiln_pw_tile_16x1(${C}, a, S + j, ${LB}, cc, ${N});
        else {
          kiln_pw_tile_16x1(${C}, a, S + j, ${LB}, tile, 16);
          for (int r = 0; r < mi; r++) memcpy(cc + (size_t)r * ${N}, tile + r * 16, nj * sizeof(float));
        }
      }
      ${epi === 'NULL' ? '' : `${epi}(pp, y + j0 + j, ${N}, 0, ${Co}, j0 + j, nj);`}
    }
  }
}
${exported(`Y${id}_dwpw`, `  int nth = kiln_threads(), per = nth > 1 ? KMIN(${NBANDS}, 4 * nth) : 1, bpt = (${NBANDS} + per - 1) / per;
  per = (${NBANDS} + bpt - 1) / bpt;
  void *q[9] = { a0, a1, a2, a3, a4, a5, a6, (void *)(intptr_t)per, (void *)(intptr_t)bpt };
  kiln_pool_run(dwpw${id}, q, ${nbOr(c, batch)} * per);`)}`;
  return { src, pair: { producer: dw.name, fn: `Y${id}_dwpw`, tactics: ['pw-16x16', 'tconv-16x16'].map((t) => `native-${c.isa}-${t}`) } };
}
