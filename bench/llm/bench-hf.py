# The LLM speed comparison's Python side, run on the GPU machine (torch + transformers there):
#   python3 bench/llm/bench-hf.py make OUTDIR          random-weight GPT-2-medium-size and ~1B Llama-architecture
#                                                      models (fp16 safetensors) + the fixtures' tokenizers
#   python3 bench/llm/bench-hf.py time DIR [--compile]  transformers generate() throughput and TTFT at concurrency 1
#                                                      and 32, eager (or static cache + torch.compile); one JSON line
# Prompts are random token ids of a fixed length (the fixture tokenizers' vocabularies are smaller than the models',
# so ids are all that matter); end-of-sequence is suppressed so every request generates exactly OUTPUT tokens.
import json, os, shutil, sys, time
import torch

PROMPT, OUTPUT = 128, 128
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'test', 'fixtures', 'llm')


def make(out):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    specs = {
        'gpt2-medium-random': (GPT2LMHeadModel, GPT2Config(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024,
                                                           bos_token_id=0, eos_token_id=0), 'gpt2-tiny'),
        'llama-1b-random': (LlamaForCausalLM, LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                                          intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048,
                                                          bos_token_id=1, eos_token_id=2, tie_word_embeddings=False), 'llama-tiny'),
    }
    only = os.environ.get('LLM_MODELS', '').split()
    for name, (cls, cfg, tok) in specs.items():
        if only and name not in only:
            continue
        d = os.path.join(out, name)
        torch.manual_seed(0)
        with torch.device('cuda'):
            model = cls(cfg).to(torch.float16)
        model.save_pretrained(d, safe_serialization=True, max_shard_size='1GB')
        for f in ('tokenizer.json', 'tokenizer_config.json'):
            shutil.copy(os.path.join(FIX, tok, f), d)
        n = sum(p.numel() for p in model.parameters())
        print(f'{name}: {n / 1e6:.0f}M parameters -> {d}', flush=True)


def time_hf(d, compiled):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float16).cuda().eval()
    vocab = model.config.vocab_size
    gen = dict(do_sample=False, min_new_tokens=OUTPUT, max_new_tokens=OUTPUT, pad_token_id=0)
    if compiled:
        gen['cache_implementation'] = 'static'
        # mode 'reduce-overhead' (CUDA graphs) fails inside transformers 5's generate() with a static cache ("accessing
        # tensor output of CUDAGraphs that has been overwritten"), so the compiled peer runs Inductor without graphs
        model.forward = torch.compile(model.forward, fullgraph=True)
    res = {'model': os.path.basename(d), 'mode': 'static cache + torch.compile (default mode)' if compiled else 'eager', 'levels': []}
    g = torch.Generator().manual_seed(0)
    for batch in (1, 32):
        ids = torch.randint(0, vocab, (batch, PROMPT), generator=g).cuda()
        mask = torch.ones_like(ids)

        def run(n):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, **{**gen, 'min_new_tokens': n, 'max_new_tokens': n})
            torch.cuda.synchronize()
            assert out.shape[1] == PROMPT + n
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        run(OUTPUT)  # warm-up (and compilation)
        run(1)
        warm = time.perf_counter() - t0
        full = min(run(OUTPUT) for _ in range(2))
        ttft = sorted(run(1) for _ in range(5))[2]
        res['levels'].append({'concurrency': batch, 'tokensPerS': batch * OUTPUT / full, 'ttftMs': ttft * 1000, 'e2eMs': full * 1000, 'warmupS': warm})
        print(json.dumps(res['levels'][-1]), file=sys.stderr, flush=True)
    return res


if __name__ == '__main__':
    if sys.argv[1] == 'make':
        make(sys.argv[2])
    else:
        print(json.dumps(time_hf(sys.argv[2], '--compile' in sys.argv)), flush=True)
