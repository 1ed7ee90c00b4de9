// Kiln IR -> ONNX ModelProto bytes (for surgeon, quantize, --dump-ir and the model zoo generators).
import fs from 'node:fs';
import type { AttrValue, Dim, Graph, Model, Node, ValueInfo, ValueType } from '../ir/graph.js';
import { onnxTypeCode } from '../ir/dtype.js';
import { ATTR_TYPE, pb } from './schema.js';
import { tensorToProto } from './tensor.js';
import type { TensorData } from '../ir/tensor.js';

const utf8 = new TextEncoder();

function typeToProto(t: ValueType): any {
  const shape = (s?: Dim[]) => (s ? { dim: s.map((d) => (typeof d === 'number' ? { dim_value: d } : typeof d === 'string' ? { dim_param: d } : {})) } : undefined);
  switch (t.kind) {
    case 'tensor': return { tensor_type: { elem_type: onnxTypeCode(t.dtype), shape: shape(t.shape) } };
    case 'sparse': return { sparse_tensor_type: { elem_type: onnxTypeCode(t.dtype), shape: shape(t.shape) } };
    case 'sequence': return { sequence_type: { elem_type: typeToProto(t.elem) } };
    case 'optional': return { optional_type: { elem_type: typeToProto(t.elem) } };
    case 'map': return { map_type: { key_type: onnxTypeCode(t.key), value_type: typeToProto(t.value) } };
    default: return {};
  }
}

const valueInfo = (v: ValueInfo) => ({ name: v.name, type: typeToProto(v.type), doc_string: v.doc });

function attrToProto(name: string, a: AttrValue): any {
  const base = { name, type: a.type === 'ref' ? undefined : ATTR_TYPE[a.type === 'type' ? 'type' : a.type === 'types' ? 'types' : a.type] };
  switch (a.type) {
    case 'float': return { ...base, f: a.value };
    case 'int': return { ...base, i: a.value };
    case 'string': return { ...base, s: utf8.encode(a.value) };
    case 'tensor': return { ...base, t: tensorToProto(a.value) };
    case 'graph': return { ...base, g: graphToProto(a.value) };
    case 'floats': return { ...base, floats: a.value };
    case 'ints': return { ...base, ints: a.value };
    case 'strings': return { ...base, strings: a.value.map((s) => utf8.encode(s)) };
    case 'tensors': return { ...base, tensors: a.value.map((t) => tensorToProto(t)) };
    case 'graphs': return { ...base, graphs: a.value.map(graphToProto) };
    case 'type': return { ...base, tp: typeToProto(a.value) };
    case 'types': return { ...base, type_protos: a.value.map(typeToProto) };
    case 'sparse_tensor': return { ...base, type: ATTR_TYPE.tensor, t: tensorToProto(a.value) };
    case 'ref': return { name, ref_attr_name: a.value };
  }
}

function nodeToProto(n: Node): any {
  return {
    name: n.name, op_type: n.opType, domain: n.domain, input: n.inputs, output: n.outputs, doc_string: n.doc,
    attribute: Object.entries(n.attrs).map(([k, a]) => attrToProto(k, a)),
  };
}

export function graphToProto(g: Graph): any {
  const declared = new Set([...g.inputs, ...g.outputs].map((v) => v.name));
  return {
    name: g.name,
    node: g.nodes.map(nodeToProto),
    initializer: [...g.initializers].map(([name, t]) => tensorToProto(t, name)),
    input: g.inputs.map(valueInfo),
    output: g.outputs.map(valueInfo),
    value_info: [...g.valueInfo].filter(([n]) => !declared.has(n)).map(([name, type]) => valueInfo({ name, type })),
    doc_string: g.doc,
  };
}

export function serializeOnnx(m: Model): Uint8Array {
  const msg = {
    ir_version: m.irVersion || 8,
    opset_import: [...m.opsets].map(([domain, version]) => ({ domain, version })),
    producer_name: m.producerName ?? 'kiln',
    producer_version: m.producerVersion,
    model_version: m.modelVersion,
    doc_string: m.docString,
    metadata_props: Object.entries(m.metadata).map(([key, value]) => ({ key, value })),
  };
  const head = pb.ModelProto.encode(pb.ModelProto.fromObject(msg)).finish();
  // The main graph's initializers are written by hand: protobufjs copies large byte fields slowly, and repeated
  // fields may be appended after the rest of the message, so the graph is its protobuf encoding plus one record per
  // initializer (GraphProto field 5), and the graph goes last in the model (ModelProto field 7).
  const g = m.graph;
  const strings = new Map([...g.initializers].filter(([, t]) => t.dtype === 'string'));
  const body = pb.GraphProto.encode(pb.GraphProto.fromObject({ ...graphToProto({ ...g, initializers: strings }) })).finish();
  const parts: Uint8Array[] = [body];
  for (const [name, t] of g.initializers) if (t.dtype !== 'string') parts.push(...lengthDelimited(5, encodeTensorFast(t, name)));
  const graphLen = parts.reduce((a, p) => a + p.length, 0);
  return Buffer.concat([head, Uint8Array.of(0x3a), varint(graphLen), ...parts]);
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Uint8Array.from(out);
}

function lengthDelimited(field: number, parts: Uint8Array[]): Uint8Array[] {
  const len = parts.reduce((a, p) => a + p.length, 0);
  return [varint((field << 3) | 2), varint(len), ...parts];
}

/** TensorProto with dims (1), data_type (2), name (8) and raw_data (9); the payload is not copied here. */
function encodeTensorFast(t: TensorData, name: string): Uint8Array[] {
  const proto = tensorToProto(t, name);
  const head: number[] = [];
  const push = (b: Uint8Array) => head.push(...b);
  for (const d of t.dims) { head.push(0x08); push(varint(d)); }
  head.push(0x10); push(varint(proto.data_type));
  const nameBytes = new TextEncoder().encode(name);
  head.push(0x42); push(varint(nameBytes.length)); push(nameBytes);
  const raw = proto.raw_data as Uint8Array;
  head.push(0x4a); push(varint(raw.length));
  return [Uint8Array.from(head), raw];
}

export async function saveOnnx(m: Model, path: string): Promise<void> {
  await fs.promises.writeFile(path, serializeOnnx(m));
}
