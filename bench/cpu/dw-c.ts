// The depthwise kernels of MobileNetV2's depthwise layers (or given geometries) as a standalone C program: each
// layer's generated code timed alone at one thread, with the input hot in cache and after a buffer the size of the
// L2 has been written over it (the layer before a depthwise layer leaves its output in L3 at best). A fifth number K
// puts a 1x1 convolution from K channels in front and times the pair functions (see depthwise.ts Expand) instead.
// Prints the median microseconds per call of every variant (the banded kernel, the channels-in-lanes one). Usage: npx tsx bench/cpu/dw-c.ts [C,H,W,stride[,K] ...] [--reps=N]
//   [--threads=N] [--keep=dir] [--kernel=k] (k x k windows, pads k / 2; default 3) [--act=relu6|silu|hswish|none]
//   [--ref=dir]: a second tree (e.g. a `git archive HEAD` copy with node_modules linked): its kernel of the same
//   variant timed in the same program, the two calls alternating rep by rep, and their sums compared
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
const ks = Number(flags.find((f) => f.startsWith('--kernel='))?.slice(9) ?? 3);
const actName = flags.find((f) => f.startsWith('--act='))?.slice(6) ?? 'relu6';
const ref = flags.find((f) => f.startsWith('--ref='))?.slice(6);
type KernelOf = typeof layerKernel;
// (its pass pipeline first: the op registry's modules load in that order)
if (ref) await import(path.resolve(ref, 'src/passes/pipeline.ts'));
const refKernel = ref ? ((await import(path.resolve(ref, 'src/backends/cpu/codegen.ts'))) as { layerKernel: KernelOf }).layerKernel : undefined;
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
  const pk = ks >> 1;
  const conv = b.op('Conv', [x, b.initializer('w', randomTensor(r, [C, 1, ks, ks], 0.3)), b.initializer('b', randomTensor(r, [C], 0.1))],
    { kernel_shape: [ks, ks], group: C, pads: [pk, pk, pk, pk], strides: [s, s] }, 'dw');
  const actOf: Record<string, () => string> = {
    relu6: () => b.op('Clip', [conv, lo, hi], {}, 'relu6'), none: () => conv,
    silu: () => b.op('Mul', [conv, b.op('Sigmoid', [conv], {}, 'sig')], {}, 'silu'), hswish: () => b.op('HardSwish', [conv], {}, 'hs'),
  };
  b.output(actOf[actName]());
  const m = b.model(17);
  await optimize(m, { inputShapes: new Map([['x', [1, K ?? C, H, W]]]) });
  inferShapes(m.graph, m.opsets);
  const node = m.graph.nodes.find((n) => n.opType === 'FusedConv' && n.attrs.group?.value === C)!;
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((q) => q.name === n)?.type;
  const k = layerKernel(node, m, typeOf, isa, `g${i}`);
  if (!k) throw new Error(`no kernel for ${C},${H},${W},${s}`);
  const rk = refKernel?.(node, m, typeOf, isa, `r${i}`);
  src += k.source + (rk?.source ?? '');
  const OH = Math.floor((H - 1) / s) + 1, OW = Math.floor((W - 1) / s) + 1;
  if (K && !k.pair) throw new Error(`no pair function for ${C},${H},${W},${s},${K}`);
  // the pair functions in the source: the banded one (X<id>_pwdw) and the channels-in-lanes one (X<id>_pwdwc)
  const pairsOf = (source: string) => [...source.matchAll(/KEXPORT void (X\w+_pwdwc?)\(/g)].map((q) => q[1]);
  const refPair = (f: string) => pairsOf(rk?.source ?? '').find((r) => r.endsWith('c') === f.endsWith('c')) ?? 'NULL';
  const refFn = (tactic: string) => rk?.variants.find((v) => v.tactic === tactic)?.fn ?? 'NULL';
  calls.push(K ? pairsOf(k.source).map((f) => `  bench("${C}x${H}x${W} s${s} K${K} ${f.endsWith('c') ? 'pair-c16' : 'pair'}", ${f}, ${refPair(f)}, 1, ${K * H * W}, ${C * K}, ${C * ks * ks}, ${C}, ${C * OH * OW});`).join('\n')
    : k.variants.map((v) => `  bench("${C}x${H}x${W} s${s} ${v.tactic.replace(/native-\w+?-/, '')}", ${v.fn}, ${refFn(v.tactic)}, 0, ${C * H * W}, 0, ${C * ks * ks}, ${C}, ${C * OH * OW});`).join('\n'));
}
src += String.raw`
typedef void (*layer_fn)(void *, void *, void *, void *, void *, void *, void *, void *, int);
static double now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static float *flush;
static double med(double *u, int n) { qsort(u, n, sizeof(double), cmp); return u[n / 2]; }
static double sum(const float *y, int n) { double s = 0; for (int i = 0; i < n; i++) s += y[i]; return s; }
static void bench(const char *name, layer_fn f0, layer_fn g0, int pair, int nx, int nw1, int nw, int nb, int ny) {
  float *x = kiln_alloc(nx), *w1 = kiln_alloc(nw1 + 1), *b1 = kiln_alloc(nb), *w = kiln_alloc(nw), *b = kiln_alloc(nb), *y = kiln_alloc(ny);
  for (int i = 0; i < nx; i++) x[i] = (float)(((unsigned)i * 7919u) % 1000u) / 500.0f - 1.0f;
  for (int i = 0; i < nw; i++) w[i] = (float)(((unsigned)i * 104729u) % 100u) / 100.0f - 0.5f;
  for (int i = 0; i < nw1; i++) w1[i] = (float)(((unsigned)i * 7907u) % 100u) / 200.0f - 0.25f;
  #define f(g, x, w, b, r, y, a5, a6, a7, nb) (pair ? g(x, w1, b1, w, b, r, y, NULL, nb) : g(x, w, b, r, y, a5, a6, a7, nb))
  /* the timed call of one side (A = the reference tree's when given), hot or with the input written back from L3 */
  #define timed(g, cold) ({ if (cold) { for (int i = 0; i < (1 << 19); i += 16) flush[i] += 1.0f; for (int i = 0; i < nx; i += 16) x[i] += 0.0f; } \
    double t0 = now_us(); f(g, x, w, b, NULL, y, NULL, NULL, NULL, 1); now_us() - t0; })
  double hot[${reps}], cold[${reps}], rhot[${reps}], rcold[${reps}], rs = 0;
  for (int r = 0; r < 5; r++) { f(f0, x, w, b, NULL, y, NULL, NULL, NULL, 1); if (g0) f(g0, x, w, b, NULL, y, NULL, NULL, NULL, 1); }
  if (g0) rs = sum(y, ny);
  for (int r = 0; r < ${reps}; r++) { if (g0) rhot[r] = timed(g0, 0); hot[r] = timed(f0, 0); }
  for (int r = 0; r < ${reps}; r++) { if (g0) rcold[r] = timed(g0, 1); cold[r] = timed(f0, 1); }
  double h = med(hot, ${reps}), c = med(cold, ${reps}), s = sum(y, ny);
  printf("%-30s hot %8.1f us  input from L3 %8.1f us  checksum %.9g\n", name, h, c, s);
  if (g0) printf("%-30s ref hot %8.1f us (new/ref %.3f)  from L3 %8.1f us (new/ref %.3f)  %s\n", "", med(rhot, ${reps}), h / med(rhot, ${reps}),
    med(rcold, ${reps}), c / med(rcold, ${reps}), fabs(s - rs) <= 1e-4 * (fabs(rs) + 1) ? "same sum" : "SUMS DIFFER");
  free(x); free(w1); free(b1); free(w); free(b); free(y);
  #undef f
  #undef timed
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
