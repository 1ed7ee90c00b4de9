// Tokenizers from Hugging Face tokenizer.json, our own implementation of the parts decoder LLMs use: BPE models
// (byte-level as GPT-2, or SentencePiece-style with byte fallback as Llama), added/special tokens, normalizers,
// pre-tokenizers, the TemplateProcessing post-processor and the decoder chain.
import fs from 'node:fs';
import path from 'node:path';
import { ModelError } from '../ir/errors.js';

type Json = Record<string, unknown>;
interface AddedToken { id: number; content: string; special: boolean }

/** GPT-2's byte <-> printable-unicode table: bytes that are printable map to themselves, the rest to 256+. */
function byteTables(): { enc: string[]; dec: Map<string, number> } {
  const enc = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    enc[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return { enc, dec: new Map(enc.map((c, b) => [c, b])) };
}
const BYTES = byteTables();
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const utf8 = new TextEncoder();
const lossy = new TextDecoder('utf-8', { fatal: false });
const strict = new TextDecoder('utf-8', { fatal: true });

type Normalizer = (s: string) => string;
type PreTokenizer = (pieces: string[]) => string[];
type Decoder = (tokens: string[]) => string[];

export interface EncodeOptions {
  /** Apply the post-processor (e.g. prepend BOS); default true. */
  addSpecialTokens?: boolean;
}
export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export class Tokenizer {
  private readonly vocab: Map<string, number>;
  private readonly idToToken: string[] = [];
  private readonly ranks = new Map<string, number>();
  private readonly added: AddedToken[];
  private readonly addedById = new Map<number, AddedToken>();
  private readonly splitter?: RegExp;
  private readonly cache = new Map<string, number[]>();
  private readonly normalize: Normalizer;
  private readonly preTokenize: PreTokenizer;
  private readonly decoder: Decoder;
  private readonly template: (string | number)[];
  private readonly byteFallback: boolean;
  private readonly unkId?: number;
  private readonly fuseUnk: boolean;
  /** Token ids that end generation (from tokenizer_config.json's eos_token), merged with the model config's by the engine. */
  readonly eosTokenId?: number;
  readonly bosTokenId?: number;

  constructor(json: Json, readonly config: Json = {}, readonly source = 'tokenizer.json') {
    const model = (json.model ?? {}) as Json;
    if (model.type !== 'BPE') throw new ModelError(`${source}: tokenizer model '${String(model.type)}' is not supported (supported: BPE).`);
    this.vocab = new Map(Object.entries(model.vocab as Record<string, number>));
    for (const [t, id] of this.vocab) this.idToToken[id] = t;
    ((model.merges ?? []) as (string | [string, string])[]).forEach((m, i) => {
      const [a, b] = typeof m === 'string' ? splitMerge(m) : m;
      this.ranks.set(`${a} ${b}`, i);
    });
    this.byteFallback = model.byte_fallback === true;
    this.fuseUnk = model.fuse_unk === true;
    this.unkId = typeof model.unk_token === 'string' ? this.vocab.get(model.unk_token) : undefined;
    this.added = ((json.added_tokens ?? []) as Json[]).map((t) => ({ id: t.id as number, content: t.content as string, special: t.special === true }));
    for (const t of this.added) {
      this.addedById.set(t.id, t);
      this.idToToken[t.id] = t.content;
    }
    if (this.added.length) {
      const alts = [...this.added].sort((a, b) => b.content.length - a.content.length).map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
      this.splitter = new RegExp(`(${alts.join('|')})`, 'u');
    }
    this.normalize = normalizerOf(json.normalizer as Json | null, source);
    this.preTokenize = preTokenizerOf(json.pre_tokenizer as Json | null, source);
    this.decoder = decoderOf(json.decoder as Json | null, source);
    this.template = templateOf(json.post_processor as Json | null, source);
    const tokenId = (k: string) => {
      const v = config[k];
      const s = typeof v === 'string' ? v : typeof (v as Json | undefined)?.content === 'string' ? ((v as Json).content as string) : undefined;
      return s === undefined ? undefined : this.tokenToId(s);
    };
    this.eosTokenId = tokenId('eos_token');
    this.bosTokenId = tokenId('bos_token');
  }

  /** tokenizer.json (+ tokenizer_config.json when present) from a model folder. */
  static fromDir(dir: string): Tokenizer {
    const file = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(file)) throw new ModelError(`${dir}: no tokenizer.json.`, { hint: 'Save the tokenizer with a "fast" Hugging Face tokenizer (tokenizer.save_pretrained).' });
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const cfg = fs.existsSync(cfgFile) ? (JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Json) : {};
    return new Tokenizer(JSON.parse(fs.readFileSync(file, 'utf8')) as Json, cfg, file);
  }

  get vocabSize(): number {
    return this.idToToken.length;
  }

  tokenToId(token: string): number | undefined {
    return this.added.find((t) => t.content === token)?.id ?? this.vocab.get(token);
  }

  idToString(id: number): string | undefined {
    return this.idToToken[id];
  }

  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    const parts = this.splitter ? text.split(this.splitter) : [text];
    parts.forEach((part, i) => {
      if (!part) return;
      // split() with a capture group puts the added tokens at odd positions
      if (i % 2 === 1) {
        ids.push(this.added.find((t) => t.content === part)!.id);
        return;
      }
      for (const piece of this.preTokenize([this.normalize(part)])) ids.push(...this.bpe(piece));
    });
    if (opts.addSpecialTokens === false) return ids;
    return this.template.flatMap((x) => (x === 'A' ? ids : [x as number]));
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (const id of ids) {
      if (opts.skipSpecialTokens && this.isSpecial(id)) continue;
      const t = this.idToToken[id];
      if (t !== undefined) tokens.push(t);
    }
    return this.decoder(tokens).join('');
  }

  private bpe(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    let syms = [...word];
    while (syms.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = this.ranks.get(`${syms[i]} ${syms[i + 1]}`);
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      syms = [...syms.slice(0, best), syms[best] + syms[best + 1], ...syms.slice(best + 2)];
    }
    const ids: number[] = [];
    let lastUnk = false;
    for (const s of syms) {
      const id = this.vocab.get(s);
      if (id !== undefined) {
        ids.push(id);
        lastUnk = false;
      } else if (this.byteFallback && [...utf8.encode(s)].every((b) => this.vocab.has(byteToken(b)))) {
        for (const b of utf8.encode(s)) ids.push(this.vocab.get(byteToken(b))!);
        lastUnk = false;
      } else if (this.unkId !== undefined) {
        if (!(this.fuseUnk && lastUnk)) ids.push(this.unkId);
        lastUnk = true;
      } else {
        throw new ModelError(`${this.source}: cannot tokenize '${s}': not in the vocabulary and the model has no unk_token or byte fallback.`);
      }
    }
    if (this.cache.size < 100_000) this.cache.set(word, ids);
    return ids;
  }
}

const byteToken = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;

function splitMerge(m: string): [string, string] {
  const i = m.indexOf(' ', 1);
  return [m.slice(0, i), m.slice(i + 1)];
}

function pattern(p: unknown, source: string): RegExp {
  const pat = p as Json;
  if (typeof pat?.String === 'string') return new RegExp(pat.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
  if (typeof pat?.Regex === 'string') {
    try {
      return new RegExp(pat.Regex, 'gu');
    } catch (e) {
      throw new ModelError(`${source}: the regex ${JSON.stringify(pat.Regex)} is not supported by JavaScript's RegExp.`, { cause: e });
    }
  }
  throw new ModelError(`${source}: unsupported pattern ${JSON.stringify(p)}.`);
}

function normalizerOf(n: Json | null, source: string): Normalizer {
  if (!n) return (s) => s;
  switch (n.type) {
    case 'Sequence': {
      const fs = (n.normalizers as Json[]).map((x) => normalizerOf(x, source));
      return (s) => fs.reduce((acc, f) => f(acc), s);
    }
    case 'Prepend': return (s) => (s ? (n.prepend as string) + s : s);
    case 'Replace': {
      const re = pattern(n.pattern, source);
      return (s) => s.replace(re, () => n.content as string);
    }
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': return (s) => s.normalize(n.type as string);
    default: throw new ModelError(`${source}: normalizer '${String(n.type)}' is not supported (supported: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD).`);
  }
}

function preTokenizerOf(p: Json | null, source: string): PreTokenizer {
  if (!p) return (pieces) => pieces;
  switch (p.type) {
    case 'Sequence': {
      const fs = (p.pretokenizers as Json[]).map((x) => preTokenizerOf(x, source));
      return (pieces) => fs.reduce((acc, f) => f(acc), pieces);
    }
    case 'ByteLevel': {
      const split = p.use_regex !== false;
      return (pieces) => pieces.flatMap((s) => {
        const t = p.add_prefix_space === true && !s.startsWith(' ') ? ` ${s}` : s;
        const words = split ? (t.match(GPT2_SPLIT) ?? []) : [t];
        return words.map((w) => Array.from(utf8.encode(w), (b) => BYTES.enc[b]).join(''));
      });
    }
    case 'Split': {
      const re = pattern(p.pattern, source);
      const behavior = p.behavior as string;
      if (p.invert === true || (behavior !== 'Isolated' && behavior !== 'Removed')) {
        throw new ModelError(`${source}: Split pre-tokenizer with behavior '${behavior}'${p.invert ? ' and invert' : ''} is not supported (supported: Isolated, Removed).`);
      }
      return (pieces) => pieces.flatMap((s) => splitIsolated(s, re, behavior === 'Removed'));
    }
    case 'Metaspace': {
      const rep = (p.replacement as string) ?? '▁';
      const prepend = (p.prepend_scheme as string) ?? (p.add_prefix_space === false ? 'never' : 'always');
      return (pieces) => pieces.flatMap((s, i) => {
        let t = s.replaceAll(' ', rep);
        if ((prepend === 'always' || (prepend === 'first' && i === 0)) && !t.startsWith(rep)) t = rep + t;
        if (p.split === false) return [t];
        return t.split(new RegExp(`(?=${rep})`, 'u')).filter(Boolean);
      });
    }
    default: throw new ModelError(`${source}: pre-tokenizer '${String(p.type)}' is not supported (supported: ByteLevel, Split, Metaspace, Sequence).`);
  }
}

function splitIsolated(s: string, re: RegExp, remove: boolean): string[] {
  const out: string[] = [];
  let last = 0;
  for (const m of s.matchAll(re)) {
    if (m.index > last) out.push(s.slice(last, m.index));
    if (!remove && m[0]) out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < s.length) out.push(s.slice(last));
  return out;
}

function decoderOf(d: Json | null, source: string): Decoder {
  if (!d) return (tokens) => tokens;
  switch (d.type) {
    case 'Sequence': {
      const fs = (d.decoders as Json[]).map((x) => decoderOf(x, source));
      return (tokens) => fs.reduce((acc, f) => f(acc), tokens);
    }
    case 'ByteLevel':
      return (tokens) => {
        const bytes: number[] = [];
        for (const t of tokens) for (const c of t) {
          const b = BYTES.dec.get(c);
          if (b !== undefined) bytes.push(b);
          else bytes.push(...utf8.encode(c));
        }
        return [lossy.decode(new Uint8Array(bytes))];
      };
    case 'Replace': {
      const re = pattern(d.pattern, source);
      return (tokens) => tokens.map((t) => t.replace(re, () => d.content as string));
    }
    case 'ByteFallback': return byteFallback;
    case 'Fuse': return (tokens) => [tokens.join('')];
    case 'Strip': {
      const c = d.content as string, start = (d.start as number) ?? 0, stop = (d.stop as number) ?? 0;
      return (tokens) => tokens.map((t) => {
        let a = 0, b = t.length;
        for (let k = 0; k < start && t.startsWith(c, a); k++) a += c.length;
        for (let k = 0; k < stop && b - c.length >= a && t.endsWith(c, b); k++) b -= c.length;
        return t.slice(a, b);
      });
    }
    case 'Metaspace': {
      const rep = (d.replacement as string) ?? '▁';
      const prepend = (d.prepend_scheme as string) ?? (d.add_prefix_space === false ? 'never' : 'always');
      return (tokens) => tokens.map((t, i) => {
        const s = t.replaceAll(rep, ' ');
        return i === 0 && prepend !== 'never' && s.startsWith(' ') ? s.slice(1) : s;
      });
    }
    default: throw new ModelError(`${source}: decoder '${String(d.type)}' is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence).`);
  }
}

/** <0xNN> tokens -> the UTF-8 text of each run of them; a run that is not valid UTF-8 becomes one U+FFFD per byte. */
function byteFallback(tokens: string[]): string[] {
  const out: string[] = [];
  let run: number[] = [];
  const flush = () => {
    if (!run.length) return;
    try {
      out.push(strict.decode(new Uint8Array(run)));
    } catch {
      out.push('\uFFFD'.repeat(run.length));
    }
    run = [];
  };
  for (const t of tokens) {
    const m = BYTE_TOKEN.exec(t);
    if (m) run.push(parseInt(m[1], 16));
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
}

/** The single-sequence template as a list of 'A' (the text) and special token ids. */
function templateOf(p: Json | null, source: string): (string | number)[] {
  if (!p || p.type === 'ByteLevel') return ['A'];
  if (p.type === 'Sequence') {
    const t = ((p.processors ?? []) as Json[]).find((x) => x.type === 'TemplateProcessing');
    return t ? templateOf(t, source) : ['A'];
  }
  if (p.type !== 'TemplateProcessing') throw new ModelError(`${source}: post-processor '${String(p.type)}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence).`);
  const specials = (p.special_tokens ?? {}) as Record<string, { ids: number[] }>;
  return (p.single as Json[]).flatMap((x): (string | number)[] => {
    if (x.Sequence) return ['A'];
    const id = (x.SpecialToken as Json).id as string;
    const s = specials[id];
    if (!s) throw new ModelError(`${source}: TemplateProcessing names special token '${id}' but does not define its ids.`);
    return s.ids;
  });
}
