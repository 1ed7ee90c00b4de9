# Creates the tiny LLM test fixtures (test/fixtures/llm/<name>/): a GPT-2 and a Llama-architecture model with random
# weights from a config, tokenizers trained here with Hugging Face `tokenizers` (byte-level BPE for GPT-2,
# SentencePiece-style BPE with byte fallback for Llama), and expected.json with reference token ids, first-step logits
# and greedy continuations computed by Hugging Face transformers in fp32 on the CPU. Run on the GPU machine (it has
# torch/transformers/tokenizers): python3 bench/llm/make-fixtures.py OUTDIR
import json, os, sys
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, normalizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1]
TEXT = [
    "The quick brown fox jumps over the lazy dog.", "Kiln compiles ONNX models into fast engines for Node.js.",
    "Large language models generate one token at a time, reusing the keys and values of earlier tokens.",
    "A paged cache stores those keys and values in fixed-size blocks, like pages of virtual memory.",
    "def add(a, b):\n    return a + b\n", "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 1000 3.14159", "Hello, world! How are you today?",
    "In-flight batching lets requests join and leave the batch at every step of decoding.",
] * 20
ENCODE = ["Hello, world!", "The quick brown fox", "  leading spaces and\ttabs\nnewlines", "héllo wörld – naïve café",
          "emoji 🙂 and 世界", "def add(a, b):\n    return a + b", "", "a", "1234567890", "<|endoftext|> special"]
PROMPTS = ["The quick brown fox", "Kiln compiles", "Hello, world! How", "def add(a, b):"]


def gpt2_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(TEXT, tr)
    return tok


def llama_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tr = trainers.BpeTrainer(vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60)
    tok.train_from_iterator(TEXT, tr)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    rest = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in ("<unk>", "<s>", "</s>")]
    order = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + [t for t in rest if not (t.startswith("<0x") and len(t) == 6)]
    j["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for a in j["added_tokens"]:
        a["id"] = j["model"]["vocab"][a["content"]]
    tok = Tokenizer.from_str(json.dumps(j))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def greedy(model, ids, n):
    past, cur, out, margins = None, torch.tensor([ids]), [], []
    with torch.no_grad():
        for _ in range(n):
            r = model(input_ids=cur, past_key_values=past, use_cache=True)
            past, logits = r.past_key_values, r.logits[0, -1]
            top = torch.topk(logits, 2)
            margins.append(float(top.values[0] - top.values[1]))
            nxt = int(top.indices[0])
            out.append(nxt)
            cur = torch.tensor([[nxt]])
    return out, margins


def make(name, tok, model, fast_kwargs, chat_template=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **fast_kwargs)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(d)
    model.save_pretrained(d, safe_serialization=True)
    model.eval()
    exp = {"encode": [{"text": t, "ids": fast(t)["input_ids"]} for t in ENCODE], "greedy": []}
    exp["decode"] = [{"ids": e["ids"], "text": fast.decode(e["ids"], skip_special_tokens=False)} for e in exp["encode"]]
    for i, p in enumerate(PROMPTS):
        ids = fast(p)["input_ids"]
        toks, margins = greedy(model, ids, 24)
        item = {"prompt": p, "prompt_ids": ids, "output_ids": toks, "top2_margins": margins, "text": fast.decode(toks)}
        if i == 0:
            with torch.no_grad():
                item["first_logits"] = model(input_ids=torch.tensor([ids])).logits[0, -1].tolist()
        exp["greedy"].append(item)
    if chat_template:
        msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
        exp["chat"] = {"messages": msgs, "text": fast.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)}
    json.dump(exp, open(os.path.join(d, "expected.json"), "w"))
    print(name, "params", sum(p.numel() for p in model.parameters()), "margins min", min(min(g["top2_margins"]) for g in exp["greedy"]))


torch.manual_seed(0)
g = gpt2_tokenizer()
cfg = GPT2Config(vocab_size=g.get_vocab_size(), n_positions=256, n_embd=64, n_layer=2, n_head=4, initializer_range=0.1,
                 bos_token_id=0, eos_token_id=0)
make("gpt2-tiny", g, GPT2LMHeadModel(cfg), {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})

torch.manual_seed(1)
t = llama_tokenizer()
cfg = LlamaConfig(vocab_size=t.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.1, bos_token_id=1, eos_token_id=2)
CHAT = ("{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>\n{% elif m['role'] == 'user' %}"
        "[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}")
make("llama-tiny", t, LlamaForCausalLM(cfg), {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, CHAT)
