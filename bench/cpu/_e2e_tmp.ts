import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { seededRandom } from '../../src/ir/builder.js';
const name = process.argv[2], threads = Number(process.argv[3] ?? 1);
const m = ZOO.find((z) => z.name === name)!.full();
const r = seededRandom(5);
const shapes: Record<string, number[]> = {};
const feeds: Record<string, Tensor> = {};
for (const i of m.graph.inputs) {
  if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
  const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? 128 : 1));
  const n = dims.reduce((a, b) => a * b, 1);
  shapes[i.name] = dims;
  feeds[i.name] = i.type.dtype === 'float32' ? new Tensor('float32', Float32Array.from({ length: n }, () => r() * 2 - 1), dims)
    : new Tensor('int64', BigInt64Array.from({ length: n }, () => (i.name.includes('mask') ? 1n : BigInt(Math.floor(r() * 1000)))), dims);
}
const plan = await build(m, { shapes });
const engine = await Engine.load(plan, { intraOpNumThreads: threads });
const ctx = engine.createContext();
for (let k = 0; k < 3; k++) await ctx.run(feeds);
const t: number[] = [];
for (let k = 0; k < 11; k++) { const s = performance.now(); await ctx.run(feeds); t.push(performance.now() - s); }
t.sort((a, b) => a - b);
console.log(name, threads, 'median', t[5].toFixed(1), 'min', t[0].toFixed(1));
engine.dispose();
