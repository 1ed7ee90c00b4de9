// Load test: autocannon (this process) against `kiln serve` and against a fastify + onnxruntime-node server, each
// started as a child process on loopback, back to back. Two wire formats: KServe JSON tensors, and the binary tensor
// extension (what a performance-minded Triton client sends; the baseline gets the same binary path). Reports
// throughput, latency percentiles, errors, CPU time per request, server RSS growth after warm-up and, for Kiln, what
// its /metrics say: batch sizes formed, queueing time, main-thread event-loop utilization, per-thread memory.
// Two models (bench/serve/models.ts says why): the tiny CNN, where one request computes in ~0.1 ms and the test
// measures HTTP plumbing, and an MLP whose batch-1 run streams 24.5 MiB of weights, where batching pays.
// Usage: tsx bench/serve/load.ts [--duration 60] [--connections 256] [--instances N] [--body json|binary|both]
//        [--model tiny-cnn|mlp|both (default)] [--cpu-instances auto|main|workers[,...]] [--decode-threads N[,M...]]
//        [--ort-threads default|N[,...]] [--json out.json]
// --cpu-instances and --decode-threads run one Kiln row per value (e.g. `--cpu-instances main,workers`), each against
// the same baseline row(s); --ort-threads runs one baseline row per value (default: onnxruntime's default options;
// N: intraOpNumThreads N), and Kiln is compared with the first.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { saveOnnx } from '../../src/index.js';
import { tinyCnn } from '../models/zoo.js';
import { mlp, MLP_DEFAULT } from './models.js';

const argOf = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const arg = (name: string, dflt: number) => Number(argOf(name) ?? dflt);
const duration = arg('duration', 60);
const connections = arg('connections', 256);
const instances = arg('instances', Math.max(1, Math.min(4, os.cpus().length)));
const bodies = (argOf('body') ?? 'both') === 'both' ? ['json', 'binary'] : [argOf('body')!];
const decodeThreads = argOf('decode-threads')?.split(',') ?? [undefined];
const cpuInstances = argOf('cpu-instances')?.split(',') ?? [undefined];
const ortThreads = argOf('ort-threads')?.split(',') ?? ['default'];
const models = (argOf('model') ?? 'both') === 'both' ? ['tiny-cnn', 'mlp'] : [argOf('model')!];
const MODELS: Record<string, { model: () => ReturnType<typeof tinyCnn>; row: number[]; about: string }> = {
  'tiny-cnn': { model: tinyCnn, row: [3, 32, 32], about: 'tiny CNN fp32 1x3x32x32 per request' },
  mlp: { model: mlp, row: [MLP_DEFAULT.inputs], about: `MLP fp32 1x${MLP_DEFAULT.inputs} per request (6.4 M weights)` },
};

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-load-'));
for (const name of models) {
  if (!MODELS[name]) throw new Error(`--model: unknown model '${name}' (tiny-cnn, mlp or both)`);
  fs.mkdirSync(path.join(root, name, '1'), { recursive: true });
  await saveOnnx(MODELS[name].model(), path.join(root, name, '1', 'model.onnx'));
  fs.writeFileSync(path.join(root, name, 'config.json'), JSON.stringify({
    max_batch_size: 64,
    dynamic_batching: { preferred_batch_size: [32, 64], max_queue_delay_microseconds: 2000 },
    instance_group: [{ count: instances, kind: 'KIND_CPU' }],
  }));
}

type Req = { body: Buffer | string; headers: Record<string, string> };
function requestsFor(row: number[]): Record<string, Req> {
  const values = Float32Array.from({ length: row.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.01));
  const head = Buffer.from(JSON.stringify({
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, ...row], parameters: { binary_data_size: values.byteLength } }],
    parameters: { binary_data_output: true },
  }));
  return {
    json: {
      body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, ...row], data: Array.from(values) }] }),
      headers: { 'content-type': 'application/json' },
    },
    binary: {
      body: Buffer.concat([head, Buffer.from(values.buffer)]),
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) },
    },
  };
}
const tsx = path.resolve('node_modules/.bin/tsx');

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** CPU seconds (user + system) of a process, or of one of its threads (the main thread's id is the pid). */
function cpuSeconds(pid: number, tid?: number): number {
  const stat = fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
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

/** Kiln's Prometheus samples, keyed by metric name plus labels as written. */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text();
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

const sum = (m: Map<string, number>, prefix: string) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((s, [, v]) => s + v, 0);
const mib = (b: number) => +(b / 2 ** 20).toFixed(1);
/** Per-thread memory from kiln_thread_memory_bytes: { main: { rss, heap_used, ... }, 'cnn/1/0': {...} } in MiB. */
function threadMemory(m: Map<string, number>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [k, v] of m) {
    const r = /^kiln_thread_memory_bytes\{thread="([^"]+)",area="([^"]+)"\}$/.exec(k);
    if (r) (out[r[1]] ??= {})[r[2]] = mib(v);
  }
  return out;
}

/** RSS growth as the mean of the last quarter of the per-second samples over the mean of the first quarter: the
 * garbage collector's sawtooth (tens of MiB) makes two single samples a coin toss; a leak shows in both figures. */
function trend(series: number[]): number {
  const q = Math.max(1, Math.floor(series.length / 4));
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  return (mean(series.slice(-q)) / mean(series.slice(0, q)) - 1) * 100;
}

async function measure(name: string, args: string[], port: number, model: string, kind: string, metricsUrl?: string) {
  const child = spawn(tsx, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitReady(port);
    const pid = serverPid(child);
    const { body, headers } = requestsFor(MODELS[model].row)[kind];
    const opts = { url: `http://127.0.0.1:${port}/v2/models/${model}/infer`, method: 'POST' as const, headers, body, connections };
    await autocannon({ ...opts, duration: Math.min(10, Math.max(3, duration / 6)) }); // warm-up
    const rss0 = rssKb(pid);
    const m0 = metricsUrl ? await scrape(metricsUrl) : undefined;
    let rssMax = rss0;
    const elu: number[] = [];
    const rssSeries: number[] = [];
    const sampler = setInterval(() => {
      const r = rssKb(pid);
      rssMax = Math.max(rssMax, r);
      rssSeries.push(Math.round(r / 1024));
      if (metricsUrl) void scrape(metricsUrl).then((m) => elu.push(m.get('kiln_event_loop_utilization') ?? NaN), () => {});
    }, 1000);
    const cpu0 = [cpuSeconds(pid), cpuSeconds(pid, pid)];
    const r = await autocannon({ ...opts, duration });
    const cpu1 = [cpuSeconds(pid), cpuSeconds(pid, pid)];
    clearInterval(sampler);
    const rss1 = rssKb(pid);
    const m1 = metricsUrl ? await scrape(metricsUrl) : undefined;
    const kiln = m0 && m1 ? {
      avgBatch: +((sum(m1, 'nv_inference_count{') - sum(m0, 'nv_inference_count{')) / (sum(m1, 'nv_inference_exec_count{') - sum(m0, 'nv_inference_exec_count{'))).toFixed(1),
      queueMsPerRequest: +((sum(m1, 'nv_inference_queue_duration_us{') - sum(m0, 'nv_inference_queue_duration_us{')) / 1000 / (sum(m1, 'nv_inference_request_success{') - sum(m0, 'nv_inference_request_success{'))).toFixed(1),
      mainEventLoopUtilization: +(elu.filter(Number.isFinite).reduce((a, b) => a + b, 0) / Math.max(1, elu.filter(Number.isFinite).length)).toFixed(2),
      threadMemoryWarm: threadMemory(m0),
      threadMemoryEnd: threadMemory(m1),
    } : undefined;
    return {
      name, model, body: kind, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx, timeouts: r.timeouts, non2xx: r.non2xx, total: r.requests.total,
      // CPU time per answered request: what the server costs, whatever share of the cores it got
      cpuMsPerRequest: +(((cpu1[0] - cpu0[0]) * 1000) / Math.max(1, r.requests.total)).toFixed(3),
      mainThreadCpuMsPerRequest: +(((cpu1[1] - cpu0[1]) * 1000) / Math.max(1, r.requests.total)).toFixed(3),
      rssWarmMiB: rss0 / 1024, rssEndMiB: rss1 / 1024, rssMaxMiB: rssMax / 1024, rssGrowthPct: ((rss1 - rss0) / rss0) * 100, rssTrendPct: trend(rssSeries), rssSeries, kiln,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

const load0 = os.loadavg();
const rows = [];
for (const model of models) {
  for (const kind of bodies) {
    for (const where of cpuInstances) {
      for (const d of decodeThreads) {
        const serve = ['src/cli/main.ts', 'serve', '--model-repository', root, '--http-port', '18100', '--grpc-port', '-1', '--metrics-port', '18102'];
        if (d !== undefined) serve.push('--decode-threads', d);
        if (where !== undefined) serve.push('--cpu-instances', where);
        const place: Record<string, string> = { auto: 'instances placed by auto', main: 'instances on the main thread', workers: 'instances on worker threads' };
        const how = [where && (place[where] ?? where), d && `${d} decode threads`].filter(Boolean).join(', ');
        rows.push(await measure(`kiln serve (dynamic batching${how ? `, ${how}` : ''})`, serve, 18100, model, kind, 'http://127.0.0.1:18102/metrics'));
      }
    }
    const onnx = path.join(root, model, '1', 'model.onnx');
    for (const t of ortThreads) {
      const name = `fastify + onnxruntime-node${t === 'default' ? '' : ` (intraOpNumThreads ${t})`}`;
      rows.push(await measure(name, ['bench/serve/ort-baseline.ts', onnx, '18101', ...(t === 'default' ? [] : [t])], 18101, model, kind));
    }
  }
}
const load1 = os.loadavg();
console.log(`\n${duration} s at ${connections} connections, ${os.cpus().length} cores (${os.cpus()[0].model}), ${instances} Kiln instances; ${models.map((m) => `${m}: ${MODELS[m].about}`).join('; ')}`);
console.log(`load average (1/5/15 min) before ${load0.map((x) => x.toFixed(1)).join('/')}, after ${load1.map((x) => x.toFixed(1)).join('/')}`);
console.log('| model | body | server | req/s | p50 (ms) | p99 (ms) | errors (non-2xx) | timeouts | requests | CPU ms/request (main thread) | RSS warm → end (MiB) | RSS growth end / quarters | memory flat (< 5%) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const flat = r.rssTrendPct < 5 ? 'yes' : 'NO';
  console.log(`| ${r.model} | ${r.body} | ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} (${r.non2xx}) | ${r.timeouts} | ${r.total} | ${r.cpuMsPerRequest} (${r.mainThreadCpuMsPerRequest}) | ${r.rssWarmMiB.toFixed(0)} → ${r.rssEndMiB.toFixed(0)} (max ${r.rssMaxMiB.toFixed(0)}) | ${r.rssGrowthPct.toFixed(1)}% / ${r.rssTrendPct.toFixed(1)}% | ${flat} |`);
}
for (const model of models) {
  for (const kind of bodies) {
    const orts = rows.filter((r) => r.model === model && r.body === kind && !r.kiln);
    const o = orts[0];
    for (const k of rows.filter((r) => r.model === model && r.body === kind && r.kiln)) {
      for (const x of orts) {
        const met = k.rps >= 2 * x.rps && k.p99 <= x.p99 && k.errors === 0 ? 'met' : 'not met';
        console.log(`${model} ${kind}: ${k.name} vs ${x.name}: throughput ${(k.rps / x.rps).toFixed(2)}×; p99 ${k.p99} vs ${x.p99} ms; issue 9's target (>= 2× at equal or better p99, zero errors): ${met}`);
      }
      console.log(`${model} ${kind}: ${k.name}: Kiln metrics ${JSON.stringify(k.kiln)}`);
      console.log(`${model} ${kind}: ${k.name}: RSS per second (MiB) kiln ${k.rssSeries.join(' ')} | ort ${o.rssSeries.join(' ')}`);
    }
  }
}
const out = argOf('json');
if (out) fs.writeFileSync(out, JSON.stringify(rows, null, 2));
fs.rmSync(root, { recursive: true, force: true });
