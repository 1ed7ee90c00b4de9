// nvJPEG through koffi: JPEG bytes to interleaved RGB in device memory. The hardware backend (the NVJPG engines of
// A100/H100-class GPUs) decodes baseline JPEGs in batches; everything else (progressive, odd subsamplings, GPUs
// without the engine) goes through the default backend one image at a time. Calls run on the calling thread, where
// Kiln's CUDA context is current (nvJPEG allocates through the runtime, which needs it).
import { KilnError } from '../../../ir/errors.js';
import { koffi, loadLibrary } from './libs.js';

type Fn = (...args: any[]) => any;
let api: Record<string, Fn> | undefined;

function load(): Record<string, Fn> {
  if (api) return api;
  const lib = loadLibrary('nvJPEG', ['libnvjpeg.so.13', 'libnvjpeg.so.12', 'libnvjpeg.so', 'libnvjpeg.so.*']);
  api = {
    createEx: lib.func('int nvjpegCreateEx(int backend, void *devAllocator, void *pinnedAllocator, unsigned int flags, _Out_ void **handle)'),
    destroy: lib.func('int nvjpegDestroy(void *handle)'),
    stateCreate: lib.func('int nvjpegJpegStateCreate(void *handle, _Out_ void **state)'),
    stateDestroy: lib.func('int nvjpegJpegStateDestroy(void *state)'),
    info: lib.func('int nvjpegGetImageInfo(void *handle, const uint8_t *data, size_t length, _Out_ int *components, _Out_ int *subsampling, int *widths, int *heights)'),
    decode: lib.func('int nvjpegDecode(void *handle, void *state, const uint8_t *data, size_t length, int format, void *dest, void *stream)'),
    batchedInit: lib.func('int nvjpegDecodeBatchedInitialize(void *handle, void *state, int batchSize, int maxCpuThreads, int format)'),
    batched: lib.func('int nvjpegDecodeBatched(void *handle, void *state, void *data, void *lengths, void *dests, void *stream)'),
    streamCreate: lib.func('int nvjpegJpegStreamCreate(void *handle, _Out_ void **stream)'),
    streamDestroy: lib.func('int nvjpegJpegStreamDestroy(void *stream)'),
    parse: lib.func('int nvjpegJpegStreamParseHeader(void *handle, const uint8_t *data, size_t length, void *stream)'),
    supported: lib.func('int nvjpegDecodeBatchedSupported(void *handle, void *stream, _Out_ int *unsupported)'),
  } as Record<string, Fn>;
  return api;
}

const BACKEND = { default: 0, hardware: 3 } as const;
const OUTPUT_RGBI = 5;
const STATUS = ['success', 'not initialized', 'invalid parameter', 'bad JPEG', 'JPEG not supported', 'allocator failure',
  'execution failed', 'architecture mismatch', 'internal error', 'implementation not supported', 'incomplete bitstream'];
/** nvjpegImage_t: channel[4] pointers, then pitch[4] as size_t. */
const IMAGE_BYTES = 64;

export const nvjpegStatus = (st: number): string => `${STATUS[st] ?? 'status'} (${st})`;

/** Why nvJPEG cannot be used here, or undefined when it loads. */
export function nvjpegAvailable(): string | undefined {
  try {
    load();
    return undefined;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

export interface JpegInfo {
  width: number;
  height: number;
  components: number;
}

/** One decode target: the JPEG's bytes and where its RGB pixels go (pitch = width * 3). */
export interface JpegJob {
  bytes: Uint8Array;
  dst: number;
  width: number;
}

function imageStruct(jobs: JpegJob[]): Buffer {
  const b = Buffer.alloc(IMAGE_BYTES * jobs.length);
  jobs.forEach((j, i) => {
    b.writeBigUInt64LE(BigInt(j.dst), i * IMAGE_BYTES);
    b.writeBigUInt64LE(BigInt(j.width * 3), i * IMAGE_BYTES + 32);
  });
  return b;
}

/** A decoder: handles, states and a pinned staging area for the batched path's bitstreams. */
export class NvJpeg {
  private readonly n = load();
  private handle: unknown;
  private state: unknown;
  private hw?: { handle: unknown; state: unknown; stream: unknown; batch: number };
  private staging?: { ptr: unknown; bytes: number; view: Uint8Array; address: bigint };

  constructor(private pinned: (bytes: number) => { ptr: unknown; bytes: number; view: Uint8Array }, private freePinned: (p: { ptr: unknown }) => void) {
    this.handle = this.create(BACKEND.default);
    this.state = this.stateOf(this.handle);
    try {
      const h = this.create(BACKEND.hardware);
      const stream = [null];
      this.check(this.n.streamCreate(h, stream), 'nvjpegJpegStreamCreate');
      this.hw = { handle: h, state: this.stateOf(h), stream: stream[0], batch: 0 };
    } catch {
      this.hw = undefined; // no NVJPG engine on this GPU (or this nvJPEG): the default backend decodes everything
    }
  }

  /** 'hardware' when batches of baseline JPEGs go to the NVJPG engines, else 'default'. */
  get backend(): 'hardware' | 'default' {
    return this.hw ? 'hardware' : 'default';
  }

  private create(backend: number): unknown {
    const h = [null];
    this.check(this.n.createEx(backend, null, null, 0, h), `nvjpegCreateEx(backend ${backend})`);
    return h[0];
  }

  private stateOf(handle: unknown): unknown {
    const s = [null];
    this.check(this.n.stateCreate(handle, s), 'nvjpegJpegStateCreate');
    return s[0];
  }

  private check(st: number, call: string): void {
    if (st !== 0) throw new KilnError(`nvJPEG ${call} failed: ${nvjpegStatus(st)}.`);
  }

  /** Size and components from the JPEG's header; undefined when nvJPEG cannot read it. */
  info(bytes: Uint8Array): JpegInfo | undefined {
    const comps = [0], sub = [0];
    const w = new Int32Array(4), h = new Int32Array(4);
    if (this.n.info(this.handle, bytes, bytes.length, comps, sub, w, h) !== 0 || w[0] <= 0 || h[0] <= 0) return undefined;
    return { width: w[0], height: h[0], components: comps[0] };
  }

  /** Whether the hardware engine takes this JPEG in a batch (baseline, supported subsampling). */
  batchable(bytes: Uint8Array): boolean {
    if (!this.hw) return false;
    if (this.n.parse(this.hw.handle, bytes, bytes.length, this.hw.stream) !== 0) return false;
    const unsupported = [1];
    return this.n.supported(this.hw.handle, this.hw.stream, unsupported) === 0 && unsupported[0] === 0;
  }

  /** Decode one JPEG (default backend) on `stream`; returns the nvJPEG status. */
  decodeOne(job: JpegJob, stream: unknown): number {
    return this.n.decode(this.handle, this.state, job.bytes, job.bytes.length, OUTPUT_RGBI, imageStruct([job]), stream);
  }

  /** Decode a batch on the hardware engine; returns the nvJPEG status (non-zero: decode them one by one). */
  decodeBatch(jobs: JpegJob[], stream: unknown): number {
    const hw = this.hw!;
    const total = jobs.reduce((a, j) => a + j.bytes.length, 0);
    if (!this.staging || this.staging.bytes < total) {
      if (this.staging) this.freePinned(this.staging);
      const p = this.pinned(Math.max(total, 1 << 20) * 2);
      this.staging = { ...p, address: BigInt(koffi().address(p.ptr)) };
    }
    const ptrs = Buffer.alloc(8 * jobs.length), lengths = Buffer.alloc(8 * jobs.length);
    let off = 0;
    jobs.forEach((j, i) => {
      this.staging!.view.set(j.bytes, off);
      ptrs.writeBigUInt64LE(this.staging!.address + BigInt(off), 8 * i);
      lengths.writeBigUInt64LE(BigInt(j.bytes.length), 8 * i);
      off += j.bytes.length;
    });
    if (hw.batch !== jobs.length) {
      this.check(this.n.batchedInit(hw.handle, hw.state, jobs.length, 1, OUTPUT_RGBI), 'nvjpegDecodeBatchedInitialize');
      hw.batch = jobs.length;
    }
    return this.n.batched(hw.handle, hw.state, ptrs, lengths, imageStruct(jobs), stream);
  }

  close(): void {
    if (this.staging) this.freePinned(this.staging);
    this.staging = undefined;
    if (this.hw) {
      this.n.streamDestroy(this.hw.stream);
      this.n.stateDestroy(this.hw.state);
      this.n.destroy(this.hw.handle);
      this.hw = undefined;
    }
    this.n.stateDestroy(this.state);
    this.n.destroy(this.handle);
  }
}
