// Load test: autocannon (this process) against `kiln serve` and against a fastify + onnxruntime-node server, each
// started as a child process on loopback. Reports throughput, latency percentiles, errors and server RSS growth.
// Usage: tsx bench/serve/load.ts [--duration 60] [--connections 256] [--json out.json]
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { saveOnnx } from '../../src/index.js';
import { tinyCnn } from '../models/zoo.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const duration = arg('duration', 60);
const connections = arg('connections', 256);
const instances = arg('instances', Math.max(1, Math.min(4, os.cpus().length)));

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-load-'));
fs.mkdirSync(path.join(root, 'cnn', '1'), { recursive: true });
const onnx = path.join(root, 'cnn', '1', 'model.onnx');
await saveOnnx(tinyCnn(), onnx);
fs.writeFileSync(path.join(root, 'cnn', 'config.json'), JSON.stringify({
  max_batch_size: 64,
  dynamic_batching: { preferred_batch_size: [32, 64], max_queue_delay_microseconds: 2000 },
  instance_group: [{ count: instances, kind: 'KIND_CPU' }],
}));

const data = Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.01));
const body = JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data }] });
const tsx = path.resolve('node_modules/.bin/tsx');

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** The node process serving (tsx spawns node as a child; its RSS is what we watch). */
function serverPid(child: ChildProcess): number {
  const kids = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  return kids.length ? Number(kids[kids.length - 1]) : child.pid!;
}

async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/v2/health/ready`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server on port ${port} never became ready`);
}

async function measure(name: string, args: string[], port: number) {
  const child = spawn(tsx, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitReady(port);
    const pid = serverPid(child);
    const opts = { url: `http://127.0.0.1:${port}/v2/models/cnn/infer`, method: 'POST' as const, headers: { 'content-type': 'application/json' }, body, connections };
    await autocannon({ ...opts, duration: Math.min(10, Math.max(3, duration / 6)) }); // warm-up
    const rss0 = rssKb(pid);
    let rssMax = rss0;
    const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssKb(pid))), 1000);
    const r = await autocannon({ ...opts, duration });
    clearInterval(sampler);
    const rss1 = rssKb(pid);
    return {
      name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx, timeouts: r.timeouts, non2xx: r.non2xx, total: r.requests.total,
      rssWarmMiB: rss0 / 1024, rssEndMiB: rss1 / 1024, rssMaxMiB: rssMax / 1024, rssGrowthPct: ((rss1 - rss0) / rss0) * 100,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

const kiln = await measure('kiln serve (dynamic batching)', ['src/cli/main.ts', 'serve', '--model-repository', root, '--http-port', '18100', '--grpc-port', '-1', '--metrics-port', '-1'], 18100);
const ortB = await measure('fastify + onnxruntime-node', ['bench/serve/ort-baseline.ts', onnx, '18101'], 18101);
const rows = [kiln, ortB];
console.log(`\n${duration} s at ${connections} connections, tiny CNN fp32 1x3x32x32 JSON requests, ${os.cpus().length} cores (${os.cpus()[0].model}), ${instances} Kiln instances`);
console.log('| server | req/s | p50 (ms) | p99 (ms) | errors (non-2xx) | timeouts | requests | RSS warm → end (MiB) | RSS growth | memory flat (< 5%) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const flat = r.rssGrowthPct < 5 ? 'yes' : 'NO';
  console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} (${r.non2xx}) | ${r.timeouts} | ${r.total} | ${r.rssWarmMiB.toFixed(0)} → ${r.rssEndMiB.toFixed(0)} (max ${r.rssMaxMiB.toFixed(0)}) | ${r.rssGrowthPct.toFixed(1)}% | ${flat} |`);
}
console.log(`Kiln/ORT throughput: ${(kiln.rps / ortB.rps).toFixed(2)}×; p99 ${kiln.p99} vs ${ortB.p99} ms (issue 9's target: >= 2× at equal or better p99)`);
const out = process.argv.indexOf('--json');
if (out > 0) fs.writeFileSync(process.argv[out + 1], JSON.stringify(rows, null, 2));
fs.rmSync(root, { recursive: true, force: true });
