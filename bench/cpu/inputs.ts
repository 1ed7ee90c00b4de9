// The zoo models' benchmark inputs, one definition for the bench/cpu scripts: a dynamic dim whose name says sequence
// (seq, len) gets 128 tokens, any other dynamic dim the batch size; float inputs are seeded uniform in [-1, 1), int64
// inputs token ids in [0, 1000) (masks all ones). Raw arrays, so the same data can feed Kiln and onnxruntime-node.
import { seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { Tensor } from '../../src/runtime/tensor.js';

export const SEQ = 128;

export interface RawInput {
  dtype: 'float32' | 'int64';
  dims: number[];
  data: Float32Array | BigInt64Array;
}

export function zooInputs(m: Model, batch = 1): { shapes: Record<string, number[]>; feeds: Record<string, RawInput> } {
  const r = seededRandom(5);
  const shapes: Record<string, number[]> = {};
  const feeds: Record<string, RawInput> = {};
  for (const i of m.graph.inputs) {
    if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
    const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? SEQ : batch));
    const n = dims.reduce((a, b) => a * b, 1);
    shapes[i.name] = dims;
    feeds[i.name] = i.type.dtype === 'float32'
      ? { dtype: 'float32', dims, data: Float32Array.from({ length: n }, () => r() * 2 - 1) }
      : { dtype: 'int64', dims, data: BigInt64Array.from({ length: n }, () => (i.name.includes('mask') ? 1n : BigInt(Math.floor(r() * 1000)))) };
  }
  return { shapes, feeds };
}

/** The scripts' \`--batch=N\` option (default 1): the batch size zooInputs gives the inputs. */
export const batchArg = (): number => Number(process.argv.find((a) => a.startsWith('--batch='))?.slice(8) ?? 1);

/** The same inputs as Kiln tensors. */
export function asTensors(feeds: Record<string, RawInput>): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, v.dtype === 'float32' ? new Tensor('float32', v.data as Float32Array, v.dims) : new Tensor('int64', v.data as BigInt64Array, v.dims)]));
}
