// The model zoo: small variants run through Kiln and onnxruntime-node with the same inputs and must agree; full-size
// variants are checked for structure and parameter counts only (built with zero weights, never run).
import { describe, it, expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { parseOnnx, serializeOnnx } from '../../src/index.js';
import type { Model } from '../../src/ir/graph.js';
import {
  BERT_SMALL,
  GPT2_SMALL,
  MOBILENET_SMALL,
  RESNET_SMALL,
  bertBase,
  countParams,
  gpt2,
  mobilenetV2,
  opHistogram,
  resnet50,
  tinyCnn,
} from '../../bench/models/zoo.js';
import { seededRandom } from '../../src/ir/builder.js';
import { expectMatchesOnnxruntime, type Feed } from './parity.js';


const rand = seededRandom(7);
const image = (n: number, size: number): Feed => ({
  type: 'float32',
  data: Float32Array.from({ length: n * 3 * size * size }, () => rand() * 2 - 1),
  dims: [n, 3, size, size],
});
const tokens = (n: number, seq: number, vocab: number): Feed => ({
  type: 'int64',
  data: BigInt64Array.from({ length: n * seq }, () => BigInt(Math.floor(rand() * vocab))),
  dims: [n, seq],
});
/** The same token batch with token `i` changed. */
function changeToken(f: Feed, i: number): Feed {
  const data = new BigInt64Array(f.data as BigInt64Array);
  data[i] = (data[i] + 1n) % 100n;
  return { type: 'int64', data, dims: f.dims };
}
/** Attention mask with the second sequence's last 3 tokens padded out. */
const paddedMask = (n: number, seq: number): Feed => ({
  type: 'int64',
  data: BigInt64Array.from({ length: n * seq }, (_, i) => (i >= seq && i % seq >= seq - 3 ? 0n : 1n)),
  dims: [n, seq],
});

async function runBoth(model: Model, feeds: Record<string, Feed>) {
  const bytes = serializeOnnx(model);
  const reparsed = parseOnnx(bytes);
  expect(reparsed.graph.nodes.map((n) => n.opType)).toEqual(model.graph.nodes.map((n) => n.opType));
  expect([...reparsed.graph.initializers.keys()]).toEqual([...model.graph.initializers.keys()]);
  expect(reparsed.docString).toContain('weights');

  await expectMatchesOnnxruntime(bytes, model.graph.outputs.map((o) => o.name), feeds);
}

const count = (m: Model, op: string) => opHistogram(m).get(op) ?? 0;

describe('model zoo: small variants match onnxruntime', () => {
  it('tiny CNN', async () => {
    await runBoth(tinyCnn(), { input: image(2, 32) });
  });

  it('ResNet-50 small', async () => {
    const m = resnet50(RESNET_SMALL);
    expect(count(m, 'Conv')).toBe(17); // stem + 4 blocks x (3 convs + downsample)
    expect(count(m, 'BatchNormalization')).toBe(17);
    expect(count(m, 'Add')).toBe(4);
    expect(m.graph.nodes.some((n) => n.opType === 'Conv' && n.inputs.length === 3)).toBe(false); // no conv bias
    await runBoth(m, { input: image(2, 32) });
  });

  it('MobileNetV2 small', async () => {
    const m = mobilenetV2(MOBILENET_SMALL);
    const depthwise = m.graph.nodes.filter(
      (n) => n.opType === 'Conv' && n.attrs.group?.type === 'int' && n.attrs.group.value > 1,
    );
    expect(depthwise).toHaveLength(7);
    expect(m.graph.nodes.filter((n) => n.opType === 'Clip').every((n) => n.inputs.length === 3)).toBe(true);
    await runBoth(m, { input: image(2, 32) });
  });

  it('BERT small (fused LayerNorm, dynamic shape ops)', async () => {
    const m = bertBase(BERT_SMALL);
    expect(count(m, 'Softmax')).toBe(2);
    expect(count(m, 'LayerNormalization')).toBe(5);
    expect(count(m, 'Erf')).toBe(2);
    expect(count(m, 'Shape')).toBeGreaterThan(2 * 2);
    expect(m.graph.nodes.filter((n) => n.opType === 'Reshape').every((n) => !n.inputs[1].endsWith('.const'))).toBe(
      true,
    );
    await runBoth(m, { input_ids: tokens(2, 8, 100), attention_mask: paddedMask(2, 8) });
  });

  it('BERT small (decomposed LayerNorm, constant shapes, -10000 mask)', async () => {
    const m = bertBase({ ...BERT_SMALL, layerNorm: 'decomposed', shapeOps: 'constant', maskValue: -10000 });
    expect(count(m, 'LayerNormalization')).toBe(0);
    expect(count(m, 'ReduceMean')).toBe(2 * 5);
    expect(count(m, 'Sqrt')).toBe(5);
    expect(count(m, 'Shape')).toBe(1); // only the position slice still reads the sequence length
    await runBoth(m, { input_ids: tokens(2, 8, 100), attention_mask: paddedMask(2, 8) });
  });

  it('GPT-2 small (Where mask)', async () => {
    const m = gpt2(GPT2_SMALL);
    expect(count(m, 'Split')).toBe(2);
    expect(count(m, 'Where')).toBe(2);
    expect(count(m, 'Tanh')).toBe(2);
    expect(count(m, 'LayerNormalization')).toBe(5);
    await runBoth(m, { input_ids: tokens(2, 8, 100) });
  });

  it('GPT-2 small (additive mask, constant shapes)', async () => {
    const m = gpt2({ ...GPT2_SMALL, causalMask: 'additive', shapeOps: 'constant' });
    expect(count(m, 'Where')).toBe(0);
    await runBoth(m, { input_ids: tokens(1, 11, 100) });
  });
});

describe('model zoo: attention masks do what they claim', () => {
  const ortRun = async (m: Model, feeds: Record<string, Feed>, out: string) => {
    const s = await ort.InferenceSession.create(serializeOnnx(m));
    const r = await s.run(
      Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new ort.Tensor(f.type, f.data, f.dims)])),
    );
    await s.release();
    return r[out].data as Float32Array;
  };

  it('GPT-2: changing the last token leaves earlier positions unchanged (causal)', async () => {
    for (const causalMask of ['where', 'additive'] as const) {
      const m = gpt2({ ...GPT2_SMALL, causalMask });
      const a = tokens(1, 6, 100);
      const b = changeToken(a, 5);
      const [ya, yb] = [await ortRun(m, { input_ids: a }, 'logits'), await ortRun(m, { input_ids: b }, 'logits')];
      expect(ya.subarray(0, 5 * 100)).toEqual(yb.subarray(0, 5 * 100));
      expect(ya.subarray(500)).not.toEqual(yb.subarray(500));
    }
  });

  it('BERT: tokens at padded positions do not affect the others', async () => {
    const m = bertBase(BERT_SMALL);
    const mask = paddedMask(2, 8);
    const a = tokens(2, 8, 100);
    const b = changeToken(a, 15);
    const ya = await ortRun(m, { input_ids: a, attention_mask: mask }, 'last_hidden_state');
    const yb = await ortRun(m, { input_ids: b, attention_mask: mask }, 'last_hidden_state');
    const h = BERT_SMALL.hidden!;
    expect(ya.subarray(8 * h, 13 * h)).toEqual(yb.subarray(8 * h, 13 * h));
  });
});

describe('model zoo: full-size structure and parameter counts', () => {
  // Zero-weight builds: no fill, and untouched pages cost no memory.
  it('ResNet-50: 25.56M parameters, 53 conv + BN, 16 residual adds', () => {
    const m = resnet50({ weights: 'zeros' });
    expect(countParams(m)).toBe(25_557_032);
    expect(count(m, 'Conv')).toBe(53);
    expect(count(m, 'BatchNormalization')).toBe(53);
    expect(count(m, 'Add')).toBe(16);
    expect(count(m, 'Relu')).toBe(49);
    expect(m.graph.inputs[0].type).toEqual({ kind: 'tensor', dtype: 'float32', shape: ['n', 3, 224, 224] });
  });

  it('MobileNetV2: 3.50M parameters, 17 depthwise convs, 35 ReLU6', () => {
    const m = mobilenetV2({ weights: 'zeros' });
    expect(countParams(m)).toBe(3_504_872);
    expect(count(m, 'Conv')).toBe(52);
    expect(count(m, 'Clip')).toBe(35);
    expect(count(m, 'Add')).toBe(10);
  });

  it('BERT-base: 109.48M parameters (with pooler), 12 layers', () => {
    const m = bertBase({ weights: 'zeros' });
    expect(countParams(m)).toBe(109_482_240);
    expect(countParams(bertBase({ weights: 'zeros', pooler: false }))).toBe(108_891_648);
    expect(count(m, 'Softmax')).toBe(12);
    expect(count(m, 'LayerNormalization')).toBe(25);
    expect(count(m, 'MatMul')).toBe(12 * 8);
    const d = bertBase({ weights: 'zeros', layerNorm: 'decomposed' });
    expect(count(d, 'ReduceMean')).toBe(50);
    expect(countParams(d)).toBe(109_482_240);
  });

  it('GPT-2 small: 124.44M parameters, 12 blocks, tied LM head', () => {
    const m = gpt2({ weights: 'zeros' });
    expect(countParams(m)).toBe(124_439_808);
    expect(count(m, 'LayerNormalization')).toBe(25);
    expect(count(m, 'Softmax')).toBe(12);
    expect(m.graph.outputs[0]).toMatchObject({ name: 'logits', type: { shape: ['n', 'seq', 50257] } });
  });
});
