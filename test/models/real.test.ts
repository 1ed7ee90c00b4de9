// Real exporters' graphs (bench/real/models: torchvision and transformers through torch.onnx.export, weights refilled
// with seeded random values) through Kiln's CPU engine and onnxruntime-node with the same inputs: they must agree.
// The zoo's generators write the architectures; these are the patterns exporters actually emit (channel shuffles,
// squeeze-excite blocks, hard-swish, SiLU, DistilBERT's masked attention).
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { InferenceSession, Tensor, serializeOnnx } from '../../src/index.js';
import { loadReal, REAL_DIR } from '../../bench/real/models.js';
import { seededRandom } from '../../src/ir/builder.js';

type Feed = { type: 'float32'; data: Float32Array; dims: number[] } | { type: 'int64'; data: BigInt64Array; dims: number[] };
const rand = seededRandom(11);

async function agree(name: string, feeds: Record<string, Feed>) {
  const m = loadReal(name);
  const bytes = serializeOnnx(m);
  const kiln = await InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  const kOut = await kiln.run(Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new Tensor(f.type, f.data, f.dims)])));
  const ref = await ort.InferenceSession.create(bytes);
  const rOut = await ref.run(Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new ort.Tensor(f.type, f.data, f.dims)])));
  for (const o of m.graph.outputs) {
    const k = kOut[o.name] as Tensor<'float32'>, r = rOut[o.name];
    expect(k.dims, o.name).toEqual(r.dims);
    const rd = r.data as Float32Array;
    let scale = 0, err = 0;
    for (let i = 0; i < rd.length; i++) {
      scale = Math.max(scale, Math.abs(rd[i]));
      err = Math.max(err, Math.abs(rd[i] - k.data[i]));
    }
    expect(Number.isFinite(scale) && scale > 0, `${o.name} has a finite, non-zero scale`).toBe(true);
    expect(err, `${name} ${o.name}: max abs error vs onnxruntime (output scale ${scale})`).toBeLessThanOrEqual(1e-4 * scale);
  }
  await kiln.release();
  await ref.release();
}

const image = (n: number): Feed => ({ type: 'float32', data: Float32Array.from({ length: n * 3 * 224 * 224 }, () => rand() * 2 - 1), dims: [n, 3, 224, 224] });

describe.skipIf(!fs.existsSync(path.join(REAL_DIR, 'shufflenet_v2_x1_0.onnx')))('real exported models match onnxruntime', () => {
  for (const name of ['shufflenet_v2_x1_0', 'mobilenet_v3_large', 'efficientnet_b0']) {
    it(`${name} (torchvision), batch 2`, { timeout: 120_000 }, async () => {
      await agree(name, { input: image(2) });
    });
  }

  it('distilbert (transformers), batch 2 x 16 tokens, the second sequence padded', { timeout: 120_000 }, async () => {
    const ids = BigInt64Array.from({ length: 32 }, () => BigInt(Math.floor(rand() * 30000)));
    const mask = BigInt64Array.from({ length: 32 }, (_, i) => (i >= 16 && i % 16 >= 12 ? 0n : 1n));
    await agree('distilbert', { input_ids: { type: 'int64', data: ids, dims: [2, 16] }, attention_mask: { type: 'int64', data: mask, dims: [2, 16] } });
  });
});
