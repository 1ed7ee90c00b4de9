// --dump-ir: the graph after an optimizer stage, as ONNX (opens in Netron) and as readable text.
import fs from 'node:fs';
import path from 'node:path';
import type { Model } from '../ir/graph.js';
import { formatType } from '../ir/graph.js';
import { serializeOnnx } from '../onnx/writer.js';

export function graphText(m: Model): string {
  const g = m.graph;
  const lines = [`graph ${g.name} (${g.nodes.length} nodes, ${g.initializers.size} initializers)`];
  for (const i of g.inputs) if (!g.initializers.has(i.name)) lines.push(`  input  ${i.name}: ${formatType(i.type)}`);
  for (const n of g.nodes) {
    const attrs = Object.entries(n.attrs).map(([k, a]) => `${k}=${a.type === 'tensor' ? `<${a.value}>` : a.type === 'graph' || a.type === 'graphs' ? '<graph>' : JSON.stringify(a.value)}`);
    const outs = n.outputs.map((o) => `${o}: ${formatType(g.valueInfo.get(o))}`).join(', ');
    lines.push(`  ${outs} = ${n.domain ? `${n.domain}:` : ''}${n.opType}(${n.inputs.map((x) => (g.initializers.has(x) ? `${x}<${g.initializers.get(x)}>` : x)).join(', ')})${attrs.length ? ` {${attrs.join(', ')}}` : ''}  # ${n.name}`);
  }
  for (const o of g.outputs) lines.push(`  output ${o.name}: ${formatType(o.type)}`);
  return lines.join('\n') + '\n';
}

export async function writeIrDump(m: Model, stage: string, dir: string): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true });
  const base = path.join(dir, `ir-${stage.replace(/[^\w]+/g, '-')}`);
  await fs.promises.writeFile(`${base}.onnx`, serializeOnnx(m));
  await fs.promises.writeFile(`${base}.txt`, graphText(m));
}
