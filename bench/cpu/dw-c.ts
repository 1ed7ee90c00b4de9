// The depthwise kernels of MobileNetV2's depthwise layers (or given geometries) as a standalone C program: each
// layer's generated code timed alone at one thread, with the input hot in cache and after a buffer the size of the
// L2 has been written over it (the layer before a depthwise layer leaves its output in L3 at best). A fifth number K
// puts a 1x1 convolution from K channels in front and times the pair functions (see depthwise.ts Expand) instead.
// Prints the median microseconds per call of every variant (the banded kernel, the channels-in-lanes one). Usage: npx tsx bench/cpu/dw-c.ts [C,H,W,stride[,K] ...] [--reps=N]
//   [--threads=N] [--keep=dir]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TensorData } from '../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { optimize } from '../../src/passes/pipeline.js';
import { inferShapes } from '../../src/passes/infer.js';
import { layerKernel } from '../../src/backends/cpu/codegen.js';
import { compileFlags, findCompiler, hostIsa } from '../../src/backends/cpu/compiler.js';
import { RUNTIME_C, RUNTIME_H } from '../../src/backends/cpu/kernels/runtime.c.js';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const reps = Number(flags.find((f) => f.startsWith('--reps='))?.slice(7) ?? 200);
const keep = flags.find((f) => f.startsWith('--keep='))?.slice(7);
const threads = Number(flags.find((f) => f.startsWith('--threads='))?.slice(10) ?? 1);
// MobileNetV2's depthwise layers: channels, input height and width, stride (3x3, pads 1, Clip 0..6)
const MOBILENET = ['32,112,112,1', '96,112,112,2', '144,56,56,1', '144,56,56,2', '192,28,28,1', '192,28,28,2', '384,14,14,1',
  '576,14,14,1', '576,14,14,2', '960,7,7,1'];
const geoms = (args.length ? args : MOBILENET).map((g) => g.split(',').map(Number));
const isa = hostIsa();
const cc = findCompiler();
if (!cc) throw new Error('no C compiler');

let src = `${RUNTIME_H}\n${RUNTIME_C}\n#include <stdio.h>\nvoid kiln_set_threads(int n);\n`;
const calls: string[] = [];
for (const [i, [C, H, W, s, K]] of geoms.entries()) {
  const r = seededRandom(i + 1);
  const b = new GraphBuilder(`dw${i}`);
  const lo = b.initializer('lo', new TensorData('float32', [], Float32Array.of(0))), hi = b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)));
  const x0 = b.input('x', 'float32', [1, K ?? C, H, W]);
  const x = K ? b.op('Clip', [b.op('Conv', [x0, b.initializer('w1', randomTensor(r, [C, K, 1, 1], 0.3)), b.initializer('b1', randomTensor(r, [C], 0.1))], {}, 'pw'), lo, hi], {}, 'c1') : x0;
  const conv = b.op('Conv', [x, b.initializer('w', randomTensor(r, [C, 1, 3, 3], 0.3)), b.initializer('b', randomTensor(r, [C], 0.1))],
    { kernel_shape: [3, 3], group: C, pads: [1, 1, 1, 1], strides: [s, s] }, 'dw');
  b.output(b.op('Clip', [conv, b.initializer('lo', new TensorData('float32', [], Float32Array.of(0))), b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)))], {}, 'relu6'));
  const m = b.model(17);
  await optimize(m, { inputShapes: new Map([['x', [1, K ?? C, H, W]]]) });
  inferShapes(m.graph, m.opsets);
  const node = m.graph.nodes.find((n) => n.opType === 'FusedConv' && n.attrs.group?.value === C)!;
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((q) => q.name === n)?.type;
  const k = layerKernel(node, m, typeOf, isa, `g${i}`);
  if (!k) throw new Error(`no kernel for ${C},${H},${W},${s}`);
  src += k.source;
  const OH = Math.floor((H - 1) / s) + 1, OW = Math.floor((W - 1) / s) + 1;
  if (K && !k.pair) throw new Error(`no pair function for ${C},${H},${W},${s},${K}`);
  // the pair functions in the source: the banded one (X<id>_pwdw) and the channels-in-lanes one (X<id>_pwdwc)
  const pairs = [...k.source.matchAll(/KEXPORT void (X\w+_pwdwc?)\(/g)].map((q) => q[1]);
  calls.push(K ? pairs.map((f) => `  bench("${C}x${H}x${W} s${s} K${K} ${f.endsWith('c') ? 'pair-c16' : 'pair'}", ${f}, 1, ${K * H * W}, ${C * K}, ${C * 9}, ${C}, ${C * OH * OW});`).join('\n')
    : k.variants.map((v) => `  bench("${C}x${H}x${W} s${s} ${v.tactic.replace(/native-\w+?-/, '')}", ${v.fn}, 0, ${C * H * W}, 0, ${C * 9}, ${C}, ${C * OH * OW});`).join('\n'));
}
src += String.raw`
typedef void (*layer_fn)(void *, void *, void *, void *, void *, void *, void *, void *, int);
static double now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static float *flush;
static void bench(const char *name, layer_fn f0, int pair, int nx, int nw1, int nw, int nb, int ny) {
  float *x = kiln_alloc(nx), *w1 = kiln_alloc(nw1 + 1), *b1 = kiln_alloc(nb), *w = kiln_alloc(nw), *b = kiln_alloc(nb), *y = kiln_alloc(ny);
  for (int i = 0; i < nx; i++) x[i] = (float)(((unsigned)i * 7919u) % 1000u) / 500.0f - 1.0f;
  for (int i = 0; i < nw; i++) w[i] = (float)(((unsigned)i * 104729u) % 100u) / 100.0f - 0.5f;
  for (int i = 0; i < nw1; i++) w1[i] = (float)(((unsigned)i * 7907u) % 100u) / 200.0f - 0.25f;
  #define f(x, w, b, r, y, a5, a6, a7, nb) (pair ? f0(x, w1, b1, w, b, r, y, NULL, nb) : f0(x, w, b, r, y, a5, a6, a7, nb))
  double hot[${reps}], cold[${reps}];
  for (int r = 0; r < 5; r++) f(x, w, b, NULL, y, NULL, NULL, NULL, 1);
  for (int r = 0; r < ${reps}; r++) { double t = now_us(); f(x, w, b, NULL, y, NULL, NULL, NULL, 1); hot[r] = now_us() - t; }
  for (int r = 0; r < ${reps}; r++) {
    for (int i = 0; i < (1 << 19); i += 16) flush[i] += 1.0f;
    for (int i = 0; i < nx; i += 16) x[i] += 0.0f;
    double t = now_us(); f(x, w, b, NULL, y, NULL, NULL, NULL, 1); cold[r] = now_us() - t;
  }
  qsort(hot, ${reps}, sizeof(double), cmp); qsort(cold, ${reps}, sizeof(double), cmp);
  double s = 0; for (int i = 0; i < ny; i++) s += y[i];
  printf("%-30s hot %8.1f us (min %8.1f)  input from L3 %8.1f us (min %8.1f)  checksum %.9g\n", name, hot[${reps} / 2], hot[0], cold[${reps} / 2], cold[0], s);
  free(x); free(w1); free(b1); free(w); free(b); free(y);
  #undef f
}
int main(void) {
  kiln_set_threads(${threads});
  flush = kiln_alloc(1 << 19);
${calls.join('\n')}
  return 0;
}
`;
const dir = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-dw-'));
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, 'dw.c'), src);
execFileSync(cc.path, [...compileFlags(isa).filter((f) => f !== '-fvisibility=hidden' && f !== '-fPIC'), '-o', path.join(dir, 'dw'), path.join(dir, 'dw.c'), '-lm'], { stdio: 'inherit' });
process.stdout.write(execFileSync(path.join(dir, 'dw')).toString());
if (!keep) fs.rmSync(dir, { recursive: true });
