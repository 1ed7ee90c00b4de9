// The GPU executor: a whole batch at a time. JPEGs decode with nvJPEG straight into device memory (batched on the
// hardware engine where the GPU has one); PNG, WebP and JPEGs nvJPEG does not take decode on the CPU with sharp and
// are uploaded. One NVRTC kernel (codegen/image.ts) then applies resize, orientation, crop, flip, normalize, layout
// and dtype and writes the batch into a GpuTensor, which an engine reads in place: nothing returns to the host.
// The resize is a table of taps per image built here (resample.ts: the filters the CPU path gets from libvips), and
// crop windows and random flips come from the same `placement` as the CPU path, so both draw the same per item.
import fs from 'node:fs/promises';
import { InputError } from '../ir/errors.js';
import { GpuTensor } from '../runtime/gpu-tensor.js';
import { getDevice, type CudaDevice } from '../backends/cuda/device.js';
import { loadDriver } from '../backends/cuda/ffi/driver.js';
import { NvJpeg, nvjpegAvailable, nvjpegStatus, type JpegJob } from '../backends/cuda/ffi/nvjpeg.js';
import { IMAGE_META, imageKernel, imageLaunch, META, ORIENT } from '../backends/cuda/codegen/image.js';
import type { KernelSource } from '../backends/cuda/codegen/types.js';
import { decodeImage, loadSharp, type PipelineItem } from './decode.js';
import { placement } from './pack.js';
import { identityTaps, jpegShrinkOnLoad, resizePlan, type ResizePlan } from './resample.js';
import { fixedSize, type ResolvedSpec } from './spec.js';

export interface GpuBatchResult {
  tensor?: GpuTensor;
  /** Positions (in the given items) of the images in `tensor`, in order. */
  ok: number[];
  errors: { k: number; message: string }[];
}

/** How the GPU executor decodes: nvJPEG on the hardware engine, nvJPEG's default backend, or sharp on the CPU. */
export interface GpuDecodeInfo {
  deviceId: number;
  jpeg: 'nvjpeg-hardware' | 'nvjpeg' | 'cpu';
  /** Why JPEGs decode on the CPU (nvJPEG missing, or a spec it cannot serve). */
  note?: string;
  /** Images decoded so far by each way; `cpuAfterNvjpeg` are JPEGs nvJPEG failed on (last reason in `lastNvjpegError`). */
  counts: { nvjpegHardware: number; nvjpeg: number; cpu: number; cpuAfterNvjpeg: number };
  lastNvjpegError?: string;
}

// one decoder per GPU for the process: nvJPEG handles (the hardware one above all) are costly to make
const decoders = new Map<number, NvJpeg>();

interface Decoded {
  k: number;
  width: number;
  height: number;
  channels: number;
  orient: number;
  /** The file is a JPEG (the CPU path may have libjpeg shrink it on load; resample.ts stands in for that). */
  jpeg: boolean;
  /** CPU-decoded pixels to upload; absent for nvJPEG's. */
  pixels?: Uint8Array;
  bytes?: Uint8Array;
  offset: number;
}

const EXIF_ORIENT = [0, 0, ORIENT.mirrorX, ORIENT.mirrorX | ORIENT.mirrorY, ORIENT.mirrorY, ORIENT.transpose,
  ORIENT.transpose | ORIENT.mirrorX, ORIENT.transpose | ORIENT.mirrorX | ORIENT.mirrorY, ORIENT.transpose | ORIENT.mirrorY];

const isJpeg = (b: Uint8Array) => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** The EXIF orientation (1–8) of a JPEG, 1 when it has none: APP1 "Exif", TIFF header, IFD0 tag 0x0112. */
export function jpegOrientation(b: Uint8Array): number {
  let p = 2;
  while (p + 4 <= b.length && b[p] === 0xff) {
    const marker = b[p + 1], len = (b[p + 2] << 8) | b[p + 3];
    if (marker === 0xda || marker === 0xd9) break; // start of scan: no more metadata
    if (marker === 0xe1 && len >= 16 && b[p + 4] === 0x45 && b[p + 5] === 0x78 && b[p + 6] === 0x69 && b[p + 7] === 0x66) {
      const t = p + 10, end = Math.min(b.length, p + 2 + len);
      const le = b[t] === 0x49;
      const u16 = (o: number) => (o + 2 > end ? -1 : le ? b[o] | (b[o + 1] << 8) : (b[o] << 8) | b[o + 1]);
      const u32 = (o: number) => (o + 4 > end ? -1 : le ? (u16(o) | (u16(o + 2) << 16)) >>> 0 : ((u16(o) << 16) | u16(o + 2)) >>> 0);
      const ifd = t + u32(t + 4);
      const n = u16(ifd);
      for (let i = 0; i < n; i++) {
        const e = ifd + 2 + 12 * i;
        if (u16(e) === 0x0112) {
          const v = u16(e + 8);
          return v >= 1 && v <= 8 ? v : 1;
        }
      }
      return 1;
    }
    p += 2 + len;
  }
  return 1;
}

const align = (n: number) => Math.ceil(n / 256) * 256;

const floatBits = (v: number) => new Int32Array(Float32Array.of(v).buffer)[0];

/**
 * The taps of a batch as the kernel reads them (one buffer of 32-bit words): per image, the x and y tables' first
 * source indices and weights over the crop's window; their offsets, tap counts, window origin and rounding go into
 * the image's metadata (META).
 */
function packTaps(images: { m: number[]; plan: ResizePlan; win: number[] }[]): Int32Array {
  let words = 0;
  for (const { plan, win } of images) words += win[1] * (1 + plan.x.n) + win[3] * (1 + plan.y.n);
  const lo = new Int32Array(Math.max(words, 64)), wt = new Float32Array(lo.buffer);
  let off = 0;
  for (const { m, plan: { x, y }, win: [qx0, lenX, qy0, lenY] } of images) {
    m[META.loX] = off; lo.set(x.lo.subarray(qx0, qx0 + lenX), off); off += lenX;
    m[META.loY] = off; lo.set(y.lo.subarray(qy0, qy0 + lenY), off); off += lenY;
    m[META.wX] = off; wt.set(x.w.subarray(qx0 * x.n, (qx0 + lenX) * x.n), off); off += lenX * x.n;
    m[META.wY] = off; wt.set(y.w.subarray(qy0 * y.n, (qy0 + lenY) * y.n), off); off += lenY * y.n;
    m[META.nx] = x.n; m[META.ny] = y.n; m[META.qx0] = qx0; m[META.qy0] = qy0;
    m[META.round] = floatBits(0.5 - x.bias - y.bias);
  }
  return lo;
}

export class GpuExecutor {
  private lock: Promise<unknown> = Promise.resolve();
  private kernel: KernelSource;
  private stream: unknown;
  private closed = false;
  private plans = new Map<string, ResizePlan>();

  private constructor(private spec: ResolvedSpec, private deviceId: number, private dev: CudaDevice, private nvjpeg: NvJpeg | undefined, readonly info: GpuDecodeInfo) {
    const [h, w] = fixedSize(spec)!;
    this.kernel = imageKernel({
      height: h, width: w, channels: spec.decode.channels,
      layout: spec.layout === 'NHWC' || spec.layout === 'HWC' ? 'NHWC' : 'NCHW', dtype: spec.dtype, normalize: spec.normalize,
    });
    this.stream = dev.createStream();
    dev.kernel(this.kernel); // compile now: a spec the kernel cannot serve fails at create, not on the first batch
  }

  static async create(spec: ResolvedSpec, deviceId = 0): Promise<GpuExecutor> {
    if (!fixedSize(spec)) {
      throw new InputError('the cuda pipeline writes batches of one shape, so the spec needs a crop or an exact resize.', { hint: 'Add "crop": {"size": 224} (or resize mode \'exact\').' });
    }
    let dev: CudaDevice;
    try {
      dev = getDevice(deviceId);
    } catch (e) {
      throw new InputError(`the cuda pipeline cannot use GPU ${deviceId}: ${(e as Error).message.split('\n')[0]}`, { hint: 'Use the CPU pipeline (device \'cpu\'), or install the NVIDIA driver.' });
    }
    let nvjpeg: NvJpeg | undefined;
    let note: string | undefined;
    if (spec.decode.channels !== 3) note = `decode.channels is ${spec.decode.channels}; nvJPEG decodes to RGB only`;
    else {
      note = nvjpegAvailable();
      if (!note) {
        try {
          nvjpeg = decoders.get(deviceId) ?? new NvJpeg((b) => dev.allocPinned(b), (p) => dev.freePinned(p as never));
          decoders.set(deviceId, nvjpeg);
        } catch (e) {
          note = (e as Error).message;
        }
      }
    }
    const jpeg = nvjpeg ? (nvjpeg.backend === 'hardware' ? 'nvjpeg-hardware' : 'nvjpeg') : 'cpu';
    const counts = { nvjpegHardware: 0, nvjpeg: 0, cpu: 0, cpuAfterNvjpeg: 0 };
    return new GpuExecutor(spec, deviceId, dev, nvjpeg, { deviceId, jpeg, note: nvjpeg ? undefined : `JPEGs decode on the CPU: ${note}`, counts });
  }

  /** Decode and preprocess a batch; items that fail are reported and left out. */
  async runBatch(items: PipelineItem[], first: number): Promise<GpuBatchResult> {
    if (this.closed) throw new InputError('this pipeline was closed.');
    const errors: GpuBatchResult['errors'] = [];
    const fail = (k: number, e: unknown) => errors.push({ k, message: (e as Error).message });
    const bytes = await Promise.all(items.map(async (it, k) => {
      try {
        if (it.bytes) return it.bytes;
        if (it.path === undefined) throw new InputError(`${it.name}: the item has neither a path nor bytes.`);
        return new Uint8Array(await fs.readFile(it.path));
      } catch (e) {
        fail(k, e instanceof InputError ? e : new InputError(`${it.name}: cannot read the file: ${(e as Error).message}`));
        return undefined;
      }
    }));
    const decoded = (await Promise.all(bytes.map((b, k) => (b ? this.prepare(items[k], b, k).catch((e) => { fail(k, e); return undefined; }) : undefined))))
      .filter((d): d is Decoded => d !== undefined);
    const run = this.lock.then(() => this.onDevice(items, first, decoded, errors));
    this.lock = run.catch(() => {});
    const result = await run;
    result.errors.sort((a, b) => a.k - b.k);
    return result;
  }

  /** Header read (nvJPEG) or CPU decode (sharp) of one item. */
  private async prepare(item: PipelineItem, b: Uint8Array, k: number): Promise<Decoded> {
    if (this.nvjpeg && isJpeg(b)) {
      const info = this.nvjpeg.info(b);
      if (info && (info.components === 3 || info.components === 1)) {
        const orient = this.spec.decode.autoOrient ? EXIF_ORIENT[jpegOrientation(b)] : 0;
        return { k, width: info.width, height: info.height, channels: 3, orient, jpeg: true, bytes: b, offset: 0 };
      }
    }
    const sharp = await loadSharp();
    try {
      // a JPEG stays in its stored frame, its orientation left to the kernel: the CPU path resizes before orienting
      const jpeg = isJpeg(b);
      const orient = jpeg && this.spec.decode.autoOrient ? EXIF_ORIENT[jpegOrientation(b)] : 0;
      const decode = jpeg ? { ...this.spec.decode, autoOrient: false } : this.spec.decode;
      const raw = await decodeImage(sharp, { name: item.name, bytes: b }, { ...this.spec, decode, resize: undefined });
      this.info.counts.cpu++;
      return { k, width: raw.width, height: raw.height, channels: raw.channels, orient, jpeg, pixels: raw.data, offset: 0 };
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError(`${item.name}: cannot decode the image: ${(e as Error).message.split('\n')[0]}`, { hint: 'Supported formats: JPEG, PNG and WebP. Check that the file is complete.' });
    }
  }

  private async onDevice(items: PipelineItem[], first: number, decoded: Decoded[], errors: GpuBatchResult['errors']): Promise<GpuBatchResult> {
    const dev = getDevice(this.deviceId);
    const s = this.spec;
    // geometry first: a crop larger than the resized image fails that item before anything is decoded
    const metas: { d: Decoded; m: number[]; plan: ResizePlan; win: number[] }[] = [];
    const [H, W] = fixedSize(s)!;
    for (const d of decoded) {
      const t = (d.orient & ORIENT.transpose) !== 0;
      const plan = this.plan(d);
      const [rw, rh] = t ? [plan.y.size, plan.x.size] : [plan.x.size, plan.y.size];
      try {
        const pl = placement(s, rw, rh, first + d.k, items[d.k].name);
        // the crop's window in the resized image's stored frame: the only taps the kernel reads
        const xs = d.orient & ORIENT.mirrorX ? rw - pl.x0 - W : pl.x0, ys = d.orient & ORIENT.mirrorY ? rh - pl.y0 - H : pl.y0;
        const win = t ? [ys, H, xs, W] : [xs, W, ys, H];
        const pre = plan.premultiply && d.channels === 4 ? 4 : 0; // RGBA resized premultiplied, as sharp does
        const m = [0, d.width, d.height, d.width * d.channels, d.channels, d.orient, rw, rh, pl.x0, pl.y0, (pl.flipH ? 1 : 0) | (pl.flipV ? 2 : 0) | pre];
        metas.push({ d, m, plan, win });
      } catch (e) {
        errors.push({ k: d.k, message: (e as Error).message });
      }
    }
    let total = 0;
    for (const { d } of metas) { d.offset = total; total += align(d.width * d.height * d.channels); }
    const src = dev.alloc(Math.max(total, 256), true);
    const keep: typeof metas = [];
    try {
      for (const { d } of metas) if (d.pixels) dev.upload(src + d.offset, d.pixels, this.stream);
      const failed = this.decodeJpegs(metas.map((x) => x.d).filter((d) => d.bytes), src);
      for (const x of metas) {
        const why = failed.get(x.d.k);
        if (!why) { keep.push(x); continue; }
        // nvJPEG refused it: libjpeg-turbo (sharp) decides, so a file is an error only when the CPU path says so too
        this.info.lastNvjpegError = `${items[x.d.k].name}: ${why}`;
        try {
          const raw = await decodeImage(await loadSharp(), { name: items[x.d.k].name, bytes: x.d.bytes }, { ...s, resize: undefined, decode: { ...s.decode, autoOrient: false } });
          dev.upload(src + x.d.offset, raw.data, this.stream);
          x.m[3] = raw.width * raw.channels;
          x.m[4] = raw.channels;
          this.info.counts.cpuAfterNvjpeg++;
          keep.push(x);
        } catch (e) {
          errors.push({ k: x.d.k, message: `${items[x.d.k].name}: cannot decode the image: ${(e as Error).message.split('\n')[0]}` });
        }
      }
      if (!keep.length) {
        await this.wait();
        return { ok: [], errors };
      }
      const taps = packTaps(keep);
      const meta = new BigInt64Array(IMAGE_META * keep.length);
      keep.forEach((x, i) => { x.m[0] = x.d.offset; x.m.forEach((v, j) => (meta[i * IMAGE_META + j] = BigInt(v))); });
      const metaPtr = dev.alloc(meta.byteLength, true);
      const tapsPtr = dev.alloc(taps.byteLength, true);
      const [h, w] = [H, W];
      const C = s.decode.channels;
      const dims = { NHWC: [keep.length, h, w, C], NCHW: [keep.length, C, h, w], HWC: [h, w, C], CHW: [C, h, w] }[s.layout];
      const tensor = await GpuTensor.allocate(s.dtype, dims, this.deviceId);
      try {
        dev.makeCurrent();
        dev.upload(metaPtr, meta, this.stream);
        dev.upload(tapsPtr, taps, this.stream);
        dev.launch(imageLaunch(this.kernel, keep.length, h * w), [src, metaPtr, tapsPtr, tensor.ptr, keep.length], this.stream);
        await this.wait();
      } catch (e) {
        await tensor.dispose();
        throw e;
      } finally {
        dev.release(metaPtr);
        dev.release(tapsPtr);
      }
      return { tensor, ok: keep.map((x) => x.d.k), errors };
    } finally {
      dev.release(src);
    }
  }

  /** The resize taps of a decoded image in its stored frame (cached: a dataset has few distinct sizes). */
  private plan(d: Decoded): ResizePlan {
    const r = this.spec.resize;
    if (!r) return { x: identityTaps(d.width), y: identityTaps(d.height), premultiply: false };
    const t = (d.orient & ORIENT.transpose) !== 0;
    const f = d.jpeg ? jpegShrinkOnLoad(r, d.width, d.height, t) : 1;
    const key = `${d.width}x${d.height}/${t ? 1 : 0}/${f}`;
    let p = this.plans.get(key);
    if (!p) {
      if (this.plans.size >= 256) this.plans.clear();
      p = resizePlan(r, d.width, d.height, t, f);
      this.plans.set(key, p);
    }
    return p;
  }

  /** nvJPEG decodes into the source buffer (synchronously: its state is free again on return); returns the items it could not decode, with why. */
  private decodeJpegs(ds: Decoded[], src: number): Map<number, string> {
    const failed = new Map<number, string>();
    if (!ds.length || !this.nvjpeg) return failed;
    const job = (d: Decoded): JpegJob => ({ bytes: d.bytes!, dst: src + d.offset, width: d.width });
    const hw = ds.filter((d) => this.nvjpeg!.batchable(d.bytes!));
    let single = ds.filter((d) => !hw.includes(d));
    this.dev.makeCurrent();
    if (hw.length) {
      const st = this.nvjpeg.decodeBatch(hw.map(job), this.stream);
      if (st !== 0) {
        single = ds; // one bad image fails the whole batch: find it one by one
        this.info.lastNvjpegError = `batched decode: ${nvjpegStatus(st)}`;
      } else this.info.counts.nvjpegHardware += hw.length;
    }
    for (const d of single) {
      const st = this.nvjpeg.decodeOne(job(d), this.stream);
      if (st !== 0) failed.set(d.k, nvjpegStatus(st));
      else this.info.counts.nvjpeg++;
    }
    this.dev.sync(this.stream);
    return failed;
  }

  /** Wait for this executor's stream without blocking the JavaScript thread. */
  private async wait(): Promise<void> {
    const d = loadDriver();
    for (;;) {
      const st = d.cuStreamQuery(this.stream);
      if (st === 0) return;
      if (st !== 600) this.dev.sync(this.stream); // not 'not ready': let sync raise the error with its name
      await new Promise((r) => setImmediate(r));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.lock;
    loadDriver().cuStreamDestroy_v2(this.stream);
  }
}
