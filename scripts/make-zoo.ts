// Writes every model-zoo model, full size and small size, to a folder (default bench/models/out/, git-ignored).
// Run: npx tsx scripts/make-zoo.ts [outdir] [name-regex]
import fs from 'node:fs';
import path from 'node:path';
import { serializeOnnx } from '../src/onnx/writer.js';
import { ZOO, countParams, opHistogram } from '../bench/models/zoo.js';
import type { Model } from '../src/ir/graph.js';

const outDir = process.argv[2] ?? 'bench/models/out';
const filter = new RegExp(process.argv[3] ?? '.');
fs.mkdirSync(outDir, { recursive: true });

const count = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}k`);
const ms = (t: number) => `${Math.round(performance.now() - t)} ms`;

function write(file: string, build: () => Model): void {
  let t = performance.now();
  const m = build();
  const built = ms(t);
  t = performance.now();
  const bytes = serializeOnnx(m);
  fs.writeFileSync(path.join(outDir, file), bytes);
  const top = [...opHistogram(m)]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([op, n]) => `${op} ${n}`)
    .join(', ');
  console.log(
    `${file.padEnd(34)} ${String(m.graph.nodes.length).padStart(5)} nodes  ${count(countParams(m)).padStart(7)} params  ` +
      `${(bytes.length / 2 ** 20).toFixed(1).padStart(6)} MiB  (build ${built}, write ${ms(t)})  ${top}`,
  );
}

for (const e of ZOO.filter((z) => filter.test(z.name))) {
  write(`${e.name}.onnx`, e.full);
  if (e.small) write(`${e.name}-small.onnx`, e.small);
}
console.log(`wrote to ${outDir}/`);
