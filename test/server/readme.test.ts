// The README's `kiln serve` examples, run as written: the setup block in a scratch folder, a real server on
// loopback over the repository it creates, then every curl line (system curl), each response checked.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/server.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## Serving (`kiln serve`)')).split(/\n## /)[0];
const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
const setup = blocks.flatMap((b) => b.split('\n')).filter((l) => l && !l.startsWith('curl ') && !l.startsWith('npx kiln serve')).join('\n');
const curls = blocks.flatMap((b) => b.split('\n')).filter((l) => l.startsWith('curl '));

let dir: string;
let server: RunningServer;

const sh = (cmd: string) =>
  new Promise<string>((resolve, reject) =>
    execFile('sh', ['-c', cmd], { cwd: dir, timeout: 60_000 }, (e, out, err) => (e ? reject(new Error(`${cmd}\n${err || e.message}`)) : resolve(out))),
  );

/** What each README curl must answer; a curl line with no check here fails the test, so the two stay in step. */
const checks: [RegExp, (out: string) => void][] = [
  [/health\/ready/, (o) => expect(o.trim()).toBe('200')],
  [/models\/cnn$/, (o) => expect(JSON.parse(o)).toMatchObject({ name: 'cnn', inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }] })],
  [/cnn\/config$/, (o) => expect(JSON.parse(o)).toMatchObject({ max_batch_size: 8, dynamic_batching: { priority_levels: 2, default_priority_level: 2 }, instance_group: [{ count: 2, kind: 'KIND_CPU' }] })],
  [/infer/, (o) => {
    const r = JSON.parse(o);
    expect(r.outputs[0]).toMatchObject({ name: 'probabilities', datatype: 'FP32', shape: [1, 10] });
    expect(r.outputs[0].data.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 5);
  }],
  [/stats$/, (o) => expect(JSON.parse(o).model_stats[0].inference_count).toBeGreaterThanOrEqual(2)],
  [/repository\/index/, (o) => expect(JSON.parse(o)).toContainEqual({ name: 'cnn', version: '1', state: 'READY', reason: '' })],
  [/metrics/, (o) => expect(Number(o.trim().split('\n')[0].split(' ').pop())).toBeGreaterThanOrEqual(2)],
];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-readme-'));
  fs.symlinkSync(path.join(repoRoot, 'examples'), path.join(dir, 'examples'));
  await sh(setup);
  server = await startServer({ repository: path.join(dir, 'models'), httpPort: 0, grpcPort: -1, metricsPort: 0, workers: false, log: () => {} });
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("README's kiln serve examples", () => {
  it('has a setup block and curl examples', () => {
    expect(setup).toMatch(/models\/cnn\/1/);
    expect(curls.length).toBeGreaterThanOrEqual(6);
  });

  it('runs every curl line against a real server and gets the documented answers', async () => {
    const http = server.httpUrl!.replace(/^http:\/\//, '');
    const metrics = new URL(server.metricsUrl!).host;
    for (const line of curls) {
      const cmd = line.replaceAll('localhost:8000', http).replaceAll('localhost:8002', metrics);
      const url = /localhost:\d+(\S*)/.exec(line)![1];
      const check = checks.find(([re]) => re.test(url));
      expect(check, `no check for README line: ${line}`).toBeTruthy();
      const out = await sh(cmd);
      try {
        check![1](out);
      } catch (e) {
        throw new Error(`README line: ${line}\nanswered: ${out.slice(0, 500)}\n${(e as Error).message}`, { cause: e });
      }
    }
  });
});
