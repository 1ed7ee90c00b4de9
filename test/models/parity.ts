// Kiln's CPU engine and onnxruntime-node on the same ONNX bytes and inputs: every graph output must have the same dims
// and agree within 1e-4 of its largest magnitude (float32 sums in another order). Shared by the zoo and real-model tests.
import { expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { InferenceSession, Tensor } from '../../src/index.js';

export type Feed =
  { type: 'float32'; data: Float32Array; dims: number[] } | { type: 'int64'; data: BigInt64Array; dims: number[] };

export async function expectMatchesOnnxruntime(bytes: Uint8Array, outputs: string[], feeds: Record<string, Feed>, label = ''): Promise<void> {
  const kiln = await InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  const kOut = await kiln.run(Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new Tensor(f.type, f.data, f.dims)])));
  const ref = await ort.InferenceSession.create(bytes);
  const rOut = await ref.run(Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new ort.Tensor(f.type, f.data, f.dims)])));
  for (const name of outputs) {
    const k = kOut[name] as Tensor<'float32'>;
    const r = rOut[name];
    expect(k.dims, name).toEqual(r.dims);
    const rd = r.data as Float32Array;
    let scale = 0,
      err = 0;
    for (let i = 0; i < rd.length; i++) {
      scale = Math.max(scale, Math.abs(rd[i]));
      err = Math.max(err, Math.abs(rd[i] - k.data[i]));
    }
    expect(Number.isFinite(scale) && scale > 0, `${name} has a finite, non-zero scale`).toBe(true);
    expect(err, `${label}${name}: max abs error vs onnxruntime (output scale ${scale})`).toBeLessThanOrEqual(1e-4 * scale);
  }
  await kiln.release();
  await ref.release();
}
