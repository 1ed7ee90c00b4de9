// A small programmatic graph builder, used by the model zoo, tests and tools that synthesize models.
import type { AttrValue, Dim, Graph, Model, ValueType } from './graph.js';
import { emptyGraph } from './graph.js';
import type { DType } from './dtype.js';
import { TensorData } from './tensor.js';

type AttrInput = number | string | number[] | string[] | TensorData | Graph | AttrValue;

function toAttr(v: AttrInput): AttrValue {
  // ONNX float attributes are float32: round now so a model round-trips through its file unchanged
  if (typeof v === 'number') return Number.isInteger(v) ? { type: 'int', value: v } : { type: 'float', value: Math.fround(v) };
  if (typeof v === 'string') return { type: 'string', value: v };
  if (v instanceof TensorData) return { type: 'tensor', value: v };
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) return { type: 'strings', value: v as string[] };
    return (v as number[]).every(Number.isInteger) ? { type: 'ints', value: v as number[] } : { type: 'floats', value: (v as number[]).map(Math.fround) };
  }
  if ('nodes' in v) return { type: 'graph', value: v };
  return v;
}

/** Force a float attribute even for integral values (e.g. alpha: 1.0). */
export const float = (value: number): AttrValue => ({ type: 'float', value: Math.fround(value) });

export class GraphBuilder {
  readonly graph: Graph;
  private counter = 0;
  constructor(name = 'main') {
    this.graph = emptyGraph(name);
  }

  input(name: string, dtype: DType, shape?: Dim[]): string {
    this.graph.inputs.push({ name, type: { kind: 'tensor', dtype, shape } });
    return name;
  }

  initializer(name: string, t: TensorData): string {
    this.graph.initializers.set(name, t);
    return name;
  }

  /** Add a node; returns its output names. Inputs may be '' for omitted optional inputs. */
  node(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, opts: { outputs?: number | string[]; name?: string; domain?: string } = {}): string[] {
    const id = this.counter++;
    const name = opts.name ?? `${opType.toLowerCase()}_${id}`;
    const outs = Array.isArray(opts.outputs) ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, (_, k) => `${name}_out${k}`);
    const a: Record<string, AttrValue> = {};
    for (const [k, v] of Object.entries(attrs)) a[k] = toAttr(v);
    this.graph.nodes.push({ name, opType, domain: opts.domain ?? '', inputs, outputs: outs, attrs: a });
    return outs;
  }

  /** Shorthand for a single-output node. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, name?: string): string {
    return this.node(opType, inputs, attrs, { name })[0];
  }

  output(name: string, type: ValueType = { kind: 'unknown' }): void {
    this.graph.outputs.push({ name, type });
  }

  model(opset = 17, extra: Partial<Model> = {}): Model {
    return { irVersion: 8, opsets: new Map([['', opset]]), graph: this.graph, metadata: {}, producerName: 'kiln', ...extra };
  }
}

/** Deterministic pseudo-random numbers (mulberry32) for synthetic weights. */
export function seededRandom(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A float32 tensor of normally distributed values with standard deviation `std` (He-style init by default). */
export function randomTensor(rand: () => number, dims: number[], std = 0.05): TensorData {
  const n = dims.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(rand(), 1e-12), u2 = rand();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    v[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) v[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return new TensorData('float32', dims, v);
}
