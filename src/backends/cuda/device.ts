// One CUDA device: context, stream, memory (a caching allocator over cuMemAlloc), copies, modules and launches.
import { KilnError } from '../../ir/errors.js';
import { cu, check, loadDriver, ATTR, pointerArray, launchConfig, current, koffi } from './ffi/driver.js';
import { compileCubin, prefetchCubins } from './ffi/nvrtc.js';
import { setTimingHold, setWorkspaceAllocator, WORKSPACE_BYTES } from './ffi/cublaslt.js';
import { finish, type KernelSource } from './codegen/types.js';
import { withPdl, type PdlMode } from './codegen/pdl.js';

/** The tactic timing's hold (ffi/cublaslt.ts timeOnStream): one warp spinning on the global timer for HOLD_NS ns. */
export const HOLD = finish('kiln_hold', `extern "C" __global__ void __launch_bounds__(32) KNAME(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}`, { grid: [1, 1, 1], block: [32, 1, 1], sharedBytes: 0, params: [] });
const HOLD_NS = Buffer.alloc(8);
HOLD_NS.writeBigUInt64LE(300_000n);

export interface DeviceInfo {
  ordinal: number;
  name: string;
  sm: number;
  smCount: number;
  driverVersion: number;
  totalMem: number;
}

export class CudaDevice {
  readonly info: DeviceInfo;
  private ctx: unknown;
  private free = new Map<number, number[]>(); // size class -> free pointers
  private sizes = new Map<number, number>();
  private modules = new Map<string, { fn: unknown; mod: unknown }>();
  /** cubins by kernel name, filled at build time or from a plan */
  readonly cubins = new Map<string, Uint8Array>();
  /** names of kernels loaded since the last clear (what a plan must carry) */
  readonly used = new Set<string>();
  allocatedBytes = 0;
  /**
   * The stream whose run is issuing work right now (runs issue synchronously between awaits). Blocks freed while a
   * stream is active may still be read by its queued kernels, so they are reused only by that stream until it has
   * synchronized (`settle`); other contexts' streams never see them early.
   */
  active: unknown = undefined;
  private pending = new Map<unknown, Map<number, number[]>>();
  /** the allocation sequence of a run being recorded (for planning the arena of its CUDA graph) */
  private rec?: { sizes: number[]; start: number[]; end: number[]; ids: Map<number, number>; t: number };
  /** a planned arena serving a captured run's allocations in the recorded order */
  private arena?: { base: number; offsets: number[]; sizes: number[]; i: number; diverged: boolean };

  constructor(ordinal = 0) {
    const d = loadDriver();
    cu('cuInit', 0);
    const count = [0];
    cu('cuDeviceGetCount', count);
    if (ordinal >= count[0]) throw new KilnError(`CUDA device ${ordinal} does not exist (${count[0]} found).`);
    const dev = [0];
    cu('cuDeviceGet', dev, ordinal);
    const nameBuf = Buffer.alloc(256);
    cu('cuDeviceGetName', nameBuf, 256, dev[0]);
    const attr = (a: number) => { const v = [0]; cu('cuDeviceGetAttribute', v, a, dev[0]); return v[0]; };
    const ver = [0];
    cu('cuDriverGetVersion', ver);
    const mem = [0];
    cu('cuDeviceTotalMem_v2', mem, dev[0]);
    this.info = {
      ordinal, name: nameBuf.toString('utf8').replace(/\0.*$/s, ''), sm: attr(ATTR.ccMajor) * 10 + attr(ATTR.ccMinor),
      smCount: attr(ATTR.smCount), driverVersion: ver[0], totalMem: Number(mem[0]),
    };
    const ctx = [null];
    cu('cuDevicePrimaryCtxRetain', ctx, dev[0]);
    this.ctx = ctx[0];
    this.makeCurrent();
    void d;
    setWorkspaceAllocator(ordinal, () => this.alloc(WORKSPACE_BYTES, true));
    setTimingHold(ordinal, (stream) => this.launch(HOLD, [HOLD_NS], stream));
  }

  makeCurrent(): void {
    cu('cuCtxSetCurrent', this.ctx);
    current.ordinal = this.info.ordinal;
  }

  /**
   * Device memory, rounded up to 256 bytes: from the planned arena while one serves a capture, else reused from
   * freed blocks of the same size. `persistent` blocks (weights, library workspaces) are outside the run's sequence.
   */
  alloc(bytes: number, persistent = false): number {
    const size = Math.max(256, Math.ceil(bytes / 256) * 256);
    if (!persistent && this.arena && !this.arena.diverged) {
      const a = this.arena;
      if (a.sizes[a.i] === size) return a.base + a.offsets[a.i++];
      a.diverged = true; // not the recorded sequence: plain allocations from here on (still correct, just not planned)
    }
    const ptr = this.poolAlloc(size);
    if (!persistent && this.rec) {
      const r = this.rec, id = r.sizes.length;
      r.sizes.push(size); r.start.push(r.t++); r.end.push(Infinity);
      r.ids.set(ptr, id);
    }
    return ptr;
  }

  private poolAlloc(size: number): number {
    const mine = this.active === undefined ? undefined : this.pending.get(this.active)?.get(size);
    if (mine?.length) return mine.pop()!;
    const list = this.free.get(size);
    if (list?.length) return list.pop()!;
    const ptr = this.driverAlloc(size, `cuMemAlloc(${size} bytes)`);
    this.sizes.set(ptr, size);
    return ptr;
  }

  /** cuMemAlloc, retried once after returning the cached free blocks to the driver. */
  private driverAlloc(size: number, what: string): number {
    const p = [0];
    if (loadDriver().cuMemAlloc_v2(p, size) !== 0) {
      this.trim();
      check(loadDriver().cuMemAlloc_v2(p, size), what);
    }
    this.allocatedBytes += size;
    return Number(p[0]);
  }

  /** Give a block back: to the active stream's own list while it runs, else to everyone (its work is done). */
  release(ptr: number): void {
    const id = this.rec?.ids.get(ptr);
    if (id !== undefined) {
      this.rec!.end[id] = this.rec!.t++;
      this.rec!.ids.delete(ptr);
    }
    const size = this.sizes.get(ptr);
    if (size === undefined) return; // arena blocks belong to their arena
    let lists = this.free;
    if (this.active !== undefined) {
      lists = this.pending.get(this.active) ?? new Map();
      this.pending.set(this.active, lists);
    }
    const list = lists.get(size);
    if (list) list.push(ptr);
    else lists.set(size, [ptr]);
  }

  /** Record the sizes and lifetimes of the non-persistent allocations until `stopRecording`. */
  startRecording(): void {
    this.rec = { sizes: [], start: [], end: [], ids: new Map(), t: 0 };
  }

  stopRecording(): AllocationRecord | undefined {
    const r = this.rec;
    this.rec = undefined;
    return r && { sizes: r.sizes, start: r.start, end: r.end };
  }

  /**
   * Serve the next allocations from one block laid out for `record` (each allocation at an offset that no other
   * allocation overlapping it in time uses): a context's captured run then holds about its peak live bytes, not
   * the sum of whatever sizes a caching pool happened to keep. Returns the arena's base (free with `freeArena`).
   */
  beginArena(record: AllocationRecord): number {
    const { offsets, total } = planArena(record);
    const size = Math.max(total, 256);
    const base = this.driverAlloc(size, `cuMemAlloc(${size} bytes, context arena)`);
    this.arenas.set(base, size);
    this.arena = { base, offsets, sizes: record.sizes, i: 0, diverged: false };
    return base;
  }

  endArena(): void {
    this.arena = undefined;
  }

  freeArena(base: number): void {
    const size = this.arenas.get(base);
    if (size === undefined) return;
    loadDriver().cuMemFree_v2(base);
    this.arenas.delete(base);
    this.allocatedBytes -= size;
  }
  private arenas = new Map<number, number>();

  /** After `stream` synchronized: its freed blocks become everyone's. */
  settle(stream: unknown): void {
    const lists = this.pending.get(stream);
    this.pending.delete(stream);
    if (!lists) return;
    for (const [size, ptrs] of lists) {
      const list = this.free.get(size);
      if (list) list.push(...ptrs);
      else this.free.set(size, ptrs);
    }
  }

  /** Blocks `stream` freed since it last settled, taken out of the pool (a captured CUDA graph keeps using them). */
  takePending(stream: unknown): number[] {
    const lists = this.pending.get(stream);
    this.pending.delete(stream);
    return lists ? [...lists.values()].flat() : [];
  }

  /** Return cached free blocks to the driver. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const p of list) {
        loadDriver().cuMemFree_v2(p);
        this.allocatedBytes -= this.sizes.get(p) ?? 0;
        this.sizes.delete(p);
      }
    }
    this.free.clear();
  }

  /**
   * Page-locked host memory with a JS view of it: copies between it and the device are truly asynchronous (from
   * pageable memory the driver stages and blocks), so a context's input/output transfers overlap nothing on the host.
   */
  allocPinned(bytes: number): PinnedBuffer {
    const p = [null];
    cu('cuMemHostAlloc', p, Math.max(bytes, 1), 0);
    return { ptr: p[0], bytes, view: new Uint8Array(koffi().view(p[0], Math.max(bytes, 1)), 0, bytes) };
  }

  freePinned(b: PinnedBuffer): void {
    loadDriver().cuMemFreeHost(b.ptr);
  }

  /** Pinned host -> device on `stream` (asynchronous). */
  uploadPinned(ptr: number, b: PinnedBuffer, stream: unknown): void {
    if (b.bytes) cu('cuMemcpyHtoDAsync_v2', ptr, b.ptr, b.bytes, stream);
  }

  /** Device -> pinned host on `stream` (asynchronous: wait on the stream before reading `b.view`). */
  downloadPinned(b: PinnedBuffer, ptr: number, stream: unknown): void {
    if (b.bytes) cu('cuMemcpyDtoHAsync_v2', b.ptr, ptr, b.bytes, stream);
  }

  /** Host -> device, ordered on `stream` (the host buffer must stay alive until the stream passes this point). */
  upload(ptr: number, data: ArrayBufferView, stream: unknown): void {
    if (data.byteLength) cu('cuMemcpyHtoDAsync_v2', ptr, data, data.byteLength, stream);
  }

  /** Device -> host, complete on return. */
  download(ptr: number, into: ArrayBufferView, stream: unknown): void {
    if (!into.byteLength) return;
    cu('cuMemcpyDtoHAsync_v2', into, ptr, into.byteLength, stream);
    this.sync(stream);
  }

  copy(dst: number, src: number, bytes: number, stream: unknown): void {
    if (bytes) cu('cuMemcpyDtoDAsync_v2', dst, src, bytes, stream);
  }

  memset(ptr: number, bytes: number, stream: unknown): void {
    if (bytes) cu('cuMemsetD8Async', ptr, 0, bytes, stream);
  }

  createStream(): unknown {
    const s = [null];
    cu('cuStreamCreate', s, 1); // non-blocking with respect to the legacy default stream
    return s[0];
  }

  sync(stream: unknown): void {
    cu('cuStreamSynchronize', stream);
  }

  /**
   * The function for a generated kernel: compiled by NVRTC unless its cubin is already known (plan or cache). Where
   * programmatic dependent launch is on (`pdl`), this is the kernel's PDL variant (codegen/pdl.ts), which is also
   * safe to launch plainly.
   */
  kernel(k: KernelSource): unknown {
    return this.load(k).fn;
  }

  /**
   * Programmatic dependent launch for generated kernels (codegen/pdl.ts), Hopper and later: off unless KILN_PDL=1
   * (`late`) or KILN_PDL=entry|wait|late|early|mixed. Off by default: on BERT-base 8x128 (H100, bench/quant/bert-ncu.js
   * ab) `early` took the fp16 engine's graph from 0.937 to 0.882 ms but the int8 one's from 0.698 to 0.745 ms, and
   * `late` moved them by -11 / -1 us. Read at each launch, so one process can capture graphs several ways.
   */
  get pdl(): PdlMode | undefined {
    const e = process.env.KILN_PDL;
    if (this.info.sm < 90 || !e || e === '0') return undefined;
    return e === 'entry' || e === 'wait' || e === 'early' || e === 'mixed' ? e : 'late';
  }

  /**
   * `k`'s PDL variant where PDL is on (compiled if neither the plan nor this process holds its cubin: a plan built
   * with PDL off carries only the plain kernels), else `k`.
   */
  private variant(k: KernelSource): KernelSource {
    const mode = this.pdl;
    return (mode && withPdl(k, mode)) || k;
  }

  /** The loaded function and whether it may take the PDL attribute (only a PDL variant waits for its predecessor). */
  private load(k: KernelSource): { fn: unknown; pdl: boolean } {
    const v = this.variant(k);
    return { fn: this.module(v), pdl: v !== k };
  }

  private module(k: KernelSource): unknown {
    this.used.add(k.name);
    let m = this.modules.get(k.name);
    if (!m) {
      let cubin = this.cubins.get(k.name);
      if (!cubin) {
        if (k.arch && this.info.sm !== 90) throw new KilnError(`kernel ${k.name} needs ${k.arch} (a Hopper GPU); this GPU is sm_${this.info.sm}`);
        cubin = compileCubin(k.source, k.name, this.info.sm, this.extraOptions(k));
        this.cubins.set(k.name, cubin);
      }
      const mod = [null];
      cu('cuModuleLoadData', mod, cubin);
      const fn = [null];
      cu('cuModuleGetFunction', fn, mod[0], k.name);
      if (k.sharedBytes > 48 * 1024) cu('cuFuncSetAttribute', fn[0], 8, k.sharedBytes);
      m = { fn: fn[0], mod: mod[0] };
      this.modules.set(k.name, m);
    }
    return m.fn;
  }

  /**
   * Start compiling kernels that a tactic is about to try (on worker threads); `kernel` then waits for each one.
   * Kernels the plan or this process already holds, or that this GPU cannot run, are left out.
   */
  prefetch(kernels: KernelSource[]): void {
    const todo = kernels.map((k) => this.variant(k)).filter((k) => !this.cubins.has(k.name) && !(k.arch && this.info.sm !== 90));
    prefetchCubins(todo.map((k) => ({ source: k.source, name: k.name, sm: this.info.sm, extraOptions: this.extraOptions(k) })));
  }

  private extraOptions(k: KernelSource): string[] {
    return k.arch ? [`--gpu-architecture=${k.arch}`] : [];
  }

  /**
   * Launch a generated kernel; `ptrs` are its parameters (device pointers, or Buffers passed by value). A PDL variant
   * goes through cuLaunchKernelEx with the programmatic-serialization attribute: it may start before the previous
   * kernel on `stream` has finished and waits for it inside (codegen/pdl.ts).
   */
  launch(k: KernelSource, ptrs: (number | Buffer)[], stream: unknown): void {
    const { fn, pdl } = this.load(k);
    if (pdl) cu('cuLaunchKernelEx', launchConfig(k.grid, k.block, k.sharedBytes, stream, true), fn, pointerArray(ptrs), null);
    else cu('cuLaunchKernel', fn, k.grid[0], k.grid[1], k.grid[2], k.block[0], k.block[1], k.block[2], k.sharedBytes, stream, pointerArray(ptrs), null);
  }

  memInfo(): { free: number; total: number } {
    const f = [0], t = [0];
    cu('cuMemGetInfo_v2', f, t);
    return { free: Number(f[0]), total: Number(t[0]) };
  }
}

export interface PinnedBuffer {
  ptr: unknown;
  bytes: number;
  view: Uint8Array;
}

/** Sizes and lifetimes (event indices; Infinity = still live at the end) of a run's allocations, in order. */
export interface AllocationRecord {
  sizes: number[];
  start: number[];
  end: number[];
}

/** Offsets for a recorded allocation sequence: largest first, each at the lowest offset free for its lifetime. */
export function planArena(r: AllocationRecord): { offsets: number[]; total: number } {
  const order = r.sizes.map((_, i) => i).sort((a, b) => r.sizes[b] - r.sizes[a] || a - b);
  const offsets = new Array<number>(r.sizes.length).fill(0);
  const placed: number[] = [];
  let total = 0;
  for (const i of order) {
    const busy = placed.filter((j) => r.start[j] < r.end[i] && r.start[i] < r.end[j]).map((j) => [offsets[j], offsets[j] + r.sizes[j]] as const).sort((a, b) => a[0] - b[0]);
    let off = 0;
    for (const [lo, hi] of busy) {
      if (off + r.sizes[i] <= lo) break;
      off = Math.max(off, hi);
    }
    offsets[i] = off;
    placed.push(i);
    total = Math.max(total, off + r.sizes[i]);
  }
  return { offsets, total };
}

let devices: CudaDevice[] = [];
export function getDevice(ordinal = 0): CudaDevice {
  devices[ordinal] ??= new CudaDevice(ordinal);
  devices[ordinal].makeCurrent();
  return devices[ordinal];
}
/** How many CUDA devices the driver sees (0 when there is no driver). */
export function deviceCount(): number {
  try {
    loadDriver();
    cu('cuInit', 0);
    const count = [0];
    cu('cuDeviceGetCount', count);
    return count[0];
  } catch {
    return 0;
  }
}
export function resetDevicesForTests(): void {
  devices = [];
}
