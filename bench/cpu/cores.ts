// What two threads get on this host now: bench/cpu/fma-peak.c run alone, then twice at once. On the 2-core VM the
// two vCPUs are sometimes separate physical cores (the pair sums to ~2x one run) and sometimes one core's two
// hardware threads (~1x): then no engine gains from a second thread, and 2-thread figures only compare how each
// loses. Benchmarks print this beside their 2-thread figures. AVX-512 hosts with a C compiler only (else undefined).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findCompiler, hostIsa } from '../../src/backends/cpu/compiler.js';

let exe: string | null | undefined;

function binary(): string | null {
  if (exe !== undefined) return exe;
  exe = null;
  const cc = findCompiler();
  if (!cc || hostIsa() !== 'avx512') return exe;
  const out = path.join(os.tmpdir(), `kiln-fma-peak-${process.pid}`);
  execFileSync(cc.path, ['-O2', '-march=native', '-o', out, path.join(path.dirname(fileURLToPath(import.meta.url)), 'fma-peak.c')]);
  process.on('exit', () => fs.rmSync(out, { force: true }));
  return (exe = out);
}

const gflops = (s: string) => Number(/([\d.]+) GFLOP\/s/.exec(s)?.[1] ?? NaN);
const runOnce = (file: string) => new Promise<number>((resolve, reject) => {
  const p = spawn(file);
  let s = '';
  p.stdout.on('data', (d: Buffer) => (s += d));
  p.on('error', reject);
  p.on('close', () => resolve(gflops(s)));
});

/** One run's fp32 FMA GFLOP/s, two concurrent runs' sum, and their ratio. */
export async function coresState(): Promise<{ alone: number; pair: number; ratio: number } | undefined> {
  const file = binary();
  if (!file) return undefined;
  const alone = await runOnce(file);
  const [a, b] = await Promise.all([runOnce(file), runOnce(file)]);
  return { alone, pair: a + b, ratio: (a + b) / alone };
}

/** A line for a benchmark's output. */
export async function coresLine(): Promise<string> {
  const s = await coresState();
  if (!s) return 'host cores: not probed (needs an AVX-512 host and a C compiler)';
  return `host cores: FMA ${s.alone.toFixed(0)} GFLOP/s alone, ${s.pair.toFixed(0)} for two at once (x${s.ratio.toFixed(2)}: ${s.ratio > 1.6 ? 'two physical cores' : s.ratio < 1.3 ? 'one core shared by both threads' : 'partly shared'})`;
}
