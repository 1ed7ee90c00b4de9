// Deterministic inputs for the GPU quantization benches (bench/quant/gpu-*.ts): an image tensor named `input`, else
// token ids (all-ones attention masks), so fp16, int8 and fp8 engines of one model see the same data.
import { Tensor } from '../../src/runtime/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';

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

/**
 * A model quantized to int8 (4 seeded calibration samples) with 2 seeded inputs, and a function that builds it for
 * the GPU with some environment set (KILN_QGEMM / KILN_QTMA routes), runs it twice (eagerly, then the captured graph)
 * and returns every output of both runs: the GPU checks compare routes that must agree byte for byte.
 */
export function quantizedRoutes(make: () => Model, precision: 'fp32' | 'fp16'): (env: Record<string, string>) => Promise<Float32Array[]> {
  const m = make();
  const data = randomCalibrationData(m.graph, 2, { seed: 9 });
  const shapes = Object.fromEntries([...data].map(([k, t]) => [k, [...t.dims]]));
  const { model: q } = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), batchSize: 4 });
  const feeds: Record<string, Tensor> = {};
  for (const [k, t] of data) feeds[k] = new Tensor(t.dtype as 'float32', t.data as Float32Array, [...t.dims]);
  return async (env) => {
    Object.assign(process.env, env);
    try {
      const e = await Engine.load(await build(q, { device: 'cuda', precision, shapes }));
      const ctx = e.createContext();
      const out = await ctx.run(feeds);
      const again = await ctx.run(feeds); // replay: e.g. split-K's tile counters were left at zero
      e.dispose();
      return [...Object.values(out), ...Object.values(again)].map((t) => (t as Tensor).data as Float32Array);
    } finally {
      for (const k of Object.keys(env)) delete process.env[k];
    }
  };
}
