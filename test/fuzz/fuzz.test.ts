// Fuzz: randomly mutated copies of conformance models go through InferenceSession.create + run. Each must end in
// a result or an Error — never a crash, a hang or an unbounded allocation.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { InferenceSession } from '../../src/index.js';
import { seededRandom } from '../../src/ir/builder.js';
import { setElementLimit, MAX_ELEMENTS } from '../../src/ir/tensor.js';
import { makeInputs } from '../../src/tools/inputs.js';
import { listCases, DATA_DIR } from '../conformance/cases.js';
import { skipReason } from '../conformance/skip.js';

const ITERATIONS = Number(process.env.KILN_FUZZ_ITERATIONS ?? 1000);
const cases = listCases().filter((c) => !skipReason(c) && !/loop|scan|if_|sequence_map/.test(c.name));

function mutate(src: Uint8Array, rand: () => number): Uint8Array {
  const b = new Uint8Array(src);
  const kind = Math.floor(rand() * 5);
  const pos = Math.floor(rand() * b.length);
  switch (kind) {
    case 0: { // flip a few bytes
      const n = 1 + Math.floor(rand() * 4);
      for (let i = 0; i < n; i++) b[Math.floor(rand() * b.length)] ^= 1 << Math.floor(rand() * 8);
      return b;
    }
    case 1: return b.subarray(0, pos); // truncate
    case 2: { // overwrite with a large varint-ish value
      b[pos] = 0xff; if (pos + 1 < b.length) b[pos + 1] = 0xff; if (pos + 2 < b.length) b[pos + 2] = 0x7f;
      return b;
    }
    case 3: { // duplicate a slice
      const len = Math.floor(rand() * 32);
      const out = new Uint8Array(b.length + len);
      out.set(b.subarray(0, pos)); out.set(b.subarray(pos, pos + len), pos); out.set(b.subarray(pos), pos + len);
      return out;
    }
    default: { // random byte
      b[pos] = Math.floor(rand() * 256);
      return b;
    }
  }
}

describe.skipIf(cases.length === 0)(`fuzz: ${ITERATIONS} mutated conformance models (data in ${DATA_DIR})`, () => {
  afterAll(() => setElementLimit(MAX_ELEMENTS));
  it('every mutated model ends in a result or an Error', async () => {
    setElementLimit(1 << 22);
    const rand = seededRandom(20261124);
    const tally = { loadError: 0, runError: 0, ran: 0 };
    for (let i = 0; i < ITERATIONS; i++) {
      const c = cases[Math.floor(rand() * cases.length)];
      const bytes = mutate(fs.readFileSync(path.join(c.dir, 'model.onnx')), rand);
      let session: InferenceSession;
      try {
        session = await InferenceSession.create(bytes);
      } catch (e) {
        expect(e, `${c.name} mutation ${i}`).toBeInstanceOf(Error);
        tally.loadError++;
        continue;
      }
      try {
        const feeds = makeInputs(session.inputMetadata, { random: true, seed: i });
        if (Object.values(feeds).some((t) => t.size > 100_000)) { tally.runError++; continue; }
        await session.run(feeds);
        tally.ran++;
      } catch (e) {
        expect(e, `${c.name} mutation ${i}`).toBeInstanceOf(Error);
        tally.runError++;
      }
    }
    console.log(`fuzz: ${JSON.stringify(tally)}`);
    expect(tally.loadError + tally.runError + tally.ran).toBe(ITERATIONS);
  });
});
