// Real exported model graphs (bench/real/export.py: torchvision and transformers through torch.onnx.export on the GPU
// machine) with their large float weights refilled here by seeded random values of a sensible scale: the graphs are
// the exporters' own, the weights are random, as in the zoo. For speed and parity runs, not accuracy.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseOnnx } from '../../src/onnx/reader.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { randomTensor, seededRandom } from '../../src/ir/builder.js';

export const REAL_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'models');

export function realModelNames(): string[] {
  return fs.readdirSync(REAL_DIR).filter((f) => f.endsWith('.onnx')).map((f) => f.slice(0, -5)).sort();
}

/** Normal weights with std 1/sqrt(fan-in) (the first dim is the output one for convolutions, the last for MatMul
 * weights [K, N]); 1-D: gains near 1 where the name says weight/scale/gamma, else biases near 0. */
function refill(name: string, dims: number[], rand: () => number): TensorData {
  const n = dims.reduce((a, b) => a * b, 1);
  if (dims.length === 1) {
    const gain = /weight|scale|gamma/i.test(name);
    return TensorData.fromNumbers('float32', dims, Array.from({ length: n }, () => (gain ? 1 + (rand() - 0.5) * 0.2 : (rand() - 0.5) * 0.02)));
  }
  const fanIn = dims.length === 2 ? Math.min(dims[0], dims[1]) : n / dims[0];
  return randomTensor(rand, dims, 1 / Math.sqrt(fanIn));
}

export function loadReal(name: string, seed = 1): Model {
  const file = path.join(REAL_DIR, `${name}.onnx`);
  const m = parseOnnx(fs.readFileSync(file));
  const stripped = JSON.parse(m.metadata['kiln.random_initializers'] ?? '{}') as Record<string, number[]>;
  const rand = seededRandom(seed);
  for (const [k, dims] of Object.entries(stripped)) m.graph.initializers.set(k, refill(k, dims, rand));
  // the first exports named the sequence dim 's'; the bench inputs give dims named seq/len 128 tokens
  for (const i of m.graph.inputs) if (i.type.kind === 'tensor' && i.type.shape) i.type.shape = i.type.shape.map((d) => (d === 's' ? 'seq' : d));
  return m;
}
