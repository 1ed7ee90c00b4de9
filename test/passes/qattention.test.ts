// The 'quantize attention outputs' stage (GPU builds): kiln:Attention read only by a kiln:QTranspose becomes one
// kiln:QAttention whose kernel stores the output transposed and quantized. Its reference kernel must give exactly the
// pair's bytes, fp32 and fp16 builds; an attention output with another reader keeps the pair.
import { describe, it, expect } from 'vitest';
import { bertBase, BERT_SMALL } from '../../bench/models/zoo.js';
import { quantized } from '../helpers/quant.js';
import type { Model } from '../../src/ir/graph.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { optimize } from '../../src/passes/pipeline.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { quantizeAttentionOutputs } from '../../src/passes/quantized.js';
import { GraphView } from '../../src/passes/view.js';
import { verifyGraph } from '../../src/passes/verify.js';
import { outputsOf } from '../quant/outputs.js';

const count = (m: Model, op: string) => m.graph.nodes.filter((n) => n.opType === op).length;

async function bertSmall() {
  const q = quantized(bertBase(BERT_SMALL), 4);
  const feeds = randomCalibrationData(q.graph, 2, { seed: 7 });
  const shapes = new Map([...feeds].map(([k, t]) => [k, [...t.dims]]));
  return { q, feeds, shapes };
}

describe('quantize attention outputs', () => {
  it('BERT-small int8: each Attention -> QTranspose pair becomes a QAttention with the pair\'s attributes and bytes, fp32 and fp16', async () => {
    const { q, feeds, shapes } = await bertSmall();
    const before = cloneModel(q), after = cloneModel(q);
    await optimize(before, { layout: 'NHWC', inputShapes: shapes, stopAfter: 'quantize in transposes' });
    await optimize(after, { verify: true, layout: 'NHWC', inputShapes: shapes });
    const pairs = before.graph.nodes.filter((n) => n.opType === 'QTranspose');
    expect(pairs.length).toBe(count(before, 'Attention'));
    expect(pairs.length).toBeGreaterThan(0);
    expect(count(after, 'QAttention')).toBe(pairs.length);
    expect(count(after, 'Attention') + count(after, 'QTranspose')).toBe(0);
    for (const t of pairs) {
      const a = before.graph.nodes.find((n) => n.outputs[0] === t.inputs[0])!;
      const f = after.graph.nodes.find((n) => n.opType === 'QAttention' && n.name === a.name)!;
      expect(f.inputs).toEqual(a.inputs);
      expect(f.attrs.perm.value).toEqual([0, 2, 1, 3]);
      for (const k of ['y_dtype', 'y_scale', 'y_zero_point']) expect(f.attrs[k]).toEqual(t.attrs[k]);
      expect(f.attrs.scale).toEqual(a.attrs.scale);
      expect(after.graph.valueInfo.get(f.outputs[0])).toMatchObject({ kind: 'tensor', dtype: 'int8' });
    }
    const [x, y] = [outputsOf(cloneModel(before), feeds), outputsOf(cloneModel(after), feeds)];
    x.forEach((v, i) => expect(Array.from(y[i])).toEqual(Array.from(v)));
    // fp16: Q, K and V go fp16 (the mask stays fp32), the int8 output stays int8; still the pair's bytes
    for (const m of [before, after]) {
      assignPrecision(m.graph, { precision: 'fp16' });
      verifyGraph(m.graph, m.opsets, 'after fp16 precision');
    }
    for (const f of after.graph.nodes.filter((n) => n.opType === 'QAttention')) {
      expect(f.inputs.slice(0, 3).map((i) => after.graph.valueInfo.get(i)?.kind === 'tensor' && (after.graph.valueInfo.get(i) as { dtype: string }).dtype)).toEqual(['float16', 'float16', 'float16']);
    }
    expect(count(after, 'Cast')).toBe(count(before, 'Cast'));
    const [c, d] = [outputsOf(before, feeds), outputsOf(after, feeds)];
    c.forEach((v, i) => expect(Array.from(d[i])).toEqual(Array.from(v)));
  }, 60_000);

  it('keeps the pair where the attention output has another reader, and CPU builds keep both', async () => {
    const { q, shapes } = await bertSmall();
    const m = cloneModel(q);
    await optimize(m, { layout: 'NHWC', inputShapes: shapes, stopAfter: 'quantize in transposes' });
    const a = m.graph.nodes.find((n) => n.opType === 'Attention')!;
    m.graph.outputs.push({ name: a.outputs[0], type: { kind: 'unknown' } });
    const n = count(m, 'Attention');
    expect(quantizeAttentionOutputs(new GraphView(m.graph, m.opsets))).toBe(n - 1);
    expect(m.graph.nodes.find((x) => x.outputs[0] === a.outputs[0])?.opType).toBe('Attention');
    const cpu = cloneModel(q);
    await optimize(cpu, { inputShapes: shapes });
    expect(count(cpu, 'QAttention')).toBe(0);
    expect(count(cpu, 'Attention')).toBe(n);
  }, 60_000);
});
