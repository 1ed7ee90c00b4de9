// Real exporters' graphs (bench/real/models: torchvision and transformers through torch.onnx.export, weights refilled
// with seeded random values) through Kiln's CPU engine and onnxruntime-node with the same inputs: they must agree.
// The zoo's generators write the architectures; these are the patterns exporters actually emit (channel shuffles,
// squeeze-excite blocks, hard-swish, SiLU, DistilBERT's masked attention).
import { describe, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { serializeOnnx } from '../../src/index.js';
import { loadReal, REAL_DIR } from '../../bench/real/models.js';
import { seededRandom } from '../../src/ir/builder.js';
import { expectMatchesOnnxruntime, type Feed } from './parity.js';

const rand = seededRandom(11);

async function agree(name: string, feeds: Record<string, Feed>) {
  const m = loadReal(name);
  await expectMatchesOnnxruntime(serializeOnnx(m), m.graph.outputs.map((o) => o.name), feeds, `${name} `);
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
