// Data movement on the CPU: Transpose, Concat, Slice and Gather as baked strided copies over the thread pool, and
// Cast to float32, so that they run inside chains of native calls instead of splitting them for a reference kernel.
import { sameDims } from '../../ir/tensor.js';
import { LAYER_ARGS } from './native.js';
import { attrOf, exported, prod, typeOfName, MIN_ELEMENTS, type Ctx, type Gen, type GenResult } from './codegen.js';

/** Transpose: per output row (all axes but the last), the input offset from baked strides, then one loop along the
 * last output axis (a memcpy where that axis is also the input's last). Batch-generic when the leading axis stays. */
export const transpose: Gen = (c, n, ins, out) => {
  const [x] = ins;
  if (!x || !x.length || x.length > 8 || prod(out) < MIN_ELEMENTS) return undefined;
  const r = x.length, perm = attrOf<number[]>(n, 'perm', x.map((_, i) => r - 1 - i));
  if (perm.length !== r || !sameDims(perm.map((a) => x[a]), out)) return undefined;
  const sw = swapForm(x, perm);
  if (sw && sw.A >= 16 && sw.B >= 16) return swapTranspose(c, sw, x[0], !!c.batch?.[0] && perm[0] === 0);
  const inStride = x.map((_, i) => prod(x.slice(i + 1)));
  const st = perm.map((a) => inStride[a]);
  const bt = !!c.batch?.[0] && perm[0] === 0 && r >= 2;
  const inner = out[r - 1], rows = prod(out.slice(0, -1)), per = prod(out.slice(1, -1));
  const terms = out.slice(0, -1).map((_, a) => (a === 0 ? `(row / ${per}) * ${st[0]}L` : `((row / ${prod(out.slice(a + 1, -1))}) % ${out[a]}) * ${st[a]}L`));
  const id = c.id, chunk = Math.max(1, Math.floor(16384 / inner));
  const copy = st[r - 1] === 1 ? `memcpy(yr, xr, ${inner} * sizeof(float));` : `for (int i = 0; i < ${inner}; i++) yr[i] = xr[(long)i * ${st[r - 1]}];`;
  const src = `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  const float *x = q[0]; float *y = q[1];
  long total = (long)(intptr_t)q[2], lo = (long)t * ${chunk}, hi = KMIN(total, lo + ${chunk});
  for (long row = lo; row < hi; row++) {
    const float *xr = x + ${terms.length ? terms.join(' + ') : '0'};
    float *yr = y + row * ${inner};
    ${copy}
  }
}
${exported(`L${id}_tr`, `  long total = ${bt ? `(long)nb * ${per}` : `${rows}L`};
  void *q[3] = { a0, a1, (void *)(intptr_t)total };
  kiln_pool_run(t${id}, q, (int)((total + ${chunk - 1}) / ${chunk}));`)}`;
  return { variants: [{ tactic: `native-${c.isa}-transpose`, fn: `L${id}_tr` }], args: [{ in: 0 }, { out: true }], source: src, batched: bt };
};

/** A permutation that, once consecutive axes moving together are merged, keeps some leading axes and swaps the two
 * groups after them: x = [outer][A][B] -> y = [outer][B][A] (NCHW <-> NHWC, ConvNeXt's permutes). */
function swapForm(x: readonly number[], perm: readonly number[]): { outer: number; A: number; B: number } | undefined {
  let lead = 0;
  while (lead < perm.length && perm[lead] === lead) lead++;
  const rest = perm.slice(lead);
  if (rest.length < 2) return undefined;
  // rest = [k..r-1, lead..k-1] for one split point k: the B group (input axes from k on) first, then the A group
  const k = rest[0];
  const want = [...Array.from({ length: perm.length - k }, (_, i) => k + i), ...Array.from({ length: k - lead }, (_, i) => lead + i)];
  if (k <= lead || want.some((a, i) => a !== rest[i])) return undefined;
  return { outer: prod(x.slice(0, lead)), A: prod(x.slice(lead, k)), B: prod(x.slice(k)) };
}

/** The swap form as 16 x 16 blocks: 16 rows of 16 from the input, transposed in registers (AVX-512 with GCC), stored
 * as 16 rows of the output, so both sides move whole vectors (the row-by-row copy reads one float per cache line);
 * edge blocks element by element. Tasks are blocks of 16 output rows of one outer index. */
function swapTranspose(c: Ctx, sw: { outer: number; A: number; B: number }, batch: number, bt: boolean): GenResult {
  const { outer, A, B } = sw, id = c.id, nbB = Math.ceil(B / 16);
  const src = `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  long o = t / ${nbB}, b0 = (long)(t % ${nbB}) * 16, b1 = KMIN(${B}L, b0 + 16);
  const float *x = (const float *)q[0] + o * ${A * B}L; float *y = (float *)q[1] + o * ${A * B}L;
  long a0 = 0;
#ifdef KILN_TR16
  if (b1 - b0 == 16) for (; a0 + 16 <= ${A}; a0 += 16) {
    vf r[16];
    for (int i = 0; i < 16; i++) r[i] = *(const vfu *)(x + (a0 + i) * ${B}L + b0);
    ktranspose16(r);
    for (int i = 0; i < 16; i++) *(vfu *)(y + (b0 + i) * ${A}L + a0) = r[i];
  }
#endif
  for (long b = b0; b < b1; b++) for (long a = a0; a < ${A}; a++) y[b * ${A}L + a] = x[a * ${B}L + b];
}
${exported(`L${id}_tr`, `  int tasks = ${bt ? `nb * ${outer / batch}` : outer} * ${nbB};
  void *q[2] = { a0, a1 };
  kiln_pool_run(t${id}, q, tasks);`)}`;
  return { variants: [{ tactic: `native-${c.isa}-transpose`, fn: `L${id}_tr` }], args: [{ in: 0 }, { out: true }], source: src, batched: bt, work: outer * A * B };
}

/** Row copies over the pool: row \`o\` of \`total\` copies each part's \`len\` floats from input \`k\` at \`o * srcRow\`
 * (plus a fixed offset) to \`o * dstRow + dstOff\` of the output, at argument \`out\`. Concat and Slice are both this.
 * A task takes whole rows, or where a row is longer than a piece (a batch-1 Concat over channels is one row), one
 * piece of a row: one task for the whole row ran on one thread at 2 threads, and read the half of its inputs that
 * the other core had just written from that core's cache (SqueezeNet's eight Concats: 193 us at 1 thread, 307 at 2). */
function rowCopies(c: Ctx, fn: string, nIn: number, parts: { k: number; srcRow: number; srcOff: string; dstOff: number; len: number }[], dstRow: number, total: string): string {
  const id = c.id, PIECE = 16384;
  if (dstRow > PIECE) {
    // at one thread, one task per row (a 64 KB piece per task measured slower there)
    return `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  float *y = q[${nIn}];
  long pieces = (long)(intptr_t)q[${nIn + 1}], len = (${dstRow}L + pieces - 1) / pieces;
  long o = t / pieces, lo = (t % pieces) * len, hi = KMIN(${dstRow}L, lo + len);
${parts.map((p) => `  if (lo < ${p.dstOff + p.len}L && hi > ${p.dstOff}L) {
    long a = KMAX(lo, ${p.dstOff}L), b = KMIN(hi, ${p.dstOff + p.len}L);
    memcpy(y + o * ${dstRow}L + a, (const float *)q[${p.k}] + o * ${p.srcRow}L + ${p.srcOff} + (a - ${p.dstOff}L), (b - a) * sizeof(float));
  }`).join('\n')}
}
${exported(fn, `  long total = ${total}, pieces = kiln_threads() > 1 ? ${Math.ceil(dstRow / PIECE)} : 1;
  void *q[${nIn + 2}] = { ${Array.from({ length: nIn + 1 }, (_, i) => `a${i}`).join(', ')}, (void *)(intptr_t)pieces };
  kiln_pool_run(t${id}, q, (int)(total * pieces));`)}`;
  }
  const chunk = Math.max(1, Math.floor(PIECE / Math.max(1, dstRow)));
  return `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  float *y = q[${nIn}];
  long total = (long)(intptr_t)q[${nIn + 1}], lo = (long)t * ${chunk}, hi = KMIN(total, lo + ${chunk});
  for (long o = lo; o < hi; o++) {
${parts.map((p) => `    memcpy(y + o * ${dstRow}L + ${p.dstOff}, (const float *)q[${p.k}] + o * ${p.srcRow}L + ${p.srcOff}, ${p.len} * sizeof(float));`).join('\n')}
  }
}
${exported(fn, `  long total = ${total};
  void *q[${nIn + 2}] = { ${Array.from({ length: nIn + 1 }, (_, i) => `a${i}`).join(', ')}, (void *)(intptr_t)total };
  kiln_pool_run(t${id}, q, (int)((total + ${chunk - 1}) / ${chunk}));`)}`;
}

/** Concat: per index of the dims before the axis, each input's block after the next. */
export const concat: Gen = (c, n, ins, out) => {
  const r = out.length;
  let axis = attrOf(n, 'axis', 0);
  if (axis < 0) axis += r;
  if (!ins.length || ins.length > LAYER_ARGS - 1 || axis < 0 || axis >= r || ins.some((d) => !d || d.length !== r) || prod(out) < MIN_ELEMENTS) return undefined;
  const inner = prod(out.slice(axis + 1)), dstRow = out[axis] * inner;
  let off = 0;
  const parts = ins.map((d, k) => {
    const len = d![axis] * inner, p = { k, srcRow: len, srcOff: '0', dstOff: off, len };
    off += len;
    return p;
  }).filter((p) => p.len > 0);
  // batch-generic where every input carries the batch and the axis is after it
  const bt = !!c.batch && axis > 0 && c.batch.every(Boolean);
  const total = bt ? `(long)nb * ${prod(out.slice(1, axis))}` : `${prod(out.slice(0, axis))}L`;
  return { variants: [{ tactic: `native-${c.isa}-concat`, fn: `L${c.id}_cat` }], args: [...ins.map((_, i) => ({ in: i })), { out: true }],
    source: rowCopies(c, `L${c.id}_cat`, ins.length, parts, dstRow, total), batched: bt, work: prod(out) };
};

/** Slice with constant starts/ends/axes and unit steps: a box of the input, copied run by run (a run spans the
 * last axis the slice narrows and every full axis after it). */
export const slice: Gen = (c, n, ins, out) => {
  const x = ins[0];
  if (!x || x.length !== out.length || prod(out) < MIN_ELEMENTS) return undefined;
  const r = x.length;
  const constant = (i: number) => (n.inputs[i] ? c.model.graph.initializers.get(n.inputs[i])?.toNumberArray() : undefined);
  const starts = constant(1), ends = constant(2);
  const axes = constant(3) ?? starts?.map((_, i) => i), steps = constant(4) ?? starts?.map(() => 1);
  if (!starts || !ends || !axes || !steps || steps.some((v) => v !== 1)) return undefined;
  const begin = new Array<number>(r).fill(0);
  axes.forEach((a0, i) => {
    const a = a0 < 0 ? a0 + r : a0;
    const s = starts[i] < 0 ? starts[i] + x[a] : starts[i];
    begin[a] = Math.min(Math.max(s, 0), x[a]);
  });
  if (begin.some((b, a) => b + out[a] > x[a])) return undefined;
  let j = r - 1;
  while (j > 0 && begin[j] === 0 && out[j] === x[j]) j--;
  const stride = x.map((_, a) => prod(x.slice(a + 1)));
  const len = out[j] * stride[j];
  const rows = prod(out.slice(0, j));
  // source offset of row o: its index along each axis before j, shifted by the slice's start there
  const terms = out.slice(0, j).map((_, a) => `((o / ${prod(out.slice(a + 1, j))}) % ${out[a]} + ${begin[a]}) * ${stride[a]}L`);
  const srcOff = [...terms, `${begin[j] * stride[j]}L`].join(' + ');
  // rowCopies adds o * srcRow; with srcRow 0 the whole offset comes from the terms
  const source = rowCopies(c, `L${c.id}_sl`, 1, [{ k: 0, srcRow: 0, srcOff, dstOff: 0, len }], len, `${rows}L`);
  return { variants: [{ tactic: `native-${c.isa}-slice`, fn: `L${c.id}_sl` }], args: [{ in: 0 }, { out: true }], source, work: prod(out) };
};

/** The error code a layer function records for bad run-time data (kiln_set_error): its layer number + 1, for the
 * Gather functions below (\`L<id>_ga\`); undefined for functions that never record one. */
export function errorCodeOf(fn: string): number | undefined {
  const m = /^L(\d+)_ga$/.exec(fn);
  return m ? Number(m[1]) + 1 : undefined;
}

/** Gather: row \`i\` of the indices picks a block of \`inner\` floats along \`axis\` (negative indices count from the
 * end). Indices are read at run time (a model's token ids); one out of range zeroes its block and records the layer
 * (kiln_set_error, code = layer number + 1), which the runner raises as this node's error. Batch-generic along the
 * indices' leading axis (axis 0: embeddings) or the data's (a later axis). */
export const gather: Gen = (c, n, ins, out) => {
  const [x, idx] = ins;
  const r = x?.length ?? 0;
  let axis = attrOf(n, 'axis', 0);
  if (axis < 0) axis += r;
  if (!x || !idx || axis < 0 || axis >= r || out.length !== r - 1 + idx.length || prod(out) < MIN_ELEMENTS) return undefined;
  const idxType = typeOfName(c, n.inputs[1])?.dtype === 'int32' ? 'int32_t' : 'int64_t';
  const dim = x[axis], inner = prod(x.slice(axis + 1)), nIdx = prod(idx);
  // batch-generic: the indices carry the batch (axis 0), or the data does and the axis is after it
  const bt = !!c.batch && ((axis === 0 && !!c.batch[1] && idx.length > 0) || (axis > 0 && !!c.batch[0]));
  const outer = bt && axis > 0 ? `(long)nb * ${prod(x.slice(1, axis))}` : `${prod(x.slice(0, axis))}L`;
  const count = bt && axis === 0 ? `(long)nb * ${prod(idx.slice(1))}` : `${nIdx}L`;
  const id = c.id, fn = `L${id}_ga`, code = errorCodeOf(fn)!, chunk = Math.max(1, Math.floor(16384 / Math.max(1, inner)));
  const source = `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  const float *x = q[0]; const ${idxType} *ix = q[1]; float *y = q[2];
  long count = (long)(intptr_t)q[3], total = (long)(intptr_t)q[4], lo = (long)t * ${chunk}, hi = KMIN(total, lo + ${chunk});
  for (long row = lo; row < hi; row++) {
    long o = row / count, i = row % count;
    int64_t k = (int64_t)ix[i];
    if (k < 0) k += ${dim};
    float *yr = y + row * ${inner}L;
    if (k < 0 || k >= ${dim}) { memset(yr, 0, ${inner} * sizeof(float)); kiln_set_error(${code}); continue; }
    memcpy(yr, x + (o * ${dim}L + k) * ${inner}L, ${inner} * sizeof(float));
  }
}
${exported(fn, `  long count = ${count}, total = ${outer} * count;
  void *q[5] = { a0, a1, a2, (void *)(intptr_t)count, (void *)(intptr_t)total };
  kiln_pool_run(t${id}, q, (int)((total + ${chunk - 1}) / ${chunk}));`)}`;
  return { variants: [{ tactic: `native-${c.isa}-gather`, fn }], args: [{ in: 0 }, { in: 1 }, { out: true }], source, batched: bt, work: prod(out) };
};

/** Cast of integer or bool data to float32 (an attention mask on its way to the additive bias). */
export const cast: Gen = (c, n, ins, out) => {
  const [x] = ins;
  const from = { int64: 'int64_t', int32: 'int32_t', bool: 'uint8_t', uint8: 'uint8_t', int8: 'int8_t' }[typeOfName(c, n.inputs[0])?.dtype ?? ''];
  if (!x || !from || !sameDims(x, out) || prod(out) < MIN_ELEMENTS) return undefined;
  const id = c.id, chunk = 16384, bt = !!c.batch?.[0] && x.length > 0;
  const total = bt ? `(long)nb * ${prod(out.slice(1))}` : `${prod(out)}L`;
  const source = `static void t${id}(void *ctx, int t) {
  void *const *q = ctx;
  const ${from} *x = q[0]; float *y = q[1];
  long total = (long)(intptr_t)q[2], lo = (long)t * ${chunk}, hi = KMIN(total, lo + ${chunk});
  for (long i = lo; i < hi; i++) y[i] = (float)x[i];
}
${exported(`L${id}_cast`, `  long total = ${total};
  void *q[3] = { a0, a1, (void *)(intptr_t)total };
  kiln_pool_run(t${id}, q, (int)((total + ${chunk - 1}) / ${chunk}));`)}`;
  return { variants: [{ tactic: `native-${c.isa}-cast`, fn: `L${id}_cast` }], args: [{ in: 0 }, { out: true }], source, batched: bt, work: prod(out) };
};
