import type { OpDef } from '../ir/schema.js';

const ops: OpDef<any>[] = [];
export default ops;
