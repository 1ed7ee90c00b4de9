// One item through the CPU executor: sharp (libvips) decodes, applies the EXIF orientation, fixes the channels and
// (for 'bilinear') resizes; our fused pass does the rest (pack.ts). Runs on worker threads or in the calling thread.
import { InputError } from '../ir/errors.js';
import type { ResolvedSpec } from './spec.js';
import { packImage, resizeArea, resizeTarget, type ItemArray, type RawImage } from './pack.js';

/** One input of a pipeline: a file (read by the decoder) or bytes already in memory, with a name for messages. */
export interface PipelineItem {
  name: string;
  path?: string;
  bytes?: Uint8Array;
}

export interface ItemResult {
  data: ItemArray;
  dims: number[];
}

type Sharp = typeof import('sharp').default;
let sharpModule: Promise<Sharp> | undefined;

/** sharp, loaded on first use so that Kiln works without it for everything but pipelines. */
export function loadSharp(): Promise<Sharp> {
  sharpModule ??= import('sharp').then((m) => m.default).catch((e: Error) => {
    sharpModule = undefined;
    throw new InputError(`image pipelines need the 'sharp' package, which failed to load: ${e.message}`, { hint: 'Install it with `npm install sharp`.' });
  });
  return sharpModule;
}

const isJpegBytes = (b: Uint8Array) => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Whether the input may carry alpha: JPEGs never do (by magic bytes, or by extension for files); else sharp says. */
async function mayHaveAlpha(sharp: Sharp, input: Uint8Array | string): Promise<boolean> {
  if (typeof input === 'string' ? /\.jpe?g$/i.test(input) : isJpegBytes(input)) return false;
  return (await sharp(input).metadata()).hasAlpha;
}

/**
 * Decode (oriented, channels fixed) and, for bilinear, resize with libvips; 8-bit HWC out. sharp is asked for what
 * the GPU executor can reproduce (resample.ts models it): no shrink-on-load below a 4x JPEG reduction
 * (fastShrinkOnLoad off; it also keeps WebP's own scaler out), and an alpha channel that the spec drops is dropped
 * before resizing (sharp would resize premultiplied and drop it after, which darkens transparent edges and costs
 * precision), as torchvision's RGB decode + resize does.
 */
export async function decodeImage(sharp: Sharp, item: PipelineItem, s: ResolvedSpec): Promise<RawImage> {
  const input = item.bytes ?? item.path;
  if (input === undefined) throw new InputError(`${item.name}: the item has neither a path nor bytes.`);
  const r = s.resize;
  const { channels, alpha, background } = s.decode;
  const fix = (img: ReturnType<Sharp>) => {
    if (channels !== 4 && alpha === 'flatten') img = img.flatten({ background: { r: background[0], g: background[1], b: background[2] } });
    return channels === 1 ? img.greyscale() : channels === 3 ? img.removeAlpha() : img.ensureAlpha();
  };
  // failOn 'error' rejects truncated and corrupt data; libvips warnings alone (odd but decodable files) pass
  let img = fix(sharp(input, { failOn: 'error', autoOrient: s.decode.autoOrient }));
  if (r && r.interpolation === 'bilinear') {
    if (channels !== 4 && alpha === 'drop' && await mayHaveAlpha(sharp, input)) {
      const first = await img.raw().toBuffer({ resolveWithObject: true });
      img = sharp(first.data, { raw: { width: first.info.width, height: first.info.height, channels: first.info.channels } });
      if (channels === 1) img = img.greyscale(); // a 1-band raw image is read as such; keep it one band
    }
    img = r.mode === 'exact' ? img.resize({ width: r.width, height: r.height, fit: 'fill', kernel: 'linear', fastShrinkOnLoad: false })
      : img.resize({ width: r.size, height: r.size, fit: 'outside', kernel: 'linear', fastShrinkOnLoad: false });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  let raw: RawImage = { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels };
  if (r && r.interpolation === 'area') {
    const [w, h] = resizeTarget(r, raw.width, raw.height);
    raw = resizeArea(raw, w, h);
  }
  return raw;
}

/** Decode and preprocess one item; errors name the item. */
export async function processItem(item: PipelineItem, s: ResolvedSpec, lut: Float32Array | Uint16Array | undefined, index: number): Promise<ItemResult> {
  const sharp = await loadSharp();
  let raw: RawImage;
  try {
    raw = await decodeImage(sharp, item, s);
  } catch (e) {
    if (e instanceof InputError) throw e;
    const msg = (e as Error).message.split('\n')[0];
    throw new InputError(`${item.name}: cannot decode the image: ${msg}`, { hint: 'Supported formats: JPEG, PNG and WebP (and others libvips reads). Check that the file is complete.' });
  }
  return packImage(raw, s, lut, index, item.name);
}
