// ONNX ModelProto -> Kiln IR.
import fs from 'node:fs';
import path from 'node:path';
import type { AttrValue, Graph, Model, Node, ValueInfo, ValueType } from '../ir/graph.js';
import { dtypeFromOnnx, type DType } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { ModelError } from '../ir/errors.js';
import { ATTR_TYPE, pb, toNum } from './schema.js';
import { type ExternalDataOptions, tensorFromProto } from './tensor.js';
import { inlineFunctions, type FunctionDef } from './functions.js';

const utf8 = new TextDecoder();

/** Read an ONNX model from a file path or from its bytes. */
export async function loadOnnx(source: string | Uint8Array, opts: { baseDir?: string } = {}): Promise<Model> {
  if (typeof source === 'string') {
    let bytes: Buffer;
    try {
      bytes = await fs.promises.readFile(source);
    } catch (e) {
      throw new ModelError(`cannot read model file '${source}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}.`);
    }
    return parseOnnx(bytes, { path: source, baseDir: opts.baseDir ?? path.dirname(path.resolve(source)) });
  }
  return parseOnnx(source, opts);
}

export function parseOnnx(bytes: Uint8Array, opts: { path?: string; baseDir?: string } = {}): Model {
  const where = opts.path ?? 'model bytes';
  if (bytes.length === 0) throw new ModelError(`${where}: the file is empty.`);
  let m: any;
  try {
    m = pb.ModelProto.decode(bytes);
  } catch (e) {
    throw new ModelError(`${where}: not a valid ONNX model (${(e as Error).message}).`, {
      hint: 'The file may be truncated or not an ONNX file. Re-export it, or check it with `kiln inspect`.',
    });
  }
  if (!m.graph) throw new ModelError(`${where}: the model has no graph (is this an ONNX ModelProto?).`);
  const opsets = new Map<string, number>();
  for (const o of m.opset_import ?? []) opsets.set(o.domain === 'ai.onnx' ? '' : (o.domain ?? ''), toNum(o.version));
  if (opsets.size === 0) opsets.set('', 1); // IR version < 3 models have no opset_import
  const ctx: ReadCtx = { where, ext: { baseDir: opts.baseDir, modelPath: opts.path } };
  const graph = readGraph(m.graph, ctx, 'graph');
  const functions: FunctionDef[] = (m.functions ?? []).map((f: any) => readFunction(f, ctx));
  const metadata: Record<string, string> = {};
  for (const e of m.metadata_props ?? []) metadata[e.key] = e.value;
  const model: Model = {
    irVersion: toNum(m.ir_version),
    opsets,
    graph,
    producerName: m.producer_name || undefined,
    producerVersion: m.producer_version || undefined,
    modelVersion: toNum(m.model_version) || undefined,
    docString: m.doc_string || undefined,
    metadata,
    path: opts.path,
  };
  if (functions.length) inlineFunctions(model, functions);
  return model;
}

interface ReadCtx {
  where: string;
  ext: ExternalDataOptions;
}

export function readType(tp: any, where: string): ValueType {
  if (!tp) return { kind: 'unknown' };
  const elem = (code: number): DType => {
    try {
      return dtypeFromOnnx(code);
    } catch (e) {
      throw new ModelError(`${where}: ${(e as Error).message}`);
    }
  };
  const shape = (s: any) =>
    s ? (s.dim ?? []).map((d: any) => (d.dim_value != null && d.value === 'dim_value' ? toNum(d.dim_value) : d.dim_param ? d.dim_param : undefined)) : undefined;
  if (tp.tensor_type) {
    const code = toNum(tp.tensor_type.elem_type);
    return code ? { kind: 'tensor', dtype: elem(code), shape: shape(tp.tensor_type.shape) } : { kind: 'unknown' };
  }
  if (tp.sparse_tensor_type) return { kind: 'sparse', dtype: elem(toNum(tp.sparse_tensor_type.elem_type)), shape: shape(tp.sparse_tensor_type.shape) };
  if (tp.sequence_type) return { kind: 'sequence', elem: readType(tp.sequence_type.elem_type, where) };
  if (tp.optional_type) return { kind: 'optional', elem: readType(tp.optional_type.elem_type, where) };
  if (tp.map_type) return { kind: 'map', key: elem(toNum(tp.map_type.key_type)), value: readType(tp.map_type.value_type, where) };
  return { kind: 'unknown' };
}

function readValueInfo(v: any, where: string): ValueInfo {
  return { name: v.name ?? '', type: readType(v.type, `${where} '${v.name}'`), doc: v.doc_string || undefined };
}

function readGraph(g: any, ctx: ReadCtx, label: string): Graph {
  const where = `${ctx.where}, ${label}${g.name ? ` '${g.name}'` : ''}`;
  const initializers = new Map<string, TensorData>();
  for (const t of g.initializer ?? []) {
    if (!t.name) throw new ModelError(`${where}: an initializer has no name.`);
    initializers.set(t.name, tensorFromProto(t, `${where}, initializer '${t.name}'`, ctx.ext));
  }
  for (const s of g.sparse_initializer ?? []) {
    const t = sparseToDense(s, `${where}, sparse initializer`, ctx);
    initializers.set(s.values?.name ?? '', t);
  }
  const valueInfo = new Map<string, ValueType>();
  for (const v of g.value_info ?? []) valueInfo.set(v.name, readType(v.type, `${where} value_info '${v.name}'`));
  const nodes: Node[] = (g.node ?? []).map((n: any, i: number) => readNode(n, ctx, `${where}, node ${i}${n.name ? ` '${n.name}'` : ''} (${n.op_type})`));
  return {
    name: g.name ?? '',
    nodes,
    inputs: (g.input ?? []).map((v: any) => readValueInfo(v, `${where} input`)),
    outputs: (g.output ?? []).map((v: any) => readValueInfo(v, `${where} output`)),
    initializers,
    valueInfo,
    doc: g.doc_string || undefined,
  };
}

function readNode(n: any, ctx: ReadCtx, where: string): Node {
  if (!n.op_type) throw new ModelError(`${where}: node has no op_type.`);
  const attrs: Record<string, AttrValue> = {};
  for (const a of n.attribute ?? []) {
    if (!a.name) throw new ModelError(`${where}: an attribute has no name.`);
    attrs[a.name] = readAttr(a, ctx, `${where}, attribute '${a.name}'`);
  }
  return {
    name: n.name ?? '',
    opType: n.op_type,
    domain: n.domain === 'ai.onnx' ? '' : (n.domain ?? ''),
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attrs,
    doc: n.doc_string || undefined,
  };
}

export function readAttr(a: any, ctx: ReadCtx, where: string): AttrValue {
  let type = toNum(a.type);
  if (a.ref_attr_name) return { type: 'ref', value: a.ref_attr_name };
  if (!type) type = guessAttrType(a); // IR version < 3 files may omit the type
  switch (type) {
    case ATTR_TYPE.float: return { type: 'float', value: a.f ?? 0 };
    case ATTR_TYPE.int: return { type: 'int', value: toNum(a.i) };
    case ATTR_TYPE.string: return { type: 'string', value: utf8.decode(a.s ?? new Uint8Array()) };
    case ATTR_TYPE.tensor: return { type: 'tensor', value: tensorFromProto(a.t ?? {}, where, ctx.ext) };
    case ATTR_TYPE.graph: return { type: 'graph', value: readGraph(a.g ?? {}, ctx, `${where}, subgraph`) };
    case ATTR_TYPE.floats: return { type: 'floats', value: [...(a.floats ?? [])] };
    case ATTR_TYPE.ints: return { type: 'ints', value: (a.ints ?? []).map(toNum) };
    case ATTR_TYPE.strings: return { type: 'strings', value: (a.strings ?? []).map((s: Uint8Array) => utf8.decode(s)) };
    case ATTR_TYPE.tensors: return { type: 'tensors', value: (a.tensors ?? []).map((t: any) => tensorFromProto(t, where, ctx.ext)) };
    case ATTR_TYPE.graphs: return { type: 'graphs', value: (a.graphs ?? []).map((g: any, i: number) => readGraph(g, ctx, `${where}[${i}]`)) };
    case ATTR_TYPE.sparse_tensor: return { type: 'sparse_tensor', value: sparseToDense(a.sparse_tensor, where, ctx) };
    case ATTR_TYPE.type: return { type: 'type', value: readType(a.tp, where) };
    case ATTR_TYPE.types: return { type: 'types', value: (a.type_protos ?? []).map((t: any) => readType(t, where)) };
    default: throw new ModelError(`${where}: attribute has unknown type code ${type}.`);
  }
}

function guessAttrType(a: any): number {
  if (a.floats?.length) return ATTR_TYPE.floats;
  if (a.ints?.length) return ATTR_TYPE.ints;
  if (a.strings?.length) return ATTR_TYPE.strings;
  if (a.tensors?.length) return ATTR_TYPE.tensors;
  if (a.graphs?.length) return ATTR_TYPE.graphs;
  if (a.t) return ATTR_TYPE.tensor;
  if (a.g) return ATTR_TYPE.graph;
  if (a.s?.length) return ATTR_TYPE.string;
  if (a.i != null && toNum(a.i) !== 0) return ATTR_TYPE.int;
  if (a.f != null && a.f !== 0) return ATTR_TYPE.float;
  return ATTR_TYPE.int;
}

/** Sparse tensors (COO) are densified on import: Kiln's kernels are dense. */
function sparseToDense(s: any, where: string, ctx: ReadCtx): TensorData {
  if (!s?.values) throw new ModelError(`${where}: sparse tensor has no values.`);
  const values = tensorFromProto(s.values, where, ctx.ext);
  const indices = s.indices ? tensorFromProto(s.indices, where, ctx.ext) : undefined;
  const dims = (s.dims ?? []).map(toNum);
  const out = TensorData.zeros(values.dtype, dims);
  const nnz = values.size;
  const idx = indices ? indices.toNumberArray() : [];
  const rank = dims.length;
  const strides = dims.map((_: number, i: number) => dims.slice(i + 1).reduce((a: number, b: number) => a * b, 1));
  for (let k = 0; k < nnz; k++) {
    let flat: number;
    if (indices && indices.rank === 2) {
      flat = 0;
      for (let r = 0; r < rank; r++) flat += idx[k * rank + r] * strides[r];
    } else flat = idx[k];
    if (!(flat >= 0 && flat < out.size)) throw new ModelError(`${where}: sparse index ${flat} is outside the tensor's ${out.size} elements.`);
    (out.data as unknown as unknown[])[flat] = (values.data as unknown as unknown[])[k];
  }
  return out;
}

function readFunction(f: any, ctx: ReadCtx): FunctionDef {
  const where = `${ctx.where}, function '${f.domain ?? ''}:${f.name}'`;
  const attrDefaults: Record<string, AttrValue> = {};
  for (const a of f.attribute_proto ?? []) attrDefaults[a.name] = readAttr(a, ctx, `${where}, attribute '${a.name}'`);
  const opsets = new Map<string, number>();
  for (const o of f.opset_import ?? []) opsets.set(o.domain === 'ai.onnx' ? '' : (o.domain ?? ''), toNum(o.version));
  return {
    name: f.name,
    domain: f.domain ?? '',
    overload: f.overload ?? '',
    inputs: [...(f.input ?? [])],
    outputs: [...(f.output ?? [])],
    attributes: [...(f.attribute ?? []), ...Object.keys(attrDefaults)],
    attrDefaults,
    nodes: (f.node ?? []).map((n: any, i: number) => readNode(n, ctx, `${where}, node ${i} (${n.op_type})`)),
    opsets,
  };
}
