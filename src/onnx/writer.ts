// Kiln IR -> ONNX ModelProto bytes (for surgeon, quantize, --dump-ir and the model zoo generators).
import fs from 'node:fs';
import type { AttrValue, Dim, Graph, Model, Node, ValueInfo, ValueType } from '../ir/graph.js';
import { onnxTypeCode } from '../ir/dtype.js';
import { ATTR_TYPE, pb } from './schema.js';
import { tensorToProto } from './tensor.js';

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
    graph: graphToProto(m.graph),
    metadata_props: Object.entries(m.metadata).map(([key, value]) => ({ key, value })),
  };
  return pb.ModelProto.encode(pb.ModelProto.fromObject(msg)).finish();
}

export async function saveOnnx(m: Model, path: string): Promise<void> {
  await fs.promises.writeFile(path, serializeOnnx(m));
}
