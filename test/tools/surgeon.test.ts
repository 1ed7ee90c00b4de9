// kiln surgeon: extract, sanitize, insert and prune write ONNX that Kiln and onnxruntime both load and run the same.
import { describe, it, expect, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { TensorData } from '../../src/ir/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import { executeGraph } from '../../src/ops/execute.js';
import { loadOnnx, parseOnnx } from '../../src/onnx/reader.js';
import { saveOnnx, serializeOnnx } from '../../src/onnx/writer.js';
import { compareModel, makeInputData } from '../../src/tools/compare.js';
import { modelInputs } from '../../src/tools/runners.js';
import { extractSubgraph, insertNode, parseTensorRequests, pruneNodes, sanitizeModel } from '../../src/tools/surgeon.js';
import { bertBase, BERT_SMALL, tinyCnn } from '../../bench/models/zoo.js';

const exec = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-surgeon-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Reload through bytes (what a file holds), and check onnxruntime loads it and agrees with Kiln's reference kernels. */
async function roundTrip(m: Model, inputs?: Record<string, TensorData>): Promise<Model> {
  const bytes = serializeOnnx(m);
  const again = parseOnnx(bytes);
  await ort.InferenceSession.create(bytes);
  const r = await compareModel(again, { runners: ['kiln-ref', 'onnxruntime'], inputs });
  expect(r.passed, JSON.stringify(r.runners)).toBe(true);
  return again;
}

function values(m: Model, feeds: Map<string, TensorData>): Map<string, TensorData> {
  const all = new Map<string, TensorData>();
  executeGraph(m.graph, feeds, { opsets: m.opsets, onNode: (n, outs) => n.outputs.forEach((o, k) => all.set(o, outs[k] as TensorData)) });
  return all;
}

describe('surgeon', () => {
  it('extract: the subgraph between named tensors, input types inferred, gives the same values', async () => {
    const m = bertBase(BERT_SMALL);
    const from = 'encoder.layer.0.attention.self.query.add_out0', to = 'encoder.layer.0.attention.self.query.transpose_out0';
    const { model, addedInputs } = extractSubgraph(m, { inputs: [from], outputs: [to] });
    expect(model.graph.nodes.map((n) => n.opType)).toContain('Transpose');
    expect(model.graph.inputs[0]).toMatchObject({ name: from, type: { kind: 'tensor', dtype: 'float32' } });
    expect(addedInputs).toEqual(['input_ids']); // the reshape target reads the sequence length from the ids
    const feeds = makeInputData(modelInputs(m), { shapes: { input_ids: [1, 4], attention_mask: [1, 4] } });
    const full = values(m, feeds);
    const sub = executeGraph(model.graph, new Map([[from, full.get(from)!], ['input_ids', feeds.get('input_ids')!]]), { opsets: model.opsets });
    expect(Array.from((sub.get(to) as TensorData).data as Float32Array)).toEqual(Array.from(full.get(to)!.data as Float32Array));
    await roundTrip(model, { [from]: full.get(from)!, input_ids: feeds.get('input_ids')! });
  });

  it('extract: explains unknown tensors and inputs that do not feed the outputs', () => {
    const m = tinyCnn();
    expect(() => extractSubgraph(m, { inputs: [], outputs: ['conv1_out'] })).toThrow(/no tensor 'conv1_out'[\s\S]*Did you mean 'conv1_out0'/);
    expect(() => extractSubgraph(m, { inputs: ['gap_out0'], outputs: ['pool1_out0'] })).toThrow(/'gap_out0' do not feed the outputs/);
    expect(parseTensorRequests('a:1x3x?x8:float16,b')).toEqual([{ name: 'a', shape: [1, 3, undefined, 8], dtype: 'float16' }, { name: 'b' }]);
  });

  it('sanitize: with fixed input shapes, shape computations fold away; the result runs the same in Kiln and onnxruntime', async () => {
    const m = bertBase(BERT_SMALL);
    const { model, report } = sanitizeModel(m, { overrideInputShapes: { input_ids: [1, 8], attention_mask: [1, 8] } });
    expect(report.nodesAfter).toBeLessThan(report.nodesBefore * 0.6);
    expect(model.graph.nodes.some((n) => n.opType === 'Shape' || n.opType === 'Constant')).toBe(false);
    const feeds = makeInputData(modelInputs(model), {});
    const before = values(m, feeds), after = executeGraph(model.graph, feeds, { opsets: model.opsets });
    for (const o of m.graph.outputs) expect(Array.from((after.get(o.name) as TensorData).toFloat64())).toEqual(Array.from(before.get(o.name)!.toFloat64()));
    await roundTrip(model);
    expect(() => sanitizeModel(m, { overrideInputShapes: { ids: [1, 8] } })).toThrow(/'ids' is not an input/);
  });

  it('insert: a node after or before a tensor', async () => {
    const m = tinyCnn();
    const after = insertNode(m, { op: 'LeakyRelu', after: 'gap_out0', attrs: { alpha: 0.5 } });
    const n = after.graph.nodes.find((x) => x.opType === 'LeakyRelu')!;
    expect(n.inputs).toEqual(['gap_out0']);
    expect(after.graph.nodes.find((x) => x.name === 'flatten')!.inputs).toEqual([n.outputs[0]]);
    await roundTrip(after);
    const before = insertNode(m, { op: 'Neg', before: 'probabilities', name: 'negate' });
    expect(before.graph.nodes.at(-1)).toMatchObject({ name: 'negate', outputs: ['probabilities'] });
    const feeds = makeInputData(modelInputs(m), {});
    const p = executeGraph(before.graph, feeds, { opsets: before.opsets }).get('probabilities') as TensorData;
    expect(Math.max(...Array.from(p.data as Float32Array))).toBeLessThan(0);
    await roundTrip(before);
    expect(() => insertNode(m, { op: 'NoSuchOp', after: 'gap_out0' })).toThrow(/NoSuchOp/);
  });

  it('prune: removes pass-through nodes and reconnects, refuses nodes with several data inputs', async () => {
    const m = tinyCnn();
    const p = pruneNodes(m, ['conv1.relu', 'softmax']);
    expect(p.graph.nodes.map((n) => n.name)).not.toContain('conv1.relu');
    expect(p.graph.outputs[0].name).toBe('probabilities');
    expect(p.graph.nodes.find((n) => n.name === 'pool1')!.inputs).toEqual(['conv1.bn_out0']);
    await roundTrip(p);
    const b = bertBase(BERT_SMALL);
    expect(() => pruneNodes(b, ['encoder.layer.0.attention.self.scores'])).toThrow(/2 non-constant inputs/);
  });

  it('CLI writes a model Kiln loads', async () => {
    const src = path.join(tmp, 'bert.onnx'), out = path.join(tmp, 'bert.clean.onnx');
    await saveOnnx(bertBase(BERT_SMALL), src);
    const { stdout } = await exec(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'surgeon', 'sanitize', src, '-o', out, '--override-input-shapes', 'input_ids:1x8,attention_mask:1x8']);
    expect(stdout).toMatch(/150 -> \d+ nodes \(\d+ folded/);
    expect((await loadOnnx(out)).graph.nodes.length).toBeLessThan(100);
  });
});
