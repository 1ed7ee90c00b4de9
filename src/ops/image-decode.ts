// ImageDecoder: PNG (via node:zlib), BMP and PNM (PBM/PGM/PPM). JPEG, JPEG 2000, TIFF and WebP are not supported.
import { inflateSync } from 'node:zlib';
import { defineOp, attr } from '../ir/schema.js';
import { TensorData, MAX_ELEMENTS } from '../ir/tensor.js';

/** A decoded image: 8-bit samples, `channels` (1 = gray, 3 = RGB) per pixel, rows top to bottom. */
interface Image { width: number; height: number; channels: 1 | 3; data: Uint8Array }

function checkSize(width: number, height: number, what: string): void {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0) || width * height * 3 > MAX_ELEMENTS) {
    throw new Error(`${what} image has an invalid size ${width}x${height}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PNG

const PNG_SIG = [137, 80, 78, 71, 13, 10, 26, 10];
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

function decodePng(b: Uint8Array): Image {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let pos = 8, width = 0, height = 0, depth = 0, colorType = -1, interlace = 0;
  let palette: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  while (pos + 8 <= b.length) {
    const len = dv.getUint32(pos);
    const type = String.fromCharCode(...b.subarray(pos + 4, pos + 8));
    const body = b.subarray(pos + 8, pos + 8 + len);
    if (body.length !== len) throw new Error(`PNG chunk ${type} is truncated`);
    if (type === 'IHDR') {
      width = dv.getUint32(pos + 8); height = dv.getUint32(pos + 12);
      depth = body[8]; colorType = body[9]; interlace = body[12];
    } else if (type === 'PLTE') palette = body;
    else if (type === 'IDAT') idat.push(body);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  checkSize(width, height, 'PNG');
  const spp = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[colorType];
  if (!spp || ![1, 2, 4, 8, 16].includes(depth)) throw new Error(`unsupported PNG color type ${colorType} / bit depth ${depth}`);
  if (colorType === 3 && !palette) throw new Error('PNG palette image has no PLTE chunk');
  const bitsPP = spp * depth, bpp = Math.max(1, bitsPP >> 3);
  const passes = interlace ? ADAM7 : [[0, 0, 1, 1]];
  const sizes = passes.map(([x0, y0, dx, dy]) => [Math.ceil((width - x0) / dx), Math.ceil((height - y0) / dy)]);
  const total = sizes.reduce((s, [w, h]) => s + (w && h ? h * (1 + Math.ceil((w * bitsPP) / 8)) : 0), 0);
  const raw = inflateSync(Buffer.concat(idat), { maxOutputLength: total + 1 });
  if (raw.length < total) throw new Error(`PNG image data is truncated (${raw.length} of ${total} bytes)`);
  const out = new Uint8Array(width * height * 3);
  const gray = colorType === 0 || colorType === 4;
  const maxv = (1 << Math.min(depth, 8)) - 1;
  let off = 0;
  passes.forEach(([x0, y0, dx, dy], pi) => {
    const [pw, ph] = sizes[pi];
    if (!pw || !ph) return;
    const stride = Math.ceil((pw * bitsPP) / 8);
    let prev = new Uint8Array(stride), cur = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      const filter = raw[off];
      unfilter(filter, raw.subarray(off + 1, off + 1 + stride), prev, cur, bpp);
      off += 1 + stride;
      for (let x = 0; x < pw; x++) {
        const sample = (k: number) => {
          if (depth === 16) return cur[(x * spp + k) * 2];
          if (depth === 8) return cur[x * spp + k];
          const bit = (x * spp + k) * depth;
          return (cur[bit >> 3] >> (8 - depth - (bit & 7))) & maxv;
        };
        const o = ((y0 + y * dy) * width + x0 + x * dx) * 3;
        if (colorType === 3) {
          const i = sample(0);
          out[o] = palette![i * 3]; out[o + 1] = palette![i * 3 + 1]; out[o + 2] = palette![i * 3 + 2];
        } else if (gray) {
          const v = depth < 8 ? Math.round((sample(0) * 255) / maxv) : sample(0);
          out[o] = out[o + 1] = out[o + 2] = v;
        } else {
          out[o] = sample(0); out[o + 1] = sample(1); out[o + 2] = sample(2);
        }
      }
      [prev, cur] = [cur, prev];
    }
  });
  return { width, height, channels: 3, data: out };
}

function unfilter(filter: number, src: Uint8Array, prev: Uint8Array, cur: Uint8Array, bpp: number): void {
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const a = i >= bpp ? cur[i - bpp] : 0, up = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
    let v: number;
    switch (filter) {
      case 0: v = src[i]; break;
      case 1: v = src[i] + a; break;
      case 2: v = src[i] + up; break;
      case 3: v = src[i] + ((a + up) >> 1); break;
      case 4: {
        const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
        v = src[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? up : c);
        break;
      }
      default: throw new Error(`invalid PNG filter type ${filter}`);
    }
    cur[i] = v & 0xff;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// BMP (uncompressed 1/4/8/24/32-bit)

function decodeBmp(b: Uint8Array): Image {
  if (b.length < 54) throw new Error('BMP file is truncated');
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const dataOff = dv.getUint32(10, true), dib = dv.getUint32(14, true);
  const width = dv.getInt32(18, true), rawH = dv.getInt32(22, true);
  const bits = dv.getUint16(28, true), compression = dv.getUint32(30, true);
  const height = Math.abs(rawH), topDown = rawH < 0;
  checkSize(width, height, 'BMP');
  if (!(compression === 0 || (compression === 3 && bits === 32))) throw new Error(`unsupported BMP compression ${compression}`);
  if (![1, 4, 8, 24, 32].includes(bits)) throw new Error(`unsupported BMP bit depth ${bits}`);
  const stride = Math.floor((bits * width + 31) / 32) * 4;
  if (dataOff + stride * height > b.length) throw new Error('BMP pixel data is truncated');
  const palOff = 14 + dib;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = dataOff + (topDown ? y : height - 1 - y) * stride;
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      if (bits >= 24) {
        const p = row + x * (bits >> 3);
        out[o] = b[p + 2]; out[o + 1] = b[p + 1]; out[o + 2] = b[p];
      } else {
        const bit = x * bits;
        const i = (b[row + (bit >> 3)] >> (8 - bits - (bit & 7))) & ((1 << bits) - 1);
        const p = palOff + i * 4;
        if (p + 3 > b.length) throw new Error(`BMP palette index ${i} is out of range`);
        out[o] = b[p + 2]; out[o + 1] = b[p + 1]; out[o + 2] = b[p];
      }
    }
  }
  return { width, height, channels: 3, data: out };
}

// ---------------------------------------------------------------------------------------------------------------
// PNM: P1..P6

function decodePnm(b: Uint8Array): Image {
  const kind = b[1] - 48;
  let pos = 2;
  const token = (): number => {
    for (;;) {
      while (pos < b.length && /\s/.test(String.fromCharCode(b[pos]))) pos++;
      if (b[pos] !== 35) break; // '#': comment to end of line
      while (pos < b.length && b[pos] !== 10) pos++;
    }
    const s = pos;
    while (pos < b.length && b[pos] >= 48 && b[pos] <= 57) pos++;
    if (s === pos) throw new Error('PNM header is malformed');
    return Number(String.fromCharCode(...b.subarray(s, pos)));
  };
  const width = token(), height = token();
  const bitmap = kind === 1 || kind === 4;
  const maxval = bitmap ? 1 : token();
  checkSize(width, height, 'PNM');
  if (!(maxval > 0 && maxval < 65536)) throw new Error(`PNM maxval ${maxval} is out of range`);
  const channels = kind === 3 || kind === 6 ? 3 : 1;
  const n = width * height * channels;
  const vals = new Uint8Array(n);
  const scale = (v: number) => (bitmap ? (v ? 0 : 255) : maxval === 255 ? v : Math.round((v * 255) / maxval));
  if (kind <= 3) {
    for (let i = 0; i < n; i++) {
      if (kind === 1) {
        while (pos < b.length && b[pos] !== 48 && b[pos] !== 49) pos++;
        vals[i] = scale(b[pos++] - 48);
      } else vals[i] = scale(token());
    }
  } else {
    pos++; // the single whitespace after the header
    if (kind === 4) {
      const stride = Math.ceil(width / 8);
      if (pos + stride * height > b.length) throw new Error('PBM pixel data is truncated');
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) vals[y * width + x] = scale((b[pos + y * stride + (x >> 3)] >> (7 - (x & 7))) & 1);
    } else {
      const wide = maxval > 255;
      if (pos + n * (wide ? 2 : 1) > b.length) throw new Error('PNM pixel data is truncated');
      for (let i = 0; i < n; i++) vals[i] = scale(wide ? (b[pos + 2 * i] << 8) | b[pos + 2 * i + 1] : b[pos + i]);
    }
  }
  return { width, height, channels, data: vals };
}

// ---------------------------------------------------------------------------------------------------------------

function decodeImage(b: Uint8Array): Image {
  if (PNG_SIG.every((v, i) => b[i] === v)) return decodePng(b);
  if (b[0] === 0x42 && b[1] === 0x4d) return decodeBmp(b);
  if (b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x36) return decodePnm(b);
  const fmt = b[0] === 0xff && b[1] === 0xd8 ? 'JPEG' : b[4] === 0x6a && b[5] === 0x50 ? 'JPEG 2000'
    : (b[0] === 0x49 && b[1] === 0x49) || (b[0] === 0x4d && b[1] === 0x4d) ? 'TIFF'
      : String.fromCharCode(...b.subarray(8, 12)) === 'WEBP' ? 'WebP' : 'unknown';
  throw new Error(`cannot decode ${fmt} images (Kiln's ImageDecoder supports PNG, BMP and PNM)`);
}

export const ImageDecoder = defineOp({
  name: 'ImageDecoder', versions: [20], attrs: { pixel_format: attr.string('RGB') }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Decode an encoded image (PNG, BMP, PNM) into [H, W, C] uint8',
  infer: (ctx) => [{ kind: 'tensor', dtype: 'uint8', shape: [undefined, undefined, ctx.attrs.pixel_format === 'Grayscale' ? 1 : 3] }],
  run: (ctx) => {
    const t = ctx.tensor(0);
    if (t.dtype !== 'uint8' || t.rank !== 1) throw new Error(`encoded_stream must be a 1-D uint8 tensor, found ${t.dtype}[${t.dims}]`);
    const fmt = ctx.attrs.pixel_format;
    if (fmt !== 'RGB' && fmt !== 'BGR' && fmt !== 'Grayscale') throw new Error(`unsupported pixel_format '${fmt}' (expected RGB, BGR or Grayscale)`);
    const img = decodeImage(t.data as Uint8Array);
    const px = img.width * img.height;
    const outC = fmt === 'Grayscale' ? 1 : 3;
    const out = new Uint8Array(px * outC);
    for (let i = 0; i < px; i++) {
      const [r, g, b] = img.channels === 1 ? [img.data[i], img.data[i], img.data[i]] : [img.data[i * 3], img.data[i * 3 + 1], img.data[i * 3 + 2]];
      if (fmt === 'RGB') out.set([r, g, b], i * 3);
      else if (fmt === 'BGR') out.set([b, g, r], i * 3);
      else out[i] = img.channels === 1 ? r : (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; // ITU-R 601 luma
    }
    return [new TensorData('uint8', [img.height, img.width, outC], out)];
  },
});
