// Per-variant kernel speed for a zoo model's convolution, matmul, attention and pooling layers: every native variant the
// builder could choose (GEMM tiles, im2col vs direct convolution) timed by the process's CPU time (robust to other jobs
// taking the cores, unlike wall time; one thread, output buffer reused), with GFLOP/s, or for pools (memory-bound) the
// input's GB/s. Usage: npx tsx bench/cpu/variants.ts <model> [batch] [top]
//   [--tactic=S] (only variants whose name contains S, e.g. depthwise or pool)
import { ZOO } from '../models/zoo.js';
import { optimize } from '../../src/passes/pipeline.js';
import { inferShapes } from '../../src/passes/infer.js';
import { executeGraph } from '../../src/ops/execute.js';
import { randomTensor, seededRandom } from '../../src/ir/builder.js';
import { TensorData, type Value } from '../../src/ir/tensor.js';
import { cpuBackend } from '../../src/backends/cpu/index.js';
import { layerArgs, runBatch, type LayerMeta } from '../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../src/backends/cpu/native.js';

/** The parts of build.ts's (unexported) NativeTactic this bench reaches into. */
interface NativeTacticView { build: { lib: NativeLibrary }; kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>; variant: { fn: string }; packed: unknown }

const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const only = process.argv.find((a) => a.startsWith('--tactic='))?.slice(9) ?? '';
const name = argv[0] ?? 'tiny-cnn';
const batch = Number(argv[1] ?? 1);
const top = Number(argv[2] ?? 12);
const m = ZOO.find((z) => z.name === name)!.full();
const r = seededRandom(1);
const shapes = new Map<string, number[]>();
const feeds = new Map<string, Value>();
for (const i of m.graph.inputs) {
  if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
  const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? 128 : batch));
  shapes.set(i.name, dims);
  feeds.set(i.name, i.type.dtype === 'float32' ? randomTensor(r, dims, 1)
    : new TensorData('int64', dims, BigInt64Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => BigInt(Math.floor(r() * 100)))));
}
for (const i of m.graph.inputs) if (shapes.has(i.name) && i.type.kind === 'tensor') i.type = { ...i.type, shape: shapes.get(i.name)! };
await optimize(m, { inputShapes: shapes });
inferShapes(m.graph, m.opsets);
const values = executeGraph(m.graph, feeds, { opsets: m.opsets, keepAll: true });
const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
// per layer: its work (GFLOP, or for a pool GB of input read once) and the CPU ms of each variant
const rows: { node: string; shape: string; amount: number; unit: string; times: [string, number][] }[] = [];
for (const node of m.graph.nodes) {
  const isPool = /Pool$/.test(node.opType);
  if (!isPool && node.opType !== 'FusedConv' && node.opType !== 'FusedMatMul' && node.opType !== 'Attention') continue;
  const tactics = cpuBackend.tactics(node, m, typeOf).filter((t) => t.name !== 'reference' && t.name.includes(only));
  if (!tactics.length) continue;
  const ins = node.inputs.map((x) => (x ? values.get(x) : undefined));
  const out = values.get(node.outputs[0]) as TensorData, w = m.graph.initializers.get(node.inputs[1]);
  // attention: Q K^T and P V, 2 * S * L * (D + DV) per (batch, head), L read off V
  const v = ins[2] as TensorData | undefined;
  const amount = isPool ? ((ins[0] as TensorData).size * 4) / 1e9 : !w ? (2 * out.size * (v ? v.dims[v.dims.length - 2] : 0) * 2) / 1e9
    : (2 * out.size * w.size) / (node.opType === 'FusedConv' ? out.dims[1] : out.dims[out.dims.length - 1]) / 1e9;
  const times: [string, number][] = [];
  for (const t of tactics) {
    await t.run(node, ins, m.opsets); // builds the library, packs the weights
    // call the library directly on one output buffer: a fresh multi-MB array per call would time the allocator and GC
    const nt = t as unknown as NativeTacticView;
    const buf = new Float32Array(out.size);
    const args = layerArgs(nt.kernel.args, ins, nt.packed, buf);
    const nb = runBatch(nt.kernel, ins)!;
    const reps = Math.max(3, Math.min(200, Math.ceil((isPool ? 0.002 : 0.05) / amount)));
    nt.build.lib.threads(1);
    nt.build.lib.callSync(nt.variant.fn, args, nb);
    const c0 = process.cpuUsage();
    for (let k = 0; k < reps; k++) nt.build.lib.callSync(nt.variant.fn, args, nb);
    const c = process.cpuUsage(c0);
    times.push([t.name.replace(/^native-\w+?-/, ''), (c.user + c.system) / 1000 / reps]);
  }
  rows.push({ node: node.name, shape: `[${(ins[0] as TensorData).dims.join(',')}] -> [${out.dims.join(',')}]`, amount, unit: isPool ? 'GB/s' : 'GFLOP/s', times });
}
rows.sort((a, b) => Math.min(...b.times.map((t) => t[1])) - Math.min(...a.times.map((t) => t[1])));
console.log(`${name} batch ${batch}: CPU ms per call (GFLOP/s, or GB/s for pools) per variant, slowest layers first`);
for (const row of rows.slice(0, top)) {
  console.log(`  ${row.node.padEnd(44)} ${row.shape.padEnd(34)} ${row.times.map(([t, ms]) => `${t} ${ms.toFixed(3)} (${(row.amount / ms * 1e3).toFixed(0)} ${row.unit})`).join('  ')}`);
}
