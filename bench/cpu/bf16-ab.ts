// The bf16 math mode's convolution variants (bf16.ts) against the fp32 ones of the same layer, paired: every variant
// the builder would time in a bf16 build, called round-robin in one process through the real library (so load from
// other processes hits all alike), hot, at the given thread count. Prints per variant the median µs and GFLOP/s, and
// for each the median of per-round ratios to the best fp32 variant.
// Geometry: C,H,W,Co,k,stride,pad[,batch] (square window, bias, ReLU epilogue).
// Usage: npx tsx bench/cpu/bf16-ab.ts C,H,W,Co,k,s,p[,b] ... [--threads=N] [--reps=N]
import type { Node } from '../../src/ir/graph.js';
import type { Value } from '../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { optimize } from '../../src/passes/pipeline.js';
import { inferShapes } from '../../src/passes/infer.js';
import { cpuBackend } from '../../src/backends/cpu/index.js';
import { layerArgs, runBatch, type LayerMeta } from '../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../src/backends/cpu/native.js';

interface NativeTacticView { build: { lib: NativeLibrary }; kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>; variant: { fn: string }; packed: unknown }

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const flag = (k: string, d: string) => flags.find((f) => f.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const threads = Number(flag('threads', '1')), reps = Number(flag('reps', '100'));
const geoms = process.argv.slice(2).filter((a) => !a.startsWith('--')).map((g) => g.split(',').map(Number));
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

for (const [C, H, W, Co, k, s, p, batch = 1] of geoms) {
  const r = seededRandom(1);
  const b = new GraphBuilder('conv');
  const x = b.input('x', 'float32', [batch, C, H, W]);
  const conv = b.op('Conv', [x, b.initializer('w', randomTensor(r, [Co, C, k, k], 0.3)), b.initializer('b', randomTensor(r, [Co], 0.1))],
    { kernel_shape: [k, k], pads: [p, p, p, p], strides: [s, s] }, 'conv');
  b.output(b.op('Relu', [conv], {}, 'relu'));
  const m = b.model(17);
  await optimize(m, { inputShapes: new Map([['x', [batch, C, H, W]]]) });
  inferShapes(m.graph, m.opsets);
  const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((q) => q.name === n)?.type;
  const ins: (Value | undefined)[] = node.inputs.map((n, i) => (!n ? undefined : i === 0 ? randomTensor(seededRandom(2), [batch, C, H, W], 1) : m.graph.initializers.get(n)));
  const tactics = cpuBackend.tactics(node, m, typeOf, 'bf16');
  const calls = await Promise.all(tactics.map(async (t) => {
    await t.run(node as Node, ins, m.opsets); // packs the weights
    const nt = t as unknown as NativeTacticView;
    const out = new Float32Array(nt.kernel.outDims.reduce((a, v) => a * v, 1));
    const args = layerArgs(nt.kernel.args, ins, nt.packed as never, out);
    return { name: t.name.replace(/^native-\w+?-/, ''), call: () => nt.build.lib.callSync(nt.variant.fn, args, runBatch(nt.kernel, ins)!), lib: nt.build.lib };
  }));
  calls[0].lib.threads(threads);
  const times = calls.map(() => [] as number[]);
  for (let i = 0; i < reps + 5; i++) {
    calls.forEach((c, j) => {
      const t0 = performance.now();
      c.call();
      if (i >= 5) times[j].push((performance.now() - t0) * 1000);
    });
  }
  const OH = Math.floor((H + 2 * p - k) / s) + 1, OW = Math.floor((W + 2 * p - k) / s) + 1;
  const flop = 2 * batch * Co * OH * OW * C * k * k;
  const fp32 = calls.map((c, j) => ({ c, j })).filter(({ c }) => !c.name.includes('bf16'));
  const best = fp32.reduce((a, v) => (med(times[v.j]) < med(times[a.j]) ? v : a)).j;
  console.log(`${C}x${H}x${W} -> ${Co} k${k} s${s} p${p} batch ${batch}, ${threads} thread(s), ${reps} rounds; ratios to ${calls[best].name}`);
  calls.forEach((c, j) => {
    const ratio = med(times[j].map((t, i) => t / times[best][i]));
    console.log(`  ${c.name.padEnd(28)} ${med(times[j]).toFixed(1).padStart(8)} us  ${(flop / med(times[j]) / 1e3).toFixed(1).padStart(6)} GFLOP/s  x${ratio.toFixed(3)}`);
  });
}
