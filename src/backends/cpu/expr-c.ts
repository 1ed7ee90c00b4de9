// C rendering of Kiln's elementwise expression language (src/ir/expr.ts) and of the fused activations
// (src/ops/fused.ts): one table per language, each op a small formatting function over rendered operands. The k*
// helpers are defined in kernels/runtime.c.ts and written so GCC/Clang vectorize the loops that call them.
import type { Expr } from '../../ir/expr.js';

const C_OPS: Record<string, (a: string[]) => string> = {
  add: ([a, b]) => `(${a} + ${b})`, sub: ([a, b]) => `(${a} - ${b})`, mul: ([a, b]) => `(${a} * ${b})`,
  div: ([a, b]) => `(${a} / ${b})`, pow: ([a, b]) => `powf(${a}, ${b})`, max: ([a, b]) => `kmaxf(${a}, ${b})`,
  min: ([a, b]) => `kminf(${a}, ${b})`, neg: ([a]) => `(-${a})`, abs: ([a]) => `fabsf(${a})`, exp: ([a]) => `kexp(${a})`,
  log: ([a]) => `logf(${a})`, sqrt: ([a]) => `sqrtf(${a})`, recip: ([a]) => `(1.0f / ${a})`, tanh: ([a]) => `ktanh(${a})`,
  erf: ([a]) => `kerf(${a})`, sigmoid: ([a]) => `ksigmoid(${a})`, relu: ([a]) => `(${a} > 0.0f ? ${a} : 0.0f)`,
  floor: ([a]) => `floorf(${a})`, ceil: ([a]) => `ceilf(${a})`, sin: ([a]) => `sinf(${a})`, cos: ([a]) => `cosf(${a})`,
  softplus: ([a]) => `ksoftplus(${a})`, clip: ([a, lo, hi]) => `kclip(${a}, ${lo}, ${hi})`,
  leaky: ([a, s]) => `(${a} < 0.0f ? ${a} * ${s} : ${a})`, where_pos: ([c, a, b]) => `(${c} > 0.0f ? ${a} : ${b})`,
};

/** A float literal as C source (inf/nan through math.h macros). */
export function cFloat(x: number): string {
  if (Number.isNaN(x)) return 'NAN';
  if (!Number.isFinite(x)) return x > 0 ? 'INFINITY' : '(-INFINITY)';
  return `(${Math.fround(x).toPrecision(9)}f)`; // 9 significant digits round-trip a float exactly
}

/** C source of an expression; `input(i)` renders a read of input i. Operands are bound once (repeats stay cheap). */
export function renderC(e: Expr, input: (i: number) => string): string {
  if ('input' in e) return input(e.input);
  if ('lit' in e) return cFloat(e.lit);
  const args = e.args.map((a) => renderC(a, input));
  // ops that read an operand twice get it through a statement expression, so it is evaluated once
  const twice = ['relu', 'leaky', 'where_pos'];
  if (twice.includes(e.op) && !/^[\w.]+$/.test(args[0])) return `({ float _t = ${args[0]}; ${C_OPS[e.op](['_t', ...args.slice(1)])}; })`;
  return C_OPS[e.op](args);
}

/** C source of act(x) for the activations fused layers carry, or undefined when there is none for `name`. */
export function renderActivation(name: string, p: number[], x: string): string | undefined {
  const f = (i: number) => cFloat(p[i]);
  const table: Record<string, () => string> = {
    '': () => x,
    Relu: () => `(${x} > 0.0f ? ${x} : 0.0f)`,
    Clip: () => `kclip(${x}, ${f(0)}, ${f(1)})`,
    LeakyRelu: () => `(${x} < 0.0f ? ${x} * ${f(0)} : ${x})`,
    Sigmoid: () => `ksigmoid(${x})`,
    HardSigmoid: () => `kclip(${f(0)} * ${x} + ${f(1)}, 0.0f, 1.0f)`,
    HardSwish: () => `(${x} * kclip(${x} / 6.0f + 0.5f, 0.0f, 1.0f))`,
    Tanh: () => `ktanh(${x})`,
    Gelu: () => `(0.5f * ${x} * (1.0f + kerf(${x} * 0.70710678f)))`,
    GeluTanh: () => `(0.5f * ${x} * (1.0f + ktanh(0.79788456f * (${x} + 0.044715f * ${x} * ${x} * ${x}))))`,
    Silu: () => `ksilu(${x})`,
    Mish: () => `kmish(${x})`,
  };
  if (name === 'Clip' && p.length < 2) return undefined;
  if ((name === 'LeakyRelu' || name === 'HardSigmoid') && p.length < (name === 'LeakyRelu' ? 1 : 2)) return undefined;
  return table[name]?.();
}

/** act(x) over an AVX-512 vector variable \`x\` (__m512), for the activations that are a few instructions there, else
 * undefined (the caller keeps the scalar form in a loop GCC vectorizes). GCC vectorizes the scalar selects of Clip into
 * two compares and five mask-register operations a vector (~4 cycles on Zen 5: the ReLU6 pass over the expanded rows
 * took a quarter of MobileNetV2's 16 -> 96 pair at 112 x 112, bench/cpu/dw-c.ts); max and min take one instruction each and return
 * their second operand where one is NaN, so max(lo, x) is exactly \`x < lo ? lo : x\` and min(hi, t) \`t > hi ? hi : t\`. */
export function renderActivation512(name: string, p: number[], x: string): string | undefined {
  const set = (v: string) => `_mm512_set1_ps(${v})`;
  const clip = (v: string, lo: string, hi: string) => `_mm512_min_ps(${set(hi)}, _mm512_max_ps(${set(lo)}, ${v}))`;
  const table: Record<string, () => string> = {
    '': () => x,
    Relu: () => `_mm512_max_ps(${x}, _mm512_setzero_ps())`,
    Clip: () => clip(x, cFloat(p[0]), cFloat(p[1])),
    HardSwish: () => `_mm512_mul_ps(${x}, ${clip(`_mm512_add_ps(_mm512_div_ps(${x}, ${set('6.0f')}), ${set('0.5f')})`, '0.0f', '1.0f')})`,
  };
  // (a Clip whose min is over its max: min(hi, max(lo, x)) gives the max, the fused layers' reference (ops/fused.ts)
  // the min where x is under it; left to the scalar form)
  if (name === 'Clip' && !(p.length >= 2 && p[0] <= p[1])) return undefined;
  return table[name]?.();
}
