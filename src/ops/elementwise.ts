import { defineOp, type OpDef } from '../ir/schema.js';
import { mapUnary, tensorTypeOf } from './util.js';

// Example of the op-definition shape (the elementwise family is filled in around these).
const Abs = defineOp({
  name: 'Abs', versions: [1, 6, 13], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = |x|',
  infer: (ctx) => [ctx.inputTypes[0] ?? { kind: 'unknown' }],
  run: (ctx) => [mapUnary(ctx.tensor(0), Math.abs)],
});

const Relu = defineOp({
  name: 'Relu', versions: [1, 6, 13, 14], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = max(x, 0)',
  infer: (ctx) => [ctx.inputTypes[0] ?? { kind: 'unknown' }],
  run: (ctx) => [mapUnary(ctx.tensor(0), (x) => (x > 0 ? x : 0))],
});
void tensorTypeOf;

const ops: OpDef<any>[] = [Abs, Relu];
export default ops;
