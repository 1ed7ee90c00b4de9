// Loading and checking ONNX backend conformance cases (shared/onnx-backend). Used by the vitest suite and by
// scripts/conformance.ts for quick runs over a subset.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadOnnx } from '../../src/onnx/reader.js';
import { decodeOptional, decodeSequence, decodeTensor } from '../../src/onnx/tensor.js';
import { executeGraph } from '../../src/ops/execute.js';
import { SequenceValue, TensorData, type Value } from '../../src/ir/tensor.js';
import type { Model, ValueType } from '../../src/ir/graph.js';
import { isFloat } from '../../src/ir/dtype.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DATA_DIR = process.env.KILN_ONNX_BACKEND_DATA ?? path.resolve(here, '../../../shared/onnx-backend');

export interface CaseInfo {
  name: string;
  suite: 'node' | 'simple';
  dir: string;
  opset: string;
  opTypes: string[];
  otherOpsets: string;
  testedOp: string;
}

export function listCases(): CaseInfo[] {
  const tsv = path.join(DATA_DIR, 'cases.tsv');
  if (!fs.existsSync(tsv)) return [];
  const lines = fs.readFileSync(tsv, 'utf8').trim().split('\n');
  const head = lines[0].split('\t');
  const col = (row: string[], name: string) => row[head.indexOf(name)];
  return lines.slice(1).map((l) => {
    const r = l.split('\t');
    const suite = col(r, 'suite') as 'node' | 'simple';
    return {
      name: col(r, 'case'), suite, dir: path.join(DATA_DIR, suite, col(r, 'case')), opset: col(r, 'opset'),
      opTypes: col(r, 'op_types').split(',').filter(Boolean), otherOpsets: col(r, 'other_opsets'), testedOp: col(r, 'tested_op'),
    };
  });
}

/** Cases that use only the default ai.onnx domain (the scope of the 96% target). */
export function isDefaultDomain(c: CaseInfo): boolean {
  return c.opset !== '-' && !c.opTypes.some((o) => o.includes(':'));
}

function readValue(file: string, type: ValueType | undefined): Value {
  const bytes = fs.readFileSync(file);
  if (type?.kind === 'sequence') return decodeSequence(bytes, file);
  if (type?.kind === 'optional') return decodeOptional(bytes, file);
  return decodeTensor(bytes, file);
}

export interface LoadedCase {
  model: Model;
  /** inputs by graph input name (input_<i>.pb belongs to graph.input[i]) */
  feeds: Map<string, Value>;
  /** static shapes of the tensor inputs (a build's profile) */
  shapes: Record<string, number[]>;
  /** expected outputs by graph output name */
  expected: Map<string, Value>;
}

/** A case's model, inputs and expected outputs. */
export async function loadCase(c: CaseInfo): Promise<LoadedCase> {
  const model = await loadOnnx(path.join(c.dir, 'model.onnx'));
  const dataDir = path.join(c.dir, 'test_data_set_0');
  const files = fs.readdirSync(dataDir);
  const feeds = new Map<string, Value>();
  const shapes: Record<string, number[]> = {};
  const inputs = model.graph.inputs;
  for (let i = 0; files.includes(`input_${i}.pb`); i++) {
    if (!inputs[i]) throw new Error(`input_${i}.pb has no matching graph input`);
    const v = readValue(path.join(dataDir, `input_${i}.pb`), inputs[i].type);
    feeds.set(inputs[i].name, v);
    if (v instanceof TensorData) shapes[inputs[i].name] = [...v.dims];
  }
  const expected = new Map<string, Value>();
  model.graph.outputs.forEach((o, j) => {
    const file = path.join(dataDir, `output_${j}.pb`);
    if (fs.existsSync(file)) expected.set(o.name, readValue(file, o.type));
  });
  return { model, feeds, shapes, expected };
}

/** Compare produced outputs with a case's expected ones; one message per mismatching output. */
export function checkOutputs(expected: Map<string, Value>, got: (name: string) => Value | undefined): string[] {
  const errors: string[] = [];
  for (const [name, e] of expected) {
    const msg = compareValues(got(name) ?? null, e);
    if (msg) errors.push(`output '${name}': ${msg}`);
  }
  return errors;
}

export async function runCase(c: CaseInfo): Promise<{ ok: true } | { ok: false; error: string }> {
  let loaded: LoadedCase;
  try {
    loaded = await loadCase(c);
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
  const got = executeGraph(loaded.model.graph, loaded.feeds, { opsets: loaded.model.opsets });
  const errors = checkOutputs(loaded.expected, (n) => got.get(n));
  return errors.length ? { ok: false, error: errors.join('\n') } : { ok: true };
}

/** Compare as ONNX's runner does: rtol 1e-3 / atol 1e-7 for floats, exact for the rest. Returns an error or ''. */
export function compareValues(actual: Value, expected: Value, rtol = 1e-3, atol = 1e-7): string {
  if (expected === null) return actual === null ? '' : 'expected an empty optional';
  if (actual === null) return 'got an empty optional';
  if (expected instanceof SequenceValue) {
    if (!(actual instanceof SequenceValue)) return 'expected a sequence';
    if (actual.items.length !== expected.items.length) return `sequence length ${actual.items.length} != ${expected.items.length}`;
    for (let i = 0; i < expected.items.length; i++) {
      const m = compareValues(actual.items[i], expected.items[i], rtol, atol);
      if (m) return `item ${i}: ${m}`;
    }
    return '';
  }
  if (!(actual instanceof TensorData)) return 'expected a tensor, got a sequence';
  return compareTensors(actual, expected, rtol, atol);
}

export function compareTensors(a: TensorData, e: TensorData, rtol: number, atol: number): string {
  if (a.dtype !== e.dtype) return `dtype ${a.dtype} != expected ${e.dtype}`;
  if (a.dims.length !== e.dims.length || a.dims.some((d, i) => d !== e.dims[i])) return `shape [${a.dims}] != expected [${e.dims}]`;
  const exactFloat = ['float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz', 'float8e8m0', 'float4e2m1'].includes(e.dtype);
  if (e.dtype === 'string' || !isFloat(e.dtype) || exactFloat) {
    for (let i = 0; i < e.size; i++) {
      const x = a.data[i], y = e.data[i];
      if (x !== y && !(exactFloat && Number.isNaN(a.get(i)) && Number.isNaN(e.get(i)))) return `element ${i}: ${String(x)} != expected ${String(y)}`;
    }
    return '';
  }
  for (let i = 0; i < e.size; i++) {
    const x = a.get(i), y = e.get(i);
    if (Number.isNaN(y) ? !Number.isNaN(x) : !(Math.abs(x - y) <= atol + rtol * Math.abs(y)) && x !== y) {
      return `element ${i}: ${x} != expected ${y} (rtol ${rtol}, atol ${atol})`;
    }
  }
  return '';
}
