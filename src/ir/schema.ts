// The op-schema registry: every operator is declared once (src/ops/*) with its opset versions, attributes and
// their defaults, shape/dtype inference and its reference kernel. Everything else — the executor, constant folding,
// `kiln inspect`, README's operator table, the conformance skip logic — reads this registry.

import type { AttrValue, Graph, Node, ValueType } from './graph.js';
import { nodeLabel } from './graph.js';
import type { TensorData, Value } from './tensor.js';
import { KilnError } from './errors.js';

// ---------------------------------------------------------------------------------------------------------------
// attributes

export interface AttrSpec<T> {
  type: AttrValue['type'];
  default?: T;
  required?: boolean;
}
type Parsed<A> = { [K in keyof A]: A[K] extends AttrSpec<infer T> ? T : never };

function spec<T>(type: AttrValue['type']) {
  function make(): AttrSpec<T | undefined>;
  function make(d: T): AttrSpec<T>;
  function make(d?: T): AttrSpec<T | undefined> {
    return { type, default: d };
  }
  return make;
}

/** Attribute declarations: `attrs: { axis: attr.int(1), pads: attr.ints() }` (no default: value may be undefined). */
export const attr = {
  int: spec<number>('int'),
  float: spec<number>('float'),
  string: spec<string>('string'),
  ints: spec<number[]>('ints'),
  floats: spec<number[]>('floats'),
  strings: spec<string[]>('strings'),
  tensor: spec<TensorData>('tensor'),
  tensors: spec<TensorData[]>('tensors'),
  graph: spec<Graph>('graph'),
  graphs: spec<Graph[]>('graphs'),
  type: spec<ValueType>('type'),
  sparseTensor: spec<TensorData>('sparse_tensor'),
};
export type AttrSpecs = Record<string, AttrSpec<unknown>>;
export type AttrsOf<A extends AttrSpecs> = Parsed<A>;

// ---------------------------------------------------------------------------------------------------------------
// kernel and inference contexts

export interface KernelContext<A> {
  node: Node;
  /** The opset version the model imports for this op's domain. */
  opset: number;
  attrs: A;
  /** Input values in order; `undefined` where an optional input is omitted ('' in the node). */
  inputs: (Value | undefined)[];
  /** Number of outputs the node declares (trailing optional outputs may be absent). */
  numOutputs: number;
  /** Whether output i is requested (declared and not ''). */
  wantsOutput(i: number): boolean;
  /** Input i as a tensor; throws a descriptive error if it is missing or not a tensor. */
  tensor(i: number): TensorData;
  /** Input i as a tensor, or undefined when omitted (or an empty optional). */
  optionalTensor(i: number): TensorData | undefined;
  /** Run a subgraph attribute with the given inputs; outer-scope names resolve to this node's scope. */
  runSubgraph(graph: Graph, inputs: Value[]): Value[];
  /** Uniform random numbers in [0, 1): seeded by the node's `seed` attribute when present. */
  random(): number;
}

export interface InferContext<A> {
  node: Node;
  opset: number;
  attrs: A;
  /** Static types of inputs; undefined for an omitted input or unknown type. */
  inputTypes: (ValueType | undefined)[];
  /** Value of input i when it is a known constant (initializer or folded), else undefined. */
  constant(i: number): TensorData | undefined;
  numOutputs: number;
}

export interface OpDef<A extends AttrSpecs = AttrSpecs> {
  name: string;
  /** '' = ai.onnx */
  domain?: string;
  /** Opset versions in which this op's definition changed, ascending; the first is when it was introduced. */
  versions: number[];
  attrs: A;
  /** [min, max] number of inputs (max Infinity for variadic). */
  inputs: [number, number];
  outputs: [number, number];
  /** Output types from input types (dtype always; shape where it can be determined). */
  infer?(ctx: InferContext<Parsed<A>>): ValueType[];
  /** The reference kernel: plain TypeScript over typed arrays. */
  run(ctx: KernelContext<Parsed<A>>): Value[];
  /** A one-line description for `kiln inspect` and the operator table. */
  doc?: string;
}

export function defineOp<A extends AttrSpecs>(def: OpDef<A>): OpDef<A> {
  return def;
}

// ---------------------------------------------------------------------------------------------------------------
// registry

const registry = new Map<string, OpDef>();
const key = (domain: string, name: string) => `${domain === 'ai.onnx' ? '' : domain}:${name}`;

export function registerOps(defs: OpDef<any>[]): void {
  for (const d of defs) {
    const k = key(d.domain ?? '', d.name);
    if (registry.has(k)) throw new Error(`operator ${k} is declared twice`);
    registry.set(k, d as OpDef);
  }
}

export function allOps(): OpDef[] {
  return [...registry.values()].sort((a, b) => (a.domain ?? '').localeCompare(b.domain ?? '') || a.name.localeCompare(b.name));
}

export function lookupOp(domain: string, name: string): OpDef | undefined {
  return registry.get(key(domain, name));
}

/** Find the op for a node, checking its opset; throws an error naming the node, op, domain and version. */
export function resolveOp(node: Node, opsets: Map<string, number>): { def: OpDef; opset: number } {
  const domain = node.domain === 'ai.onnx' ? '' : node.domain;
  const def = registry.get(key(domain, node.opType));
  const opset = opsets.get(domain) ?? (domain === '' ? opsets.get('ai.onnx') : undefined);
  if (!def) {
    const where = domain ? `domain '${domain}'` : 'the default ONNX domain';
    throw new KilnError(`${nodeLabel(node)}: operator ${node.opType} of ${where} is not supported by Kiln.`, {
      hint: domain && domain !== 'ai.onnx' ? 'Custom and non-standard domains are not supported; export the model with standard ONNX ops.' : 'Run `kiln inspect MODEL` to list unsupported operators.',
    });
  }
  if (opset === undefined) throw new KilnError(`${nodeLabel(node)}: the model does not import an opset for domain '${domain || 'ai.onnx'}'.`);
  if (opset < def.versions[0]) {
    throw new KilnError(`${nodeLabel(node)}: ${node.opType} was introduced in opset ${def.versions[0]}, but the model imports opset ${opset}.`);
  }
  return { def, opset };
}

/** Parse a node's attributes against an op's declarations: applies defaults and checks types. */
export function parseAttrs<A extends AttrSpecs>(def: OpDef<A>, node: Node): Parsed<A> {
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(def.attrs)) {
    const a = node.attrs[name];
    if (a === undefined) {
      if (s.required) throw new KilnError(`${nodeLabel(node)}: required attribute '${name}' is missing.`);
      out[name] = s.default;
      continue;
    }
    out[name] = coerceAttr(a, s.type, node, name);
  }
  return out as Parsed<A>;
}

function coerceAttr(a: AttrValue, want: AttrValue['type'], node: Node, name: string): unknown {
  if (a.type === want) return a.value;
  // tolerate scalar/list mismatches that some exporters produce
  if (want === 'ints' && a.type === 'int') return [a.value];
  if (want === 'floats' && (a.type === 'float' || a.type === 'int')) return [a.value];
  if (want === 'floats' && a.type === 'ints') return a.value;
  if (want === 'float' && a.type === 'int') return a.value;
  if (want === 'strings' && a.type === 'string') return [a.value];
  if (want === 'ints' && a.type === 'floats' && a.value.length === 0) return [];
  if (want === 'floats' && a.type === 'ints' && a.value.length === 0) return [];
  throw new KilnError(`${nodeLabel(node)}: attribute '${name}' should be of type ${want}, found ${a.type}.`);
}
