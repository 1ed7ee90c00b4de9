// The shape family: tensor construction, layout changes, indexing and data-dependent selection. The ops live in
// shape-basic.ts (constants, reshapes, slicing, padding), shape-index.ts (gathers, scatters, masks) and
// shape-select.ts (sorting, ranges, rearrangements, Dropout).
import type { OpDef } from '../ir/schema.js';
import basic from './shape-basic.js';
import indexing from './shape-index.js';
import select from './shape-select.js';

const ops: OpDef<any>[] = [...basic, ...indexing, ...select];
export default ops;
