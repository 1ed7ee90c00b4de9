// The compile cache: libraries whole, and each unit's object on its own, so a model whose units differ from another's
// only in its layers reuses the shared units' objects (the runtime unit is the slowest to compile).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileLibrary, findCompiler } from '../../../src/backends/cpu/compiler.js';

const cc = findCompiler();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cc-test-'));
const saved = process.env.TMPDIR;
const cache = () => fs.readdirSync(path.join(tmp, `kiln-cpu-cache-${os.userInfo().uid}`));

describe.skipIf(!cc)('compileLibrary', () => {
  beforeAll(() => void (process.env.TMPDIR = tmp));
  afterAll(() => {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const shared = 'int kiln_shared(int x) { return 2 * x + K; }\n';
  it('caches each unit\'s object: a second library compiles only the unit it does not share', () => {
    const a = compileLibrary(cc!, 'portable', '#define K 3', [shared, 'int kiln_a(void) { return 1; }\n']);
    const objs = cache().filter((f) => f.endsWith('.o'));
    expect(objs).toHaveLength(2);
    const stamps = new Map(objs.map((f) => [f, fs.statSync(path.join(tmp, `kiln-cpu-cache-${os.userInfo().uid}`, f)).mtimeMs]));
    const b = compileLibrary(cc!, 'portable', '#define K 3', [shared, 'int kiln_b(void) { return 2; }\n']);
    const after = cache().filter((f) => f.endsWith('.o'));
    expect(after).toHaveLength(3);
    // the shared unit's object was reused, not rewritten
    for (const [f, t] of stamps) expect(fs.statSync(path.join(tmp, `kiln-cpu-cache-${os.userInfo().uid}`, f)).mtimeMs).toBe(t);
    expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).not.toBe(0);
    expect(cache().filter((f) => f.endsWith('.so'))).toHaveLength(2);
    // the same units again: the whole library comes from the cache
    expect(Buffer.compare(Buffer.from(compileLibrary(cc!, 'portable', '#define K 3', [shared, 'int kiln_a(void) { return 1; }\n'])), Buffer.from(a))).toBe(0);
  });

  it('a changed header recompiles every unit', () => {
    const before = cache().filter((f) => f.endsWith('.o')).length;
    compileLibrary(cc!, 'portable', '#define K 4', [shared, 'int kiln_a(void) { return 1; }\n']);
    expect(cache().filter((f) => f.endsWith('.o')).length).toBe(before + 2);
  });

  it('a unit that does not compile names the compiler and shows its error; nothing half-written is cached', () => {
    const before = cache();
    expect(() => compileLibrary(cc!, 'portable', '#define K 3', [shared, 'int kiln_c(void) { return undeclared_name; }\n'])).toThrow(/failed on Kiln's generated kernels[\s\S]*undeclared_name/);
    // the unit that compiled is cached; the failed one and the library are not
    const added = cache().filter((f) => !before.includes(f) && !f.startsWith('build-'));
    expect(added.filter((f) => f.endsWith('.so') || f.endsWith('.tmp'))).toEqual([]);
  });
});
