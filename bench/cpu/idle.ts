// Whether the native thread pool stays off the CPU when Kiln is idle or the cores are shared: runs a zoo model a few
// times, then measures the process's CPU time over one idle second (idle workers must sleep, not spin), and the wall
// and CPU time per run while a busy-looping child process holds one core (a server sharing its machine). Usage:
//   npx tsx bench/cpu/idle.ts [model] [threads] [runs]   (default mobilenet-v2, 1,2, 50)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { asTensors, zooInputs } from './inputs.js';

const name = process.argv[2] ?? 'mobilenet-v2';
const threadList = (process.argv[3] ?? '1,2').split(',').map(Number);
const runs = Number(process.argv[4] ?? 50);
const m = ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m);
const feeds = asTensors(raw);
const plan = await build(m, { shapes });
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];

async function timed(ctx: { run: (f: Record<string, Tensor>) => Promise<unknown> }): Promise<[number, number]> {
  const wall: number[] = [];
  const c0 = process.cpuUsage();
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await ctx.run(feeds);
    wall.push(performance.now() - s);
  }
  return [med(wall), cpuMs(process.cpuUsage(c0)) / runs];
}

for (const threads of threadList) {
  const engine = await Engine.load(plan, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 5; i++) await ctx.run(feeds);
  const [wall, cpu] = await timed(ctx);
  const c0 = process.cpuUsage();
  await new Promise((res) => setTimeout(res, 1000));
  const idle = cpuMs(process.cpuUsage(c0));
  const hog = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  await new Promise((res) => setTimeout(res, 200));
  const [hWall, hCpu] = await timed(ctx);
  hog.kill();
  console.log(`${name}, ${threads} thread(s): alone ${wall.toFixed(2)} ms wall, ${cpu.toFixed(2)} ms CPU per run; ` +
    `idle second after the runs ${idle.toFixed(1)} ms CPU; next to a busy core ${hWall.toFixed(2)} ms wall, ${hCpu.toFixed(2)} ms CPU per run`);
  engine.dispose();
}
console.log(`load average: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
