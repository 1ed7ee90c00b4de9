import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadOnnx, parseOnnx } from '../../src/onnx/reader.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { pb } from '../../src/onnx/schema.js';
import { listCases } from '../conformance/cases.js';
import { tinyCnn } from '../../bench/models/zoo.js';
import type { Graph } from '../../src/ir/graph.js';

function graphDigest(g: Graph): unknown {
  return {
    nodes: g.nodes.map((n) => ({ ...n, attrs: Object.fromEntries(Object.entries(n.attrs).map(([k, a]) => [k, a.type === 'graph' ? graphDigest(a.value) : a.type === 'tensor' ? [a.value.dtype, a.value.dims, Array.from(a.value.data as ArrayLike<unknown>)] : a])) })),
    inputs: g.inputs, outputs: g.outputs,
    inits: [...g.initializers].map(([k, t]) => [k, t.dtype, t.dims, Array.from(t.data as ArrayLike<unknown>)]),
  };
}

describe('ONNX reader/writer', () => {
  it('load -> save -> load preserves the graph (zoo model and conformance models)', async () => {
    const models = [tinyCnn()];
    for (const c of listCases().filter((_, i) => i % 15 === 0)) models.push(await loadOnnx(path.join(c.dir, 'model.onnx')));
    for (const m of models) {
      const back = parseOnnx(serializeOnnx(m));
      expect(graphDigest(back.graph)).toEqual(graphDigest(m.graph));
      expect([...back.opsets]).toEqual([...m.opsets]);
    }
  });

  it('reads external data next to the model and refuses locations outside its folder', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ext-'));
    const weights = new Float32Array([1, 2, 3, 4]);
    fs.writeFileSync(path.join(dir, 'w.bin'), Buffer.concat([Buffer.alloc(8), Buffer.from(weights.buffer)]));
    const make = (location: string, offset = '8') => pb.ModelProto.encode(pb.ModelProto.fromObject({
      ir_version: 8, opset_import: [{ domain: '', version: 17 }],
      graph: {
        name: 'g', node: [{ op_type: 'Identity', input: ['w'], output: ['y'] }],
        initializer: [{ name: 'w', data_type: 1, dims: [4], data_location: 1, external_data: [{ key: 'location', value: location }, { key: 'offset', value: offset }, { key: 'length', value: '16' }] }],
        output: [{ name: 'y' }],
      },
    })).finish();
    fs.writeFileSync(path.join(dir, 'ok.onnx'), make('w.bin'));
    const m = await loadOnnx(path.join(dir, 'ok.onnx'));
    expect(Array.from(m.graph.initializers.get('w')!.data as Float32Array)).toEqual([1, 2, 3, 4]);
    for (const bad of ['../w.bin', '/etc/passwd', 'sub/../../w.bin']) {
      fs.writeFileSync(path.join(dir, 'bad.onnx'), make(bad));
      await expect(loadOnnx(path.join(dir, 'bad.onnx'))).rejects.toThrow(/outside the model's folder/);
    }
    fs.symlinkSync('/etc', path.join(dir, 'link'));
    fs.writeFileSync(path.join(dir, 'bad.onnx'), make('link/hostname', '0'));
    await expect(loadOnnx(path.join(dir, 'bad.onnx'))).rejects.toThrow(/outside the model folder/);
    fs.writeFileSync(path.join(dir, 'bad.onnx'), make('w.bin', '100'));
    await expect(loadOnnx(path.join(dir, 'bad.onnx'))).rejects.toThrow(/asks for bytes/);
    await expect(loadOnnx(make('w.bin'))).rejects.toThrow(/loaded from bytes/);
  });

  it('gives clean errors for empty, truncated and garbage files', async () => {
    const good = serializeOnnx(tinyCnn());
    expect(() => parseOnnx(new Uint8Array())).toThrow(/empty/);
    expect(() => parseOnnx(good.subarray(0, good.length / 2))).toThrow(/ONNX|bytes|tensor/);
    expect(() => parseOnnx(new TextEncoder().encode('this is not a model at all'))).toThrow();
    await expect(loadOnnx('/nonexistent/model.onnx')).rejects.toThrow(/cannot read model file/);
  });
});
