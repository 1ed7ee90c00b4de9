// Control flow: If, Loop and Scan. Their bodies run through ctx.runSubgraph, which resolves outer-scope names.
import type { Dim, Graph, ValueType } from '../ir/graph.js';
import { attr, defineOp, type AttrsOf, type InferContext, type KernelContext, type OpDef } from '../ir/schema.js';
import { SequenceValue, TensorData, describeValue, type Value } from '../ir/tensor.js';
import { normAxis } from './util.js';
import { normNewAxis, sliceAxis, stackAxis } from './sequence-tensor.js';
import { UNKNOWN, mergeTypes, outerType } from './control-types.js';

/** Upper bound on Loop iterations, so that a loop whose condition never turns false fails instead of hanging. */
let maxLoopIterations = 10_000_000;

/** Change the Loop iteration bound (for tests); returns the previous bound. */
export function setMaxLoopIterations(n: number): number {
  const prev = maxLoopIterations;
  maxLoopIterations = n;
  return prev;
}

// Later versions only widen the set of value types; semantics are the same from opset 11 (If, Loop) / 9 (Scan).
const CONTROL_VERSIONS = [1, 11, 13, 16, 19, 21, 23, 24, 25];
const SCAN_VERSIONS = [8, 9, 11, 16, 19, 21, 23, 24, 25];

function requireGraph(g: Graph | undefined, name: string): Graph {
  if (!g) throw new Error(`the required graph attribute '${name}' is missing`);
  return g;
}

function scalarBool(t: TensorData, what: string): boolean {
  if (t.size !== 1) throw new Error(`${what} must hold a single element, got shape [${t.dims.join(', ')}]`);
  return t.get(0) !== 0;
}

function asTensor(v: Value, what: string): TensorData {
  if (v instanceof TensorData) return v;
  throw new Error(`${what} must be a tensor, got ${describeValue(v)}`);
}

// ---------------------------------------------------------------------------------------------------------------
// If

const If = defineOp({
  name: 'If', versions: CONTROL_VERSIONS,
  attrs: { then_branch: attr.graph(), else_branch: attr.graph() }, inputs: [1, 1], outputs: [1, Infinity],
  doc: 'Run then_branch or else_branch depending on a boolean scalar',
  infer: (ctx) => {
    const a = ctx.attrs.then_branch?.outputs, b = ctx.attrs.else_branch?.outputs;
    return Array.from({ length: ctx.numOutputs }, (_, i) => {
      const ta = a?.[i] && outerType(a[i].type), tb = b?.[i] && outerType(b[i].type);
      return ta && tb ? mergeTypes(ta, tb) : UNKNOWN;
    });
  },
  run: (ctx) => {
    const cond = scalarBool(ctx.tensor(0), 'the condition');
    const branch = requireGraph(cond ? ctx.attrs.then_branch : ctx.attrs.else_branch, cond ? 'then_branch' : 'else_branch');
    const outs = ctx.runSubgraph(branch, []);
    if (outs.length < ctx.numOutputs) {
      throw new Error(`the ${cond ? 'then' : 'else'} branch produces ${outs.length} outputs, but the node has ${ctx.numOutputs}`);
    }
    return outs;
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Loop

/** Stack per-iteration scan outputs along a new first axis; sequences are concatenated into one sequence. */
function collectScanOutput(items: Value[], declared: ValueType | undefined, k: number): Value {
  if (items.length === 0) {
    if (declared?.kind === 'sequence') return new SequenceValue([], declared.elem.kind === 'tensor' ? declared.elem.dtype : undefined);
    if (declared?.kind !== 'tensor') throw new Error(`scan output ${k} has no iterations and its body type is not a known tensor type`);
    const shape = declared.shape?.every((d) => typeof d === 'number') ? (declared.shape as number[]) : [];
    return TensorData.zeros(declared.dtype, [0, ...shape]);
  }
  if (items[0] instanceof SequenceValue) {
    const all: TensorData[] = [];
    items.forEach((v, i) => {
      if (!(v instanceof SequenceValue)) {
        throw new Error(`scan output ${k} is a sequence at iteration 0 but ${describeValue(v)} at iteration ${i}`);
      }
      all.push(...v.items);
    });
    return new SequenceValue(all, (items[0] as SequenceValue).elemType ?? all[0]?.dtype);
  }
  return stackAxis(items.map((v, i) => asTensor(v, `scan output ${k} at iteration ${i}`)), 0, `iteration of scan output ${k}`);
}

function loopBound(m: TensorData | undefined): number {
  if (!m) return Infinity;
  if (m.size !== 1) throw new Error(`the trip count M must be a scalar, got shape [${m.dims.join(', ')}]`);
  const v = m.toBigInts()[0];
  return v <= 0n ? 0 : v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
}

function loopOutputTypes(body: Graph | undefined, inputTypes: (ValueType | undefined)[], numOutputs: number): ValueType[] {
  const nCarried = Math.max(0, inputTypes.length - 2);
  return Array.from({ length: numOutputs }, (_, i) => {
    const declared = body?.outputs[i + 1]?.type;
    if (i < nCarried) {
      const fromBody = outerType(declared);
      const init = inputTypes[i + 2];
      // zero iterations return the initial value: keep only what it shares with the body's output
      if (fromBody.kind === 'tensor' && init?.kind === 'tensor') return mergeTypes(init, fromBody);
      return declared ? fromBody : init ?? UNKNOWN;
    }
    const t = outerType(declared);
    if (t.kind === 'tensor') return { kind: 'tensor', dtype: t.dtype, shape: t.shape ? [undefined, ...t.shape] : undefined };
    return t;
  });
}

const Loop = defineOp({
  name: 'Loop', versions: CONTROL_VERSIONS, attrs: { body: attr.graph() }, inputs: [2, Infinity], outputs: [1, Infinity],
  doc: 'Run body repeatedly with loop-carried values until the trip count M or the condition stops it',
  infer: (ctx) => loopOutputTypes(ctx.attrs.body, ctx.inputTypes, ctx.numOutputs),
  run: (ctx) => {
    const body = requireGraph(ctx.attrs.body, 'body');
    const maxTrips = loopBound(ctx.optionalTensor(0));
    const condIn = ctx.optionalTensor(1);
    let carried: Value[] = ctx.inputs.slice(2).map((v, i) => {
      if (v === undefined) throw new Error(`loop-carried input ${i} is missing`);
      return v;
    });
    const nCarried = carried.length;
    const nScan = body.outputs.length - 1 - nCarried;
    if (body.inputs.length !== nCarried + 2) {
      throw new Error(`the body takes ${body.inputs.length} inputs, expected ${nCarried + 2} ` +
        `(iteration number, condition, ${nCarried} loop-carried values)`);
    }
    if (nScan < 0) throw new Error(`the body produces ${body.outputs.length} outputs, expected at least ${nCarried + 1}`);
    const scans: Value[][] = Array.from({ length: nScan }, () => []);
    let cond = condIn ? scalarBool(condIn, 'the condition') : true;
    const condTensor = (b: boolean) => TensorData.fromNumbers('bool', [], [b ? 1 : 0]);
    for (let i = 0; i < maxTrips && cond; i++) {
      if (i >= maxLoopIterations) {
        throw new Error(`the loop ran ${maxLoopIterations} iterations without its trip count or condition stopping it; giving up`);
      }
      const iter = TensorData.fromBigInts('int64', [], [BigInt(i)]);
      const outs = ctx.runSubgraph(body, [iter, condTensor(cond), ...carried]);
      // without a cond input the body's condition output is ignored (the loop is bounded by M alone)
      if (condIn) cond = scalarBool(asTensor(outs[0], 'the body condition output'), 'the body condition output');
      carried = outs.slice(1, 1 + nCarried);
      for (let k = 0; k < nScan; k++) scans[k].push(outs[1 + nCarried + k]);
    }
    const results = [...carried, ...scans.map((items, k) => collectScanOutput(items, body.outputs[1 + nCarried + k].type, k))];
    return results.slice(0, Math.max(ctx.numOutputs, 1));
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Scan

interface ScanPlan {
  body: Graph;
  nState: number;
  inAxes: number[];
  inReverse: boolean[];
  outAxes: number[];
  outReverse: boolean[];
}

/** One scan over `inputs` (already without a batch axis) for `steps` steps; returns final states and scan outputs. */
function scanOnce(ctx: Pick<KernelContext<unknown>, 'runSubgraph'>, p: ScanPlan, states: Value[], inputs: TensorData[],
  steps: number): Value[] {
  const nScanOut = p.body.outputs.length - p.nState;
  const per: TensorData[][] = Array.from({ length: nScanOut }, () => []);
  for (let t = 0; t < steps; t++) {
    const slices = inputs.map((x, j) => sliceAxis(x, p.inAxes[j], p.inReverse[j] ? steps - 1 - t : t));
    const outs = ctx.runSubgraph(p.body, [...states, ...slices]);
    states = outs.slice(0, p.nState);
    for (let k = 0; k < nScanOut; k++) per[k].push(asTensor(outs[p.nState + k], `scan output ${k}`));
  }
  const scanOuts = per.map((items, k) => {
    const declared = p.body.outputs[p.nState + k].type;
    if (items.length === 0) {
      if (declared.kind !== 'tensor' || !declared.shape?.every((d) => typeof d === 'number')) {
        throw new Error(`scan output ${k} has no iterations and its body shape is not static`);
      }
      const dims = [...(declared.shape as number[])];
      dims.splice(normNewAxis(p.outAxes[k], dims.length), 0, 0);
      return TensorData.zeros(declared.dtype, dims);
    }
    if (p.outReverse[k]) items.reverse();
    return stackAxis(items, normNewAxis(p.outAxes[k], items[0].rank, 'scan_output_axes entry'), `iteration of scan output ${k}`);
  });
  return [...states, ...scanOuts];
}

function directions(v: number[] | undefined, n: number, what: string): boolean[] {
  if (v === undefined) return new Array<boolean>(n).fill(false);
  if (v.length !== n) throw new Error(`${what} has ${v.length} entries, expected ${n}`);
  return v.map((d) => {
    if (d !== 0 && d !== 1) throw new Error(`${what} entries must be 0 or 1, got ${d}`);
    return d === 1;
  });
}

const scanAttrs = {
  body: attr.graph(), num_scan_inputs: attr.int(), directions: attr.ints(), scan_input_axes: attr.ints(),
  scan_input_directions: attr.ints(), scan_output_axes: attr.ints(), scan_output_directions: attr.ints(),
};

type ScanAttrs = AttrsOf<typeof scanAttrs>;

function scanOutputTypes(ctx: InferContext<ScanAttrs>): ValueType[] {
  const { body, num_scan_inputs: m } = ctx.attrs;
  const batched = ctx.opset < 9;
  const ins = batched ? ctx.inputTypes.slice(1) : ctx.inputTypes;
  const nState = m === undefined ? 0 : ins.length - m;
  // the scan length: the size of the first scan input along its scan axis
  let steps: Dim;
  const first = ins[nState];
  if (first?.kind === 'tensor' && first.shape) {
    const axis = batched ? 1 : ctx.attrs.scan_input_axes?.[0] ?? 0;
    const a = axis < 0 ? axis + first.shape.length : axis;
    steps = first.shape[a];
  }
  const batch = batched && ins[0]?.kind === 'tensor' ? ins[0].shape?.[0] : undefined;
  return Array.from({ length: ctx.numOutputs }, (_, i) => {
    const declared = outerType(body?.outputs[i]?.type);
    if (i < nState) {
      const init = ins[i];
      if (batched) {
        if (init?.kind !== 'tensor') return UNKNOWN;
        if (declared.kind !== 'tensor' || !declared.shape) return init;
        return mergeTypes(init, { ...declared, shape: [init.shape?.[0], ...declared.shape] });
      }
      return init?.kind === 'tensor' ? mergeTypes(init, declared) : declared;
    }
    if (declared.kind !== 'tensor') return UNKNOWN;
    if (!declared.shape) return { kind: 'tensor', dtype: declared.dtype };
    const shape = [...declared.shape];
    // opset 8 pads every batch entry's scan outputs to the full sequence length
    if (batched) return { kind: 'tensor', dtype: declared.dtype, shape: [batch, steps, ...shape] };
    const axis = ctx.attrs.scan_output_axes?.[i - nState] ?? 0;
    shape.splice(axis < 0 ? axis + shape.length + 1 : axis, 0, steps);
    return { kind: 'tensor', dtype: declared.dtype, shape };
  });
}

const Scan = defineOp({
  name: 'Scan', versions: SCAN_VERSIONS, attrs: scanAttrs, inputs: [1, Infinity], outputs: [1, Infinity],
  doc: 'Run body over slices of the scan inputs, carrying state; stacks the per-step outputs',
  infer: (ctx) => scanOutputTypes(ctx),
  run: (ctx) => {
    const body = requireGraph(ctx.attrs.body, 'body');
    const m = ctx.attrs.num_scan_inputs;
    if (m === undefined || m < 1) throw new Error(`num_scan_inputs must be a positive integer, got ${m}`);
    return ctx.opset < 9 ? runScan8(ctx, body, m) : runScan9(ctx, body, m);
  },
});

function runScan9(ctx: KernelContext<ScanAttrs>, body: Graph, m: number): Value[] {
  const nState = ctx.inputs.length - m;
  if (nState < 0) throw new Error(`num_scan_inputs is ${m}, but the node has only ${ctx.inputs.length} inputs`);
  const nScanOut = body.outputs.length - nState;
  if (nScanOut < 0) throw new Error(`the body produces ${body.outputs.length} outputs, expected at least ${nState} (the state variables)`);
  const states = ctx.inputs.slice(0, nState).map((v, i) => {
    if (v === undefined) throw new Error(`state input ${i} is missing`);
    return v;
  });
  const inputs = ctx.inputs.slice(nState).map((_, j) => ctx.tensor(nState + j));
  const rawAxes = ctx.attrs.scan_input_axes ?? new Array<number>(m).fill(0);
  if (rawAxes.length !== m) throw new Error(`scan_input_axes has ${rawAxes.length} entries, expected ${m}`);
  const inAxes = rawAxes.map((a, j) => normAxis(a, inputs[j].rank, 'scan_input_axes entry'));
  const outAxes = ctx.attrs.scan_output_axes ?? new Array<number>(nScanOut).fill(0);
  if (outAxes.length !== nScanOut) throw new Error(`scan_output_axes has ${outAxes.length} entries, expected ${nScanOut}`);
  let steps = -1;
  inputs.forEach((x, j) => {
    const len = x.dims[inAxes[j]];
    if (steps >= 0 && len !== steps) {
      throw new Error(`scan input ${j} has ${len} steps along axis ${inAxes[j]}, but scan input 0 has ${steps}`);
    }
    steps = len;
  });
  const plan: ScanPlan = {
    body, nState, inAxes, outAxes,
    inReverse: directions(ctx.attrs.scan_input_directions, m, 'scan_input_directions'),
    outReverse: directions(ctx.attrs.scan_output_directions, nScanOut, 'scan_output_directions'),
  };
  return scanOnce(ctx, plan, states, inputs, steps);
}

/** Opset 8: every state and scan input has a leading batch axis; scan inputs have the sequence on axis 1. */
function runScan8(ctx: KernelContext<ScanAttrs>, body: Graph, m: number): Value[] {
  const seqLens = ctx.optionalTensor(0);
  const rest = ctx.inputs.slice(1);
  const nState = rest.length - m;
  if (nState < 0) throw new Error(`num_scan_inputs is ${m}, but the node has only ${rest.length} inputs after sequence_lens`);
  const nScanOut = body.outputs.length - nState;
  if (nScanOut < 0) throw new Error(`the body produces ${body.outputs.length} outputs, expected at least ${nState} (the state variables)`);
  const all = rest.map((_, i) => ctx.tensor(1 + i));
  const batch = all[0].dims[0];
  all.forEach((t, i) => {
    if (t.rank < (i < nState ? 1 : 2) || t.dims[0] !== batch) {
      throw new Error(`input ${1 + i} has shape [${t.dims.join(', ')}]; expected a leading batch axis of size ${batch}`);
    }
  });
  const maxLen = m > 0 ? all[nState].dims[1] : 0;
  for (let j = nState; j < all.length; j++) {
    if (all[j].dims[1] !== maxLen) throw new Error(`scan input ${j - nState} has ${all[j].dims[1]} steps, but scan input 0 has ${maxLen}`);
  }
  let lens: number[] = new Array<number>(batch).fill(maxLen);
  if (seqLens) {
    lens = seqLens.toNumberArray();
    if (lens.length !== batch) throw new Error(`sequence_lens has ${lens.length} entries, expected one per batch entry (${batch})`);
    lens.forEach((l) => {
      if (!(l >= 0 && l <= maxLen)) throw new Error(`sequence_lens entry ${l} is out of range [0, ${maxLen}]`);
    });
  }
  const plan: ScanPlan = {
    body, nState, inAxes: new Array<number>(m).fill(0), outAxes: new Array<number>(nScanOut).fill(0),
    inReverse: directions(ctx.attrs.directions, m, 'directions'), outReverse: new Array<boolean>(nScanOut).fill(false),
  };
  const perBatch: Value[][] = [];
  for (let b = 0; b < batch; b++) {
    const slices = all.map((t) => sliceAxis(t, 0, b));
    perBatch.push(scanOnce(ctx, plan, slices.slice(0, nState), slices.slice(nState), lens[b]));
  }
  return Array.from({ length: nState + nScanOut }, (_, i) => {
    let items = perBatch.map((r) => asTensor(r[i], `output ${i}`));
    if (i >= nState) items = items.map((t) => padSteps(t, maxLen));
    return stackAxis(items, 0, `batch entry of output ${i}`);
  });
}

/** Pad a scan output [len, ...] with zeros to [maxLen, ...] (batches with shorter sequence_lens). */
function padSteps(t: TensorData, maxLen: number): TensorData {
  if (t.dims[0] === maxLen) return t;
  const out = TensorData.zeros(t.dtype, [maxLen, ...t.dims.slice(1)]);
  const src = t.data as ArrayLike<unknown>;
  const dst = out.data as unknown as unknown[];
  for (let i = 0; i < src.length; i++) dst[i] = src[i];
  return out;
}

const ops: OpDef<any>[] = [If, Loop, Scan];
export default ops;
