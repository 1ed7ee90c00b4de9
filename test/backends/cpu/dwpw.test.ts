// Depthwise + pointwise pairs (depthwise.ts, depthwisePointwise): a stride-1 depthwise layer whose large output only
// a 1x1 layer reads runs with it as one call (Y<id>_dwpw), the depthwise rows of a band kept in scratch. Checked
// against the reference executor at 1 and 2 threads over odd plane widths (vectors spilling across rows), a partial last
// band, batch 2, a partial panel of 16 output channels, a residual with an activation on the pointwise layer, a
// one-sided padded window; and a depthwise output that another layer also reads stays two calls.
import { describe, it, expect } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { pairRunsMatchReference } from './pairs.js';

/** Over x [B, C, H, W]: (1) 3x3 depthwise + clip -> 1x1 to 29 channels (a partial panel of 16); (2) a 5x3 window padded on one side of each
 * axis -> 1x1 back to C channels plus x, ReLU; (3) a depthwise layer also read by an Add (no pair). */
function model(X: number[]): Model {
  const r = seededRandom(41);
  const b = new GraphBuilder('dwpw');
  const x = b.input('x', 'float32', X), C = X[1];
  const lo = b.initializer('lo', new TensorData('float32', [], Float32Array.of(0)));
  const hi = b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)));
  const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[], group = 1) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / group, ...k], 0.4)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.2))],
      { kernel_shape: k, group, ...attrs }, name);
  const d1 = b.op('Clip', [conv(x, C, C, 'd1', { pads: [1, 1, 1, 1] }, [3, 3], C), lo, hi], {}, 'c1');
  b.output(conv(d1, C, 29, 'p1', {}, [1, 1]));
  const d2 = conv(x, C, C, 'd2', { pads: [4, 0, 0, 2] }, [5, 3], C);
  b.output(b.op('Relu', [b.op('Add', [conv(d2, C, C, 'p2', {}, [1, 1]), x], {}, 'add2')], {}, 'r2'));
  const d3 = conv(x, C, C, 'd3', { pads: [1, 1, 1, 1] }, [3, 3], C);
  b.output(b.op('Add', [conv(d3, C, 17, 'p3', {}, [1, 1]), b.op('ReduceMean', [d3], { axes: [1] }, 'mean')], {}, 'add3'));
  return b.model(13);
}

// plane sizes past the pair's threshold (C x H x W >= 256 K floats): widths off 16 (vectors spilling across rows), bands
// of 9 to 15 rows with a partial last one, batch 2; C in whole and partial panels of 16
const SHAPES: number[][] = [[1, 30, 121, 120], [2, 45, 97, 115], [1, 16, 128, 130]];

describe.skipIf(!findCompiler())('depthwise + pointwise pairs', () => {
  it.each(SHAPES.map((s) => [s]))('over %j run as one call in a chain and match the reference executor at 1 and 2 threads', async (X: number[]) => {
    const m = model(X);
    const asked = await pairRunsMatchReference(m, X, 5, 2);
    // the pair exists on AVX-512 (its 16 x 16 tiles): the first two depthwise layers pair up, the third does not
    const pairs = new Set(asked.filter((a) => /_dwpw$/.test(a)));
    expect(pairs.size).toBe(hostIsa() === 'avx512' ? 2 : 0);
  }, 120_000);
});
