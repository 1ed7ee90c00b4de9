// Deterministic inputs for the GPU quantization benches (bench/quant/gpu-*.ts): an image tensor named `input`, else
// token ids (all-ones attention masks), so fp16, int8 and fp8 engines of one model see the same data.
import { Tensor } from '../../src/runtime/tensor.js';

export const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];

export function feedsFor(shapes: Record<string, number[]>): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const [name, dims] of Object.entries(shapes)) {
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[name] = name === 'input' ? new Tensor('float32', Float32Array.from({ length: n }, (_, k) => Math.sin(k)), dims)
      : new Tensor('int64', BigInt64Array.from({ length: n }, (_, k) => (name.includes('mask') ? 1n : BigInt((k * 31) % 1000))), dims);
  }
  return feeds;
}
