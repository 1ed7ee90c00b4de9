// The elementwise family: unary math and activations, broadcasting binary ops, variadic ops, Clip and Where.
// The engines (type dispatch, broadcasting, float32 fast paths) live in elementwise-core.ts.
import { defineOp, type OpDef } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import { inferSame, unaryOp } from './elementwise-core.js';
import unary from './elementwise-unary.js';
import binary from './elementwise-binary.js';
import variadic from './elementwise-variadic.js';

const Abs = defineOp({
  name: 'Abs', versions: [1, 6, 13], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = |x|',
  infer: inferSame,
  run: (ctx) => [unaryOp(ctx.tensor(0), { float: Math.abs, int: Math.abs, big: (x) => (x < 0n ? -x : x) })],
});

const Relu = defineOp({
  name: 'Relu', versions: [1, 6, 13, 14], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = max(x, 0)',
  infer: inferSame,
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (x.dtype === 'float32') {
      const out = TensorData.zeros('float32', x.dims);
      const X = x.data as Float32Array, Y = out.data as Float32Array;
      for (let i = 0; i < X.length; i++) Y[i] = X[i] < 0 ? 0 : X[i]; // keeps NaN
      return [out];
    }
    return [unaryOp(x, { float: (v) => (v < 0 ? 0 : v), int: (v) => (v < 0 ? 0 : v), big: (v) => (v < 0n ? 0n : v) })];
  },
});

const ops: OpDef<any>[] = [Abs, Relu, ...unary, ...binary, ...variadic];
export default ops;
