// Replayed runs (src/backends/cpu/replay.ts) against the executor's walk, paired in one process: the same plan loaded
// twice, replay on and off (KILN_REPLAY=0), their runs alternating. The plan is built once and kept in /tmp.
// Usage: npx tsx bench/cpu/replay-ab.ts <model|real:name> [threads, e.g. 1,2] [pairs]
import { ZOO } from '../models/zoo.js';
import { Engine } from '../../src/runtime/engine.js';
import { build } from '../../src/build/builder.js';
import { asTensors, zooInputs } from './inputs.js';
import { loadReal } from '../real/models.js';
import fs from 'node:fs';
const name = process.argv[2] ?? 'mobilenet-v2';
const threads = (process.argv[3] ?? '1,2').split(',').map(Number);
const runs = Number(process.argv[4] ?? 100);
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { feeds, shapes } = zooInputs(m);
const pf = `/tmp/ab-${name.replace(':', '_')}.plan`;
let bytes: Uint8Array;
if (fs.existsSync(pf)) bytes = fs.readFileSync(pf); else { bytes = (await build(m, { shapes })).bytes; fs.writeFileSync(pf, bytes); }
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
for (const t of threads) {
  const a = await Engine.load(bytes, { intraOpNumThreads: t });
  process.env.KILN_REPLAY = '0';
  const b = await Engine.load(bytes, { intraOpNumThreads: t });
  delete process.env.KILN_REPLAY;
  const ca = a.createContext(), cb = b.createContext(); const kf = asTensors(feeds);
  const ta: number[] = [], tb: number[] = [], r: number[] = [];
  for (let i = 0; i < runs + 5; i++) {
    let s = performance.now(); await ca.run(kf); const x = performance.now() - s;
    s = performance.now(); await cb.run(kf); const y = performance.now() - s;
    if (i >= 5) { ta.push(x); tb.push(y); r.push(x / y); }
  }
  console.log(`${name} ${t}T: replay ${med(ta).toFixed(2)} (min ${Math.min(...ta).toFixed(2)}) / executor ${med(tb).toFixed(2)} (min ${Math.min(...tb).toFixed(2)}) ms, paired ratio median ${med(r).toFixed(3)}; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
  a.dispose(); b.dispose();
}
