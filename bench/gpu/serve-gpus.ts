// Load driver for the multi-GPU serve check (bench/gpu/multi-gpu.sh): N concurrent clients send KServe v2 binary
// tensor requests to a running `kiln serve` for a fixed time, then the server's /metrics are read to show where the
// batches ran (kiln_inference_exec_count_per_device) and what each GPU held (nv_gpu_*). Plain fetch, no load tool:
// the GPU machine carries no dev dependencies.
// Usage: node serve-gpus.js <http port> <metrics port> <model> <input name> <dims, e.g. 1x3x224x224> [concurrency] [seconds]
const [httpPort, metricsPort, model, input, dimsArg, concArg, secsArg] = process.argv.slice(2);
if (!dimsArg) throw new Error('usage: serve-gpus.js <http port> <metrics port> <model> <input> <dims> [concurrency] [seconds]');
const dims = dimsArg.split('x').map(Number);
const concurrency = Number(concArg ?? 64);
const seconds = Number(secsArg ?? 20);

const values = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.001));
const head = Buffer.from(JSON.stringify({
  inputs: [{ name: input, datatype: 'FP32', shape: dims, parameters: { binary_data_size: values.byteLength } }],
  parameters: { binary_data_output: true },
}));
const body = Buffer.concat([head, Buffer.from(values.buffer)]);
const url = `http://127.0.0.1:${httpPort}/v2/models/${model}/infer`;
const headers = { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) };

const latencies: number[] = [];
const errors = new Map<string, number>();
const end = performance.now() + seconds * 1000;
async function client(): Promise<void> {
  while (performance.now() < end) {
    const t = performance.now();
    try {
      const r = await fetch(url, { method: 'POST', body, headers });
      await r.arrayBuffer();
      if (r.ok) latencies.push(performance.now() - t);
      else errors.set(String(r.status), (errors.get(String(r.status)) ?? 0) + 1);
    } catch (e) {
      const k = (e as Error).message;
      errors.set(k, (errors.get(k) ?? 0) + 1);
    }
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, client));
const wall = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
const perDevice = metrics.split('\n').filter((l) => /^(kiln_inference_exec_count_per_device|nv_inference_exec_count|nv_inference_count|nv_gpu_)/.test(l));
console.log(JSON.stringify({
  model, concurrency, seconds: +wall.toFixed(2), requests: latencies.length, reqPerS: +(latencies.length / wall).toFixed(1),
  p50Ms: +pct(50).toFixed(2), p99Ms: +pct(99).toFixed(2), errors: Object.fromEntries(errors),
}));
for (const l of perDevice) console.log(l);
