// The cubin cache on disk: NVRTC output kept across processes, so rebuilding a model (or building another one that
// shares kernels) compiles only what it has not compiled before. An entry is keyed by everything that changes the
// cubin (compiler version, options, kernel name, source); it is written atomically and checked (length and sha256 in
// its header) before use, so a torn or corrupt file is recompiled, never loaded into the GPU.
// Where: $KILN_CACHE_DIR/cubins, else $XDG_CACHE_HOME/kiln/cubins, else ~/.cache/kiln/cubins; KILN_CUBIN_CACHE=0
// turns it off. A cache that cannot be read or written is skipped silently: it is never why a build fails.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

const MAGIC = 0x4255434b; // 'KCUB' little-endian
const FORMAT = 1;
const HEADER = 44; // magic, format, payload length (u32 each), sha256 of the payload

/** The cache folder for this environment, or undefined when the cache is off. */
export function cubinCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.KILN_CUBIN_CACHE === '0') return undefined;
  if (env.KILN_CACHE_DIR) return path.join(env.KILN_CACHE_DIR, 'cubins');
  let home = env.XDG_CACHE_HOME;
  if (!home) {
    try {
      home = path.join(os.homedir(), '.cache');
    } catch {
      return undefined; // no home folder (some service accounts): no cache
    }
  }
  return path.join(home, 'kiln', 'cubins');
}

/** The entry name for one compile: a hash of everything that changes its cubin. */
export function cubinKey(compiler: string, options: readonly string[], name: string, source: string): string {
  return crypto.createHash('sha256').update(JSON.stringify([FORMAT, compiler, options, name, source])).digest('hex');
}

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest();

/** The cached cubin for `key`, or undefined when absent, truncated or corrupt. */
export function readCubin(dir: string, key: string): Uint8Array | undefined {
  let b: Buffer;
  try {
    b = fs.readFileSync(path.join(dir, `${key}.cubin`));
  } catch {
    return undefined;
  }
  if (b.length < HEADER || b.readUInt32LE(0) !== MAGIC || b.readUInt32LE(4) !== FORMAT || b.readUInt32LE(8) !== b.length - HEADER) return undefined;
  const payload = b.subarray(HEADER);
  if (!sha(payload).equals(b.subarray(12, HEADER))) return undefined;
  return new Uint8Array(payload);
}

/** Store a cubin (temp file + rename: readers see the old entry or the whole new one, never part of it). */
export function writeCubin(dir: string, key: string, cubin: Uint8Array): void {
  const head = Buffer.alloc(HEADER);
  head.writeUInt32LE(MAGIC, 0);
  head.writeUInt32LE(FORMAT, 4);
  head.writeUInt32LE(cubin.length, 8);
  sha(cubin).copy(head, 12);
  const file = path.join(dir, `${key}.cubin`);
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(tmp, Buffer.concat([head, cubin]));
    fs.renameSync(tmp, file);
  } catch {
    try {
      fs.rmSync(tmp, { force: true }); // read-only or full disk: this build simply does not cache
    } catch {
      // the folder itself is unusable: nothing was left behind
    }
  }
}
