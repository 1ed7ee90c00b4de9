// Whether two saved plans of one zoo model (e.g. int8 plans built by two trees, bench/quant/int8-plan.ts) give
// bit-identical outputs on the same seeded inputs: int8 kernels are exact, so a faster packing or epilogue must not
// change a single bit. Usage: npx tsx bench/quant/plans-equal.ts <model> <planA> <planB> [threads]
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { randomCalibrationData } from '../../src/quant/data.js';

const [name = 'resnet50', fileA, fileB, threads = '1'] = process.argv.slice(2);
if (!fileA || !fileB) throw new Error('usage: plans-equal.ts <model> <planA> <planB> [threads]');
const m = ZOO.find((z) => z.name === name)!.full();
const outs: Uint8Array[][] = [];
for (const f of [fileA, fileB]) {
  const engine = await Engine.load(fs.readFileSync(f), { intraOpNumThreads: Number(threads) });
  const ctx = engine.createContext();
  const got: Uint8Array[] = [];
  for (let seed = 1; seed <= 3; seed++) {
    const feeds = Object.fromEntries([...randomCalibrationData(m.graph, 1, { seed: 100 + seed })].map(([k, t]) => [k, new Tensor('float32', t.data as Float32Array, [...t.dims])]));
    for (const v of Object.values(await ctx.run(feeds))) { const d = (v as Tensor).data as Float32Array; got.push(new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength))); }
  }
  engine.dispose();
  outs.push(got);
}
const same = outs[0].length === outs[1].length && outs[0].every((a, i) => Buffer.from(a).equals(Buffer.from(outs[1][i])));
console.log(`${name}: ${outs[0].length} outputs over 3 inputs, ${same ? 'bit-identical' : 'DIFFERENT'}`);
if (!same) process.exitCode = 1;
