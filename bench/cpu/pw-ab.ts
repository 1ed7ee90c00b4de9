// Two versions of the pointwise kernel (kernels/tiles.c.ts renderPointwise) with a bias + ReLU epilogue, compiled into one
// standalone C program and called alternately, the input rewritten and --cold MB of junk written before each call (64:
// the output out of L3, as a model's first layers see it; 0: hot). Prints median µs of each, the median of per-pair
// ratios B / A, and both outputs' sums. --ab picks the pair:
//   chunk (default; --cold default 64): A by columns (chunk 0: every block of positions through every row panel, as
//     before chunks) against B, row panels along chunks of positions for outputs of 1 MB and more;
//   fuse (--cold default 0): A the generic epilogue (a C function over each stored tile, as codegen.ts renders it)
//     against B, the same in the tile stores (kfuse_t); the same arithmetic, so equal sums.
// Usage: npx tsx bench/cpu/pw-ab.ts C,N,Co ... [--ab=chunk|fuse] [--reps=N] [--threads=T] [--cold=MB] [--tile=16x1|8x2]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { RUNTIME_C, RUNTIME_H } from '../../src/backends/cpu/kernels/runtime.c.js';
import { INT8_C, INT8_H } from '../../src/backends/cpu/kernels/int8.c.js';
import { renderPointwise, POINTWISE_H } from '../../src/backends/cpu/kernels/tiles.c.js';
import { compileFlags, findCompiler, hostIsa } from '../../src/backends/cpu/compiler.js';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flag = (k: string, d: string) => flags.find((f) => f.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const fuse = flag('ab', 'chunk') === 'fuse';
const reps = Number(flag('reps', '40')), threads = Number(flag('threads', '1')), coldMB = Number(flag('cold', fuse ? '0' : '64'));
const [mr, nv] = flag('tile', '16x1').split('x').map(Number);
const id = `${mr}x${nv}`;
// chunk: B is the kernel as rendered, A the same kernel by columns under another name; fuse: one kernel, two settings
const oldText = fuse ? '' : renderPointwise(mr, nv, 0).replaceAll(id, `${id}o`);
const geoms = args.map((a) => a.split(',').map(Number));
const src = `${RUNTIME_H}\n${INT8_H}\n${POINTWISE_H}\nvoid kiln_pw_${id}(const pw_t *g);${fuse ? '' : `\nvoid kiln_pw_${id}o(const pw_t *g);`}\nvoid kiln_pw_tile_${id}(int K, const float *a, const float *b, size_t ldb, float *c, int ldc);${fuse ? '' : `\nvoid kiln_pw_tile_${id}o(int K, const float *a, const float *b, size_t ldb, float *c, int ldc);`}\n${RUNTIME_C}\n${INT8_C}\n${renderPointwise(mr, nv)}\n${oldText}
#include <stdio.h>
void kiln_set_threads(int n);
static double now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static void epi(const void *ctx, float *restrict c, int ldc, int i0, int mi, int j0, int nj) {
  const float *const *p = ctx;
  for (int r = 0; r < mi; r++) {
    #pragma GCC ivdep
    for (int j = 0; j < nj; j++) { float v = c[r * ldc + j] + p[1][i0 + r]; c[r * ldc + j] = (v > 0.0f ? v : 0.0f); }
  }
}
static float *junk;
static void run(int C, int N, int Co) {
  float *x = kiln_alloc((size_t)C * N + 8) + 4, *w = kiln_alloc((size_t)C * Co), *b = kiln_alloc(Co);
  float *y = kiln_alloc((size_t)Co * N + 8) + 4;
  float *wp = kiln_alloc((size_t)(Co + ${mr}) * C);
  for (int i = 0; i < C * N; i++) x[i] = (float)((i * 7919u) % 1000u) / 500.0f - 1.0f;
  for (int i = 0; i < C * Co; i++) w[i] = (float)((i * 104729u) % 100u) / 100.0f - 0.5f;
  for (int i = 0; i < Co; i++) b[i] = (float)(i % 7) / 10.0f;
  kiln_pack_a(w, C, 1, Co, C, ${mr}, wp);
  const float *p[3] = { NULL, b, NULL };
  const kfuse_t fu = { b, KFUSE_RELU, 0, 0 };
  pw_t g = { Co, N, C, wp, x, (size_t)C * N, epi, p, 0, y, (size_t)Co * N, 1, 0, NULL };
  double t[2][${reps}], r[${reps}], sum[2] = {0, 0};
  for (int it = 0; it < ${reps} + 2; it++) {
    for (int k0 = 0; k0 < 2; k0++) {
      int k = (it & 1) ? 1 - k0 : k0;
      for (size_t i = 0; i < ${coldMB}u << 18; i += 16) junk[i] += 1.0f;
      for (int i = 0; i < C * N; i++) x[i] = x[i] * 1.0f + 0.0f;
${fuse ? `      g.epi = k ? NULL : epi;
      g.fuse = k ? &fu : NULL;
` : '      (void)fu;\n'}      double s = now_us();
      ${fuse ? `kiln_pw_${id}(&g);` : `if (k) kiln_pw_${id}(&g); else kiln_pw_${id}o(&g);`}
      double e = now_us() - s;
      if (it >= 2) t[k][it - 2] = e;
      if (it == 2) { double q = 0; for (size_t i = 0; i < (size_t)Co * N; i++) q += y[i]; sum[k] = q; }
    }
    if (it >= 2) r[it - 2] = t[1][it - 2] / t[0][it - 2];
  }
  qsort(t[0], ${reps}, sizeof(double), cmp); qsort(t[1], ${reps}, sizeof(double), cmp); qsort(r, ${reps}, sizeof(double), cmp);
  printf("%4d x %6d -> %4d  A %7.1f  B %7.1f us  B/A %.3f  sums %.9g %.9g\\n", C, N, Co, t[0][${reps} / 2], t[1][${reps} / 2], r[${reps} / 2], sum[0], sum[1]);
}
int main(void) {
  kiln_set_threads(${threads});
  junk = kiln_alloc((${coldMB}u << 18) + 16);
${geoms.map(([C, N, Co]) => `  run(${C}, ${N}, ${Co});`).join('\n')}
  return 0;
}
`;
const cc = findCompiler();
if (!cc || hostIsa() !== 'avx512') throw new Error('pw-ab.ts needs a C compiler and an AVX-512 host');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pw-'));
fs.writeFileSync(path.join(dir, 'pw.c'), src);
execFileSync(cc.path, [...compileFlags('avx512').filter((f) => f !== '-fvisibility=hidden' && f !== '-fPIC'), '-o', path.join(dir, 'pw'), path.join(dir, 'pw.c'), '-lm'], { stdio: 'inherit' });
process.stdout.write(execFileSync(path.join(dir, 'pw')).toString());
fs.rmSync(dir, { recursive: true });
