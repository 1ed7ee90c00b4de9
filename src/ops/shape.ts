// The shape family: tensor construction, layout changes, indexing and data-dependent selection. The ops live in
// shape-basic.ts (constants, reshapes, slicing, padding) and shape-index.ts (gathers, scatters, selection).
import type { OpDef } from '../ir/schema.js';
import basic from './shape-basic.js';
import indexing from './shape-index.js';

const ops: OpDef<any>[] = [...basic, ...indexing];
export default ops;
