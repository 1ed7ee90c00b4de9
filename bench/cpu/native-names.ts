// What the chain-profiling scripts (chain-prof, chain-ab, chain-twice, schedule) read from a CPU plan and its loaded
// library: the native layers' metadata, and the names of the functions a chain program calls, recorded as the
// runner resolves each symbol (a program record holds the function's address).
import { parsePlan } from '../../src/build/plan.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { META_BLOB, type KernelsMeta } from '../../src/backends/cpu/build.js';

/** The plan's native-layer metadata (function, node, tactic per layer). */
export const kernelsMeta = (plan: Uint8Array): KernelsMeta => JSON.parse(new TextDecoder().decode(parsePlan(plan).blobs.get(META_BLOB)!)) as KernelsMeta;

const names = new Map<NativeLibrary, Map<bigint, string>>();
let recording = false;

/** From now on, remember every symbol address a library resolves (call before loading the engines). */
export function recordSymbols(): void {
  if (recording) return;
  recording = true;
  const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const symbol = P.symbol;
  P.symbol = function (this: NativeLibrary, fn: unknown) {
    const a = symbol.call(this, fn) as bigint | undefined;
    if (a !== undefined) (names.get(this) ?? names.set(this, new Map()).get(this)!).set(a, fn as string);
    return a;
  };
}

/** The function names of a chain program's `n` records (10 words each, the address first); '?' where unknown. */
export const chainNames = (lib: NativeLibrary, prog: BigInt64Array, n: number): string[] =>
  Array.from({ length: n }, (_, i) => names.get(lib)?.get(prog[i * 10]) ?? '?');
