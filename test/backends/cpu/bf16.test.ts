// The bf16 math mode's variants (bf16.ts, kernels/bf16.c.ts), forced one by one, against plain JS: pointwise (input
// read in place), implicit-GEMM (im2col panels) and transposed (channel-pair words) convolutions and MatMuls
// (activations rounded into panels per call) with odd channel counts and K (an odd last K pair), partial tiles, strides
// and pads, bias / residual / Relu / Relu6 epilogues (fused in the GEMM tiles' stores), the accumulate-in-place mode,
// batches of 1 to 3, one and two threads. Plus the plumbing: a bf16 CPU build keeps its graph fp32, records
// bf16 in the plan and runs. Skipped on hosts without AVX-512 BF16 (the kernels would not be offered).
//
// Tolerance: bf16 keeps 8 significant bits, so rounding a weight and an activation each moves it by at most 2^-9
// relative and their product by at most ~2^-8 (2^-9 + 2^-9 + 2^-18); the fp32 accumulation adds ~K * 2^-24. An
// output sum_k w_k x_k is thus off by at most 2^-8 * sum_k |w_k x_k| (times 1.01 for the rest), computed here per output
// from the same loops: a worst-case bound, not a statistical one, and about sqrt(K) times the typical error.
import { describe, it, expect } from 'vitest';
import type { Model, Node, ValueType } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { hostBf16 } from '../../../src/backends/cpu/bf16.js';
import { layerArgs, runBatch, type LayerMeta } from '../../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../../src/backends/cpu/native.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { convModel, convOutSize, type ConvCase } from './conv-model.js';

/** The parts of build.ts's (unexported) NativeTactic this test reaches into. */
interface NativeTacticView {
  build: { lib: NativeLibrary };
  kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>;
  variant: { fn: string; accumulate?: boolean };
  packed: unknown;
}

/** The case's convolution in plain JS (fp32 sums in float64): the expected output and, per output, sum |w x| + |bias|. */
function reference(k: ConvCase, w: Float32Array, bias: Float32Array | undefined, x: Float32Array, res: Float32Array | undefined): { want: Float32Array; mag: Float32Array } {
  const [OH, OW] = convOutSize(k), [kh, kw] = k.k, N = OH * OW;
  const want = new Float32Array(k.batch * k.Co * N), mag = new Float32Array(want.length);
  for (let b = 0; b < k.batch; b++) {
    for (let co = 0; co < k.Co; co++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          let s = bias ? bias[co] : 0, a = bias ? Math.abs(bias[co]) : 0;
          for (let ci = 0; ci < k.C; ci++) {
            for (let i = 0; i < kh; i++) {
              const h = oh * k.s - k.pads[0] + i;
              if (h < 0 || h >= k.H) continue;
              for (let j = 0; j < kw; j++) {
                const ww = ow * k.s - k.pads[1] + j;
                if (ww < 0 || ww >= k.W) continue;
                const p = w[((co * k.C + ci) * kh + i) * kw + j] * x[((b * k.C + ci) * k.H + h) * k.W + ww];
                s += p;
                a += Math.abs(p);
              }
            }
          }
          const o = (b * k.Co + co) * N + oh * OW + ow;
          if (res) s += res[o];
          want[o] = k.act === 'relu' ? Math.max(0, s) : k.act === 'relu6' ? Math.min(6, Math.max(0, s)) : s;
          mag[o] = a;
        }
      }
    }
  }
  return { want, mag };
}

/** Worst |got - want| over its bound (module comment): below 1 passes; and the error's regression on the output,
 * sum (got - want) want / sum want^2: rounding to nearest even leaves it near 0 (errors of either sign), while
 * truncating one operand shrinks every product by 2^-9 on average, a slope near -2^-9 the bound alone would miss. */
function errorStats(got: Float32Array, want: Float32Array, mag: Float32Array): { worst: number; slope: number } {
  let worst = 0, ey = 0, yy = 0;
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1.01 * 2 ** -8 * mag[i] + 1e-6 * Math.abs(want[i]) + 1e-30));
    ey += (got[i] - want[i]) * want[i];
    yy += want[i] * want[i];
  }
  return { worst, slope: ey / yy };
}

function expectWithinBf16(errors: Map<string, { worst: number; slope: number }>, name: string) {
  expect(errors.size, name).toBeGreaterThan(0);
  for (const [t, e] of errors) {
    expect(e.worst, t).toBeLessThan(1);
    expect(Math.abs(e.slope), t).toBeLessThan(2 ** -11);
  }
}

/** Every bf16 variant of `node` at each thread count, plain and (with a residual) accumulating in place: worst error
 * over its bound per tactic and thread count. */
async function variantErrors(node: Node, m: Model, typeOf: (n: string) => ValueType | undefined, ins: (Value | undefined)[], want: Float32Array,
  mag: Float32Array, res: Float32Array | undefined, threadList: number[]): Promise<Map<string, { worst: number; slope: number }>> {
  const errors = new Map<string, { worst: number; slope: number }>();
  for (const t of cpuBackend.tactics(node, m, typeOf, 'bf16')) {
    if (!t.name.includes('-bf16-')) continue;
    const nt = t as unknown as NativeTacticView;
    await t.run(node, ins, m.opsets); // packs the weights
    for (const threads of threadList) {
      nt.build.lib.threads(threads);
      const out = new Float32Array(want.length);
      nt.build.lib.callSync(nt.variant.fn, layerArgs(nt.kernel.args, ins, nt.packed as never, out), runBatch(nt.kernel, ins)!);
      errors.set(`${t.name} (${threads} thread(s))`, errorStats(out, want, mag));
      if (nt.variant.accumulate) {
        const buf = Float32Array.from(res!);
        const args = layerArgs(nt.kernel.args, ins, nt.packed as never, buf);
        args[3] = buf;
        nt.build.lib.callSync(nt.variant.fn, args, runBatch(nt.kernel, ins)!);
        errors.set(`${t.name} accumulate (${threads} thread(s))`, errorStats(buf, want, mag));
      }
    }
  }
  return errors;
}

const CASES: [string, ConvCase][] = [
  ['pointwise, odd K and channels, bias relu', { batch: 1, C: 37, H: 9, W: 13, Co: 29, k: [1, 1], s: 1, pads: [0, 0, 0, 0], bias: true, res: false, act: 'relu' }],
  ['pointwise, residual, 3 images', { batch: 3, C: 64, H: 7, W: 7, Co: 48, k: [1, 1], s: 1, pads: [0, 0, 0, 0], bias: true, res: true, act: 'relu' }],
  ['pointwise, long K, no bias', { batch: 1, C: 600, H: 14, W: 14, Co: 40, k: [1, 1], s: 1, pads: [0, 0, 0, 0], bias: false, res: false, act: 'none' }],
  ['3 x 3 pad 1, relu6', { batch: 1, C: 13, H: 11, W: 17, Co: 24, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu6' }],
  ['1 x 1 stride 2 (a downsample), residual, 3 images', { batch: 3, C: 33, H: 15, W: 15, Co: 64, k: [1, 1], s: 2, pads: [0, 0, 0, 0], bias: true, res: true, act: 'none' }],
  ['7 x 7 stride 2 stem, asymmetric pads', { batch: 1, C: 3, H: 23, W: 29, Co: 16, k: [7, 7], s: 2, pads: [3, 2, 3, 3], bias: true, res: false, act: 'relu' }],
  ['3 x 3 stride 2 pad 1 to 7 x 7, residual, 2 images', { batch: 2, C: 31, H: 13, W: 13, Co: 64, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: true, act: 'relu' }],
  ['3 x 3 pad 1, odd width, no bias', { batch: 1, C: 20, H: 9, W: 19, Co: 32, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: false, res: false, act: 'none' }],
];

interface MatMulCase { lead: number[]; K: number; N: number; transB: boolean; bias: boolean; res: boolean; relu: boolean }

const MATMULS: [string, MatMulCase][] = [
  ['MatMul [2, 37, 45] x [45, 70] (odd K), bias, residual, relu', { lead: [2, 37], K: 45, N: 70, transB: false, bias: true, res: true, relu: true }],
  ['Gemm transB [19, 300] x [100, 300]^T, bias', { lead: [19], K: 300, N: 100, transB: true, bias: true, res: false, relu: false }],
  ['MatMul, one row [1, 768] x [768, 64]', { lead: [1], K: 768, N: 64, transB: false, bias: false, res: false, relu: false }],
];

const data = (v: Value) => (v as TensorData).data as Float32Array;

interface Layer { ins: (Value | undefined)[]; want: Float32Array; mag: Float32Array; res?: Float32Array }

/** Every case of a list as one layer of one model (one library to compile): case i reads x{i} (and res{i}); \`add\`
 * adds its ops and returns its output and the expected values. The model's fused layer reading x{i}, per case. */
async function layersOf<K>(cases: [string, K][], add: (b: GraphBuilder, k: K, i: number, x: TensorData) => { y: string; res?: TensorData; want: Float32Array; mag: Float32Array }, xDims: (k: K) => number[]) {
  const b = new GraphBuilder('bf16layers');
  const feeds = new Map<string, Value>();
  const parts = cases.map(([, k], i) => {
    const x = randomTensor(seededRandom(200 + i), xDims(k), 1);
    feeds.set(`x${i}`, x);
    b.input(`x${i}`, 'float32', xDims(k));
    const part = add(b, k, i, x);
    if (part.res) feeds.set(`res${i}`, part.res);
    b.output(part.y);
    return part;
  });
  const m = b.model(17);
  await optimize(m, { inputShapes: new Map([...feeds].map(([n, v]) => [n, [...(v as TensorData).dims]])) });
  inferShapes(m.graph, m.opsets);
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((q) => q.name === n)?.type;
  return parts.map((part, i): Layer & { node: Node; m: Model; typeOf: typeof typeOf } => {
    const node = m.graph.nodes.find((n) => n.inputs[0] === `x${i}`)!;
    const ins = node.inputs.map((n) => (!n ? undefined : feeds.get(n) ?? m.graph.initializers.get(n)));
    return { node, m, typeOf, ins, want: part.want, mag: part.mag, res: part.res && data(part.res) };
  });
}

const convLayers = () => layersOf(CASES, (b, k, i, x) => {
  const r = seededRandom(100 + i);
  const w = randomTensor(r, [k.Co, k.C, ...k.k], 0.3), bias = randomTensor(r, [k.Co], 0.5);
  let h = b.op('Conv', [`x${i}`, b.initializer(`w${i}`, w), ...(k.bias ? [b.initializer(`b${i}`, bias)] : [])], { kernel_shape: k.k, pads: k.pads, strides: [k.s, k.s] }, `conv${i}`);
  const [OH, OW] = convOutSize(k);
  const res = k.res ? randomTensor(seededRandom(300 + i), [k.batch, k.Co, OH, OW], 1) : undefined;
  if (res) h = b.op('Add', [h, b.input(`res${i}`, 'float32', [...res.dims])], {}, `add${i}`);
  if (k.act === 'relu') h = b.op('Relu', [h], {}, `relu${i}`);
  if (k.act === 'relu6') {
    h = b.op('Clip', [h, b.initializer(`lo${i}`, new TensorData('float32', [], Float32Array.of(0))), b.initializer(`hi${i}`, new TensorData('float32', [], Float32Array.of(6)))], {}, `relu6${i}`);
  }
  return { y: h, res, ...reference(k, data(w), k.bias ? data(bias) : undefined, data(x), res && data(res)) };
}, (k) => [k.batch, k.C, k.H, k.W]);

/** x [...lead, K] times constant weights ([K, N], or [N, K] through Gemm's transB), + bias, + a residual input, Relu. */
const matmulLayers = () => layersOf(MATMULS, (b, k, i, x) => {
  const r = seededRandom(k.K * 7 + k.N);
  const w = randomTensor(r, k.transB ? [k.N, k.K] : [k.K, k.N], 0.3), bias = randomTensor(r, [k.N], 0.5);
  let h = k.transB ? b.op('Gemm', [`x${i}`, b.initializer(`w${i}`, w), ...(k.bias ? [b.initializer(`b${i}`, bias)] : [])], { transB: 1 }, `mm${i}`)
    : b.op('MatMul', [`x${i}`, b.initializer(`w${i}`, w)], {}, `mm${i}`);
  if (k.bias && !k.transB) h = b.op('Add', [h, b.initializer(`b${i}`, bias)], {}, `bias${i}`);
  const res = k.res ? randomTensor(seededRandom(300 + i), [...k.lead, k.N], 1) : undefined;
  if (res) h = b.op('Add', [h, b.input(`res${i}`, 'float32', [...res.dims])], {}, `add${i}`);
  if (k.relu) h = b.op('Relu', [h], {}, `relu${i}`);
  const M = k.lead.reduce((a, v) => a * v, 1), { K, N } = k, xs = data(x), ws = data(w), bs = k.bias ? data(bias) : undefined, rs = res && data(res);
  const want = new Float32Array(M * N), mag = new Float32Array(M * N);
  for (let q = 0; q < M; q++) {
    for (let j = 0; j < N; j++) {
      let s = bs ? bs[j] : 0, a = bs ? Math.abs(bs[j]) : 0;
      for (let kk = 0; kk < K; kk++) {
        const p = xs[q * K + kk] * ws[k.transB ? j * K + kk : kk * N + j];
        s += p;
        a += Math.abs(p);
      }
      if (rs) s += rs[q * N + j];
      want[q * N + j] = k.relu ? Math.max(0, s) : s;
      mag[q * N + j] = a;
    }
  }
  return { y: h, res, want, mag };
}, (k) => [...k.lead, k.K]);

describe.skipIf(!findCompiler() || !hostBf16())('bf16 math mode variants (needs AVX-512 BF16)', () => {
  // one model (one library) per list, built by the first test that needs it
  let convs: ReturnType<typeof convLayers> | undefined, matmuls: ReturnType<typeof matmulLayers> | undefined;
  CASES.forEach(([name], i) => {
    it(`conv ${name}: every tile within the bf16 bound at 1 and 2 threads`, async () => {
      const l = (await (convs ??= convLayers()))[i];
      expectWithinBf16(await variantErrors(l.node, l.m, l.typeOf, l.ins, l.want, l.mag, l.res, [1, 2]), name);
    }, 240_000);
  });
  MATMULS.forEach(([name], i) => {
    it(`${name}: every tile within the bf16 bound at 1 and 2 threads`, async () => {
      const l = (await (matmuls ??= matmulLayers()))[i];
      expectWithinBf16(await variantErrors(l.node, l.m, l.typeOf, l.ins, l.want, l.mag, l.res, [1, 2]), name);
    }, 240_000);
  });

  it('a bf16 CPU build keeps the graph fp32, records bf16 and agrees with the fp32 build', async () => {
    const k: ConvCase = { batch: 1, C: 64, H: 14, W: 14, Co: 128, k: [1, 1], s: 1, pads: [0, 0, 0, 0], bias: true, res: false, act: 'relu' };
    const { m, inputs } = await convModel(k, 5, 'bf16build');
    const [p32, p16] = [await build(m, { precision: 'fp32' }), await build(m, { precision: 'bf16' })];
    expect(p16.header.precision).toBe('bf16');
    const layer = p16.header.layers.find((l) => l.opType === 'FusedConv')!;
    // the builder times bf16 against fp32: either may win, the plan says which
    expect(layer.precision).toBe(layer.tactic.includes('-bf16-') ? 'bf16' : 'fp32');
    expect(p16.header.inputs[0].dtype).toBe('float32');
    const run = async (p: typeof p32) => {
      const e = await Engine.load(p, { intraOpNumThreads: 2 });
      const feeds = Object.fromEntries([...inputs].map(([n, v]) => [n, new Tensor('float32', (v as TensorData).data as Float32Array, [...(v as TensorData).dims])]));
      const out = await e.createContext().run(feeds);
      e.dispose();
      return Object.values(out)[0] as { data: Float32Array };
    };
    const [a, b] = [await run(p32), await run(p16)];
    let err = 0, scale = 0;
    for (let i = 0; i < a.data.length; i++) { err = Math.max(err, Math.abs(a.data[i] - b.data[i])); scale = Math.max(scale, Math.abs(a.data[i])); }
    expect(err / scale).toBeLessThan(2 ** -8 * 8);
  }, 120_000);
});
