import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
const name = process.argv[2], threads = Number(process.argv[3] ?? 1);
const m = ZOO.find((z) => z.name === name)!.full();
const i = m.graph.inputs[0]; const dims = (i.type as any).shape.map((d: any) => typeof d === 'number' ? d : 1);
const plan = await build(m, { shapes: { [i.name]: dims } });
const engine = await Engine.load(plan, { intraOpNumThreads: threads });
const ctx = engine.createContext();
const x = new Tensor('float32', Float32Array.from({ length: dims.reduce((a: number, b: number) => a * b, 1) }, () => Math.random()), dims);
for (let k = 0; k < 3; k++) await ctx.run({ [i.name]: x });
const t: number[] = [];
for (let k = 0; k < 15; k++) { const s = performance.now(); await ctx.run({ [i.name]: x }); t.push(performance.now() - s); }
t.sort((a, b) => a - b);
console.log(name, threads, 'median', t[7].toFixed(1), 'min', t[0].toFixed(1), process.env.HACK ? 'HACK' : '');
engine.dispose();
