// A small model repository for the server tests: the tiny CNN in several configurations, and a broken model.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { saveOnnx } from '../../src/index.js';
import { tinyCnn } from '../../bench/models/zoo.js';

export async function makeRepository(): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-serve-'));
  const add = async (name: string, versions: number[], config?: { file: string; text: string }) => {
    for (const v of versions) {
      fs.mkdirSync(path.join(root, name, String(v)), { recursive: true });
      await saveOnnx(tinyCnn(v), path.join(root, name, String(v), 'model.onnx'));
    }
    if (config) fs.writeFileSync(path.join(root, name, config.file), config.text);
  };
  await add('cnn', [1], {
    file: 'config.json',
    text: JSON.stringify({
      backend: 'kiln', max_batch_size: 8,
      input: [{ name: 'input', data_type: 'TYPE_FP32', dims: [3, 32, 32] }],
      output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [10] }],
      dynamic_batching: { preferred_batch_size: [4, 8], max_queue_delay_microseconds: 200000 },
      instance_group: [{ count: 2, kind: 'KIND_CPU' }],
    }),
  });
  await add('cnn_pb', [1, 2], {
    file: 'config.pbtxt',
    text: `# Triton text format
name: "cnn_pb"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 3, 32, 32 ] } ]
output [ { name: "probabilities", data_type: TYPE_FP32, dims: [ -1, 10 ] } ]
version_policy: { all { } }
instance_group [ { count: 1 kind: KIND_CPU } ]
`,
  });
  fs.mkdirSync(path.join(root, 'broken', '1'), { recursive: true });
  fs.writeFileSync(path.join(root, 'broken', '1', 'model.onnx'), Buffer.from('not an onnx model'));
  return root;
}

/** Deterministic input rows for the tiny CNN. */
export function cnnInput(rows: number, seed = 1): Float32Array {
  const a = new Float32Array(rows * 3 * 32 * 32);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i * 0.01 + seed);
  return a;
}

export async function metricValue(url: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').pop()) : 0;
}
