import type { DType } from './dtype.js';
import type { TensorData } from './tensor.js';

/** A dimension: a known size, a symbolic name ('batch'), or unknown (undefined). */
export type Dim = number | string | undefined;

/** Static type of a graph value. `shape` undefined means unknown rank. */
export type ValueType =
  | { kind: 'tensor'; dtype: DType; shape?: Dim[] }
  | { kind: 'sequence'; elem: ValueType }
  | { kind: 'optional'; elem: ValueType }
  | { kind: 'map'; key: DType; value: ValueType }
  | { kind: 'sparse'; dtype: DType; shape?: Dim[] }
  | { kind: 'unknown' };

export const tensorType = (dtype: DType, shape?: Dim[]): ValueType => ({ kind: 'tensor', dtype, shape });

export function formatType(t: ValueType | undefined): string {
  if (!t) return '?';
  switch (t.kind) {
    case 'tensor': case 'sparse':
      return `${t.kind === 'sparse' ? 'sparse ' : ''}${t.dtype}${t.shape ? `[${t.shape.map((d) => d ?? '?').join(',')}]` : '[*]'}`;
    case 'sequence': return `seq(${formatType(t.elem)})`;
    case 'optional': return `optional(${formatType(t.elem)})`;
    case 'map': return `map(${t.key},${formatType(t.value)})`;
    default: return '?';
  }
}

export interface ValueInfo {
  name: string;
  type: ValueType;
  doc?: string;
}

export type AttrValue =
  | { type: 'float'; value: number }
  | { type: 'int'; value: number }
  | { type: 'string'; value: string }
  | { type: 'tensor'; value: TensorData }
  | { type: 'graph'; value: Graph }
  | { type: 'type'; value: ValueType }
  | { type: 'floats'; value: number[] }
  | { type: 'ints'; value: number[] }
  | { type: 'strings'; value: string[] }
  | { type: 'tensors'; value: TensorData[] }
  | { type: 'graphs'; value: Graph[] }
  | { type: 'types'; value: ValueType[] }
  | { type: 'sparse_tensor'; value: TensorData }
  /** Inside a function body: takes the value of the calling node's attribute `value`. */
  | { type: 'ref'; value: string };

export interface Node {
  name: string;
  opType: string;
  /** '' is the default ONNX domain (ai.onnx). */
  domain: string;
  /** Input value names; '' marks an omitted optional input. */
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  doc?: string;
}

export interface Graph {
  name: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Map<string, TensorData>;
  /** Types of intermediate values, as recorded in the model or inferred. */
  valueInfo: Map<string, ValueType>;
  doc?: string;
}

export interface Model {
  irVersion: number;
  /** domain -> opset version ('' is ai.onnx). */
  opsets: Map<string, number>;
  graph: Graph;
  producerName?: string;
  producerVersion?: string;
  modelVersion?: number;
  docString?: string;
  metadata: Record<string, string>;
  /** Where the model was read from, for error messages and external data. */
  path?: string;
}

export function emptyGraph(name = 'main'): Graph {
  return { name, nodes: [], inputs: [], outputs: [], initializers: new Map(), valueInfo: new Map() };
}

/** "node 'conv1' (Conv)" — how errors name a node. */
export function nodeLabel(n: Pick<Node, 'name' | 'opType' | 'domain'>): string {
  const op = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType;
  return n.name ? `node '${n.name}' (${op})` : `unnamed ${op} node`;
}

/** Names of values a graph reads from an enclosing scope (used by subgraphs of If/Loop/Scan). */
export function outerScopeNames(g: Graph): Set<string> {
  const defined = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  const used = new Set<string>();
  for (const n of g.nodes) {
    for (const i of n.inputs) if (i && !defined.has(i)) used.add(i);
    for (const a of Object.values(n.attrs)) {
      const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
      for (const s of subs) for (const name of outerScopeNames(s)) if (!defined.has(name)) used.add(name);
    }
    for (const o of n.outputs) defined.add(o);
  }
  for (const o of g.outputs) if (!defined.has(o.name)) used.add(o.name);
  return used;
}
