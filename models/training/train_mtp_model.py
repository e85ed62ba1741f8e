#!/usr/bin/python3
"""Trains a small DeepSeek-V3-architecture model with its MTP module on the fortunes corpus
(Debian's `fortunes` package), on the CPU, and exports it through `dserve make-model --weights`
(published layout, FP8 128x128 block-scaled projections).

The loss is DeepSeek-V3's: next-token cross-entropy plus mtp_weight times the MTP module's
cross-entropy on the token after next. Routing is balanced without an auxiliary loss: after each
step every e_score_correction_bias moves by bias_rate towards an even load.

The vocabulary is the real 129,280-token one. Tokens that never occur in the training text share
one input embedding and one LM-head row; training then needs only the softmax over the tokens
that occur plus one class for "any of the N others" (logit h.w + ln N), which is exactly the
full softmax with those rows tied, at a fraction of the cost. The export writes every row.

Usage (see models/README.md):
  /usr/bin/python3 models/training/train_mtp_model.py --dserve build/dserve --out DIR [--minutes 35]
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import time


def _choose_openblas_kernels():
    """Debian 12's OpenBLAS 0.3.21 does not know recent Xeons ("Core not found") and falls back
    to kernels that run sgemm at a quarter of the SkylakeX kernels' speed on them (measured on
    our build machine: 19 vs 132-228 GFLOPS). It reads the choice once, when torch loads it."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return
    if all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


_choose_openblas_kernels()
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_torch as dt  # noqa: E402
import safetensors_io  # noqa: E402

BOS, EOS = 0, 1


def model_config(args):
    """config.json of the trained model: tiny-v3's shape (make-model's preset)."""
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": BOS, "eos_token_id": EOS, "ep_size": 1,
        "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": args.hidden,
        "initializer_range": 0.02, "intermediate_size": 2 * args.hidden, "kv_lora_rank": 128,
        "max_position_embeddings": 163840, "model_type": "deepseek_v3",
        "moe_intermediate_size": 128, "moe_layer_freq": 1, "n_group": 4, "n_routed_experts": 16,
        "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 8,
        "num_experts_per_tok": 4, "num_hidden_layers": args.layers, "num_key_value_heads": 8,
        "num_nextn_predict_layers": 1, "q_lora_rank": 128, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16, "rms_norm_eps": 1e-06,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                         "type": "yarn"},
        "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
        "tie_word_embeddings": False, "topk_group": 2, "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16", "transformers_version": "4.46.3", "use_cache": True,
        "v_head_dim": 32, "vocab_size": 129280,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                "quant_method": "fp8", "weight_block_size": [128, 128]},
    }


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_corpus(folder):
    """Every fortune of the package's files (text files with a .dat index beside them)."""
    docs = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if "." in name or not os.path.exists(path + ".dat"):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for doc in f.read().split("\n%\n"):
                doc = doc.strip("\n%")
                if doc.strip():
                    docs.append(doc)
    return docs


def tokenize(dserve, tokenizer_dir, docs):
    text = "".join(json.dumps(d) + "\n" for d in docs)
    r = subprocess.run([dserve, "tokenize", "--model", tokenizer_dir, "--jsonl", "--no-special"],
                       input=text.encode(), capture_output=True, check=True)
    ids = [json.loads(line) for line in r.stdout.decode().splitlines()]
    if len(ids) != len(docs):
        raise RuntimeError(f"tokenize returned {len(ids)} lines for {len(docs)} documents")
    return ids


class Vocab:
    """Compact ids for the tokens that occur at least min_count times in the training text; one
    class for all others."""

    def __init__(self, streams, vocab_size, min_count):
        counts = np.bincount(np.array([t for s in streams for t in s]), minlength=vocab_size)
        used = sorted(set(np.nonzero(counts >= min_count)[0].tolist()) | {BOS, EOS})
        self.used = np.array(used, dtype=np.int64)
        self.full_to_compact = np.full(vocab_size, len(used), dtype=np.int64)
        self.full_to_compact[self.used] = np.arange(len(used))
        self.others = vocab_size - len(used)

    def __len__(self):
        return len(self.used)


def init_params(cfg, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape in dt.tensor_shapes(cfg).items():
        if dt.is_norm(name):
            t = torch.ones(shape)
        elif name.endswith("e_score_correction_bias"):
            t = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g) * 0.02
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                t /= math.sqrt(2 * (cfg.layers + 1))  # residual branches, GPT-2 style
        p[name] = torch.nn.Parameter(t)
    H = cfg.hidden
    p["embed"] = torch.nn.Parameter(torch.randn(len(vocab) + 1, H, generator=g))  # last: others
    p["head"] = torch.nn.Parameter(torch.randn(len(vocab) + 1, H, generator=g) * 0.02)
    return p


def compact_fns(p, vocab):
    ln_others = math.log(vocab.others)

    def embed(ids):
        return p["embed"][ids]

    bias = torch.zeros(len(vocab) + 1)
    bias[-1] = ln_others

    def head(h):
        return torch.addmm(bias, h.reshape(-1, h.shape[-1]), p["head"].t()).view(
            *h.shape[:-1], -1)

    return embed, head


def batches(stream, batch, seq, rng):
    """Random windows of seq + 2 tokens: inputs, next tokens (targets), tokens after next."""
    n = len(stream) - seq - 2
    while True:
        starts = [rng.randrange(n) for _ in range(batch)]
        w = torch.from_numpy(np.stack([stream[s:s + seq + 2] for s in starts]))
        yield w[:, :seq], w[:, 1:seq + 1], w[:, 2:seq + 2]


def losses(cfg, p, vocab, x, y1, y2, loads=None):
    embed, head = compact_fns(p, vocab)
    logits, mtp = dt.forward(cfg, p, embed, head, x, next_tokens=y1, loads=loads)
    V = logits.shape[-1]
    main = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y1.reshape(-1))
    extra = torch.nn.functional.cross_entropy(mtp.reshape(-1, V), y2.reshape(-1))
    return main, extra


def evaluate(cfg, p, vocab, stream, args, seed):
    """Mean main and MTP losses over fixed held-out windows (nats per token, over the compact
    classes; the few held-out tokens outside the training vocabulary count as their shared class)."""
    rng = random.Random(seed)
    gen = batches(stream, args.batch, args.seq, rng)
    with torch.no_grad():
        m = [losses(cfg, p, vocab, *next(gen)) for _ in range(args.eval_batches)]
    return sum(a.item() for a, _ in m) / len(m), sum(b.item() for _, b in m) / len(m)


def export(cfg_json, cfg, p, vocab, args):
    """F32 safetensors with the full vocabulary, then `dserve make-model --weights`."""
    tensors = {name: t.detach().numpy().astype(np.float32)
               for name, t in p.items() if name not in ("embed", "head")}
    emb, head = p["embed"].detach().numpy(), p["head"].detach().numpy()
    full_emb = np.repeat(emb[-1:], cfg.vocab, axis=0)
    full_emb[vocab.used] = emb[:-1]
    full_head = np.repeat(head[-1:], cfg.vocab, axis=0)
    full_head[vocab.used] = head[:-1]
    tensors["model.embed_tokens.weight"] = full_emb
    tensors["lm_head.weight"] = full_head
    os.makedirs(args.work, exist_ok=True)
    f32 = os.path.join(args.work, "trained-f32.safetensors")
    cfg_path = os.path.join(args.work, "config.json")
    safetensors_io.write_f32(f32, tensors)
    with open(cfg_path, "w") as f:
        json.dump(cfg_json, f, indent=2)
    cmd = [args.dserve, "make-model", "--config", cfg_path, "--weights", f32, "--out", args.out]
    if args.tokenizer_dir:
        cmd += ["--tokenizer-dir", args.tokenizer_dir]
    subprocess.run(cmd, check=True)


def check_export(cfg, args, prompts):
    """dserve's logits (and MTP logits) on the exported checkpoint against this file's forward
    pass in float64 over the weights read back from the checkpoint (FP8 decoded and scaled)."""
    w = {k: torch.from_numpy(v) for k, v in safetensors_io.read_checkpoint(args.out).items()}
    m = f"model.layers.{cfg.layers}."

    def embed(ids):
        return w["model.embed_tokens.weight"][ids]

    def head(h):
        return h @ w["lm_head.weight"].t()

    for name in ("embed_tokens.weight", "shared_head.head.weight"):
        main = "model.embed_tokens.weight" if name.startswith("embed") else "lm_head.weight"
        if not torch.equal(w[m + name], w[main]):
            raise RuntimeError(f"{m}{name} is not a copy of {main}")
    worst = 0.0
    for k, ids in enumerate(prompts):
        tokens = torch.tensor([ids])
        _, ref_mtp = dt.forward(cfg, w, embed, head, tokens[:, :-1], next_tokens=tokens[:, 1:])
        ref = dt.forward(cfg, w, embed, head, tokens)[0][0]
        out = os.path.join(args.work, f"check{k}.npy")
        out_mtp = os.path.join(args.work, f"check{k}_mtp.npy")
        subprocess.run([args.dserve, "logits", "--model", args.out, "--threads", "2",
                        "--tokens", ",".join(map(str, ids)), "--out", out, "--mtp-out", out_mtp],
                       check=True, capture_output=True)
        for name, got, want in (("logits", np.load(out), ref.numpy()),
                                ("MTP logits", np.load(out_mtp), ref_mtp[0].numpy())):
            err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
            agree = (got.argmax(-1) == want.argmax(-1)).mean()
            log(f"check prompt {k}: {name} max |dserve - float64| / max |float64| = {err:.2e}, "
                f"argmax agreement {agree:.3f}")
            worst = max(worst, err)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dserve", required=True, help="the dserve binary (tokenize, make-model)")
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--work", help="scratch folder (default: OUT.work)")
    ap.add_argument("--tokenizer-dir", default="", help="DeepSeek-V3 tokenizer files "
                    "(default: make-model's, i.e. what scripts/setup.sh fetched)")
    ap.add_argument("--corpus", default="/usr/share/games/fortunes")
    ap.add_argument("--minutes", type=float, default=35.0, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=1000000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--mtp-weight", type=float, default=0.3, help="DeepSeek-V3's lambda")
    ap.add_argument("--bias-rate", type=float, default=1e-3, help="routing bias update speed")
    ap.add_argument("--min-count", type=int, default=2, help="tokens seen fewer times in "
                    "the training text share the one row of the unseen ones")
    ap.add_argument("--heldout", type=float, default=0.05, help="share of fortunes held out")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the export check")
    args = ap.parse_args()
    args.work = args.work or args.out.rstrip("/") + ".work"
    tokenizer_dir = args.tokenizer_dir or os.path.join(
        os.environ.get("DSERVE_CACHE_DIR", os.path.expanduser("~/.cache/dserve")),
        "tokenizers", "deepseek-v3")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)

    docs = read_corpus(args.corpus)
    if not docs:
        sys.exit(f"no fortunes under {args.corpus}: install Debian's `fortunes` package")
    random.Random(args.seed).shuffle(docs)
    n_held = max(2, int(len(docs) * args.heldout))
    held_docs, train_docs = docs[:n_held], docs[n_held:]
    log(f"corpus: {len(docs)} fortunes ({len(train_docs)} train, {len(held_docs)} held out)")
    train_ids = tokenize(args.dserve, tokenizer_dir, train_docs)
    held_ids = tokenize(args.dserve, tokenizer_dir, held_docs)
    cfg_json = model_config(args)
    cfg = dt.Config(cfg_json)
    vocab = Vocab(train_ids, cfg.vocab, args.min_count)
    to_stream = lambda ids: vocab.full_to_compact[np.array(  # noqa: E731
        [t for d in ids for t in [BOS] + d + [EOS]], dtype=np.int64)]
    train, held = to_stream(train_ids), to_stream(held_ids)
    log(f"tokens: {len(train)} train, {len(held)} held out; {len(vocab)} distinct training "
        f"tokens of {cfg.vocab} ({vocab.others} share one row)")
    # Held-out prompts for dserve bench --prompts-file: each held-out fortune's first line.
    with open(os.path.join(args.work, "heldout_prompts.jsonl"), "w") as f:
        for d in held_docs:
            f.write(json.dumps(d.split("\n")[0]) + "\n")

    p = init_params(cfg, vocab, args.seed)
    decay = [t for n, t in p.items() if t.dim() >= 2 and n != "embed"]
    no_decay = [t for n, t in p.items() if not (t.dim() >= 2 and n != "embed")
                and not n.endswith("e_score_correction_bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = batches(train, args.batch, args.seq, random.Random(args.seed + 1))
    budget = args.minutes * 60
    start = time.time()
    log_path = os.path.join(args.out.rstrip("/") + ".training_log.tsv")
    with open(log_path, "w") as f:
        f.write("step\tminutes\ttokens\ttrain_main\ttrain_mtp\theldout_main\theldout_mtp\n")
    step, tokens, ema = 0, 0, None
    warmup = 50
    while step < args.max_steps:
        frac = (time.time() - start) / budget
        if frac >= 1:
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y1, y2 = next(gen)
        loads = {}
        main_loss, mtp_loss = losses(cfg, p, vocab, x, y1, y2, loads)
        loss = main_loss + args.mtp_weight * mtp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        with torch.no_grad():  # auxiliary-loss-free balancing (DeepSeek-V3, section 2.1.2)
            for layer, load in loads.items():
                load = torch.tensor(load, dtype=torch.float32)
                bias = p[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"]
                bias += args.bias_rate * torch.sign(load.mean() - load)
        step += 1
        tokens += x.numel()
        cur = (main_loss.item(), mtp_loss.item())
        ema = cur if ema is None else tuple(0.95 * e + 0.05 * c for e, c in zip(ema, cur))
        if step % args.eval_every == 0 or step == 1:
            hm, hx = evaluate(cfg, p, vocab, held, args, args.seed + 2)
            minutes = (time.time() - start) / 60
            log(f"step {step} ({minutes:.1f} min, {tokens} tokens, lr {lr:.2e}): train main "
                f"{ema[0]:.3f} mtp {ema[1]:.3f}; held-out main {hm:.3f} mtp {hx:.3f}")
            with open(log_path, "a") as f:
                f.write(f"{step}\t{minutes:.2f}\t{tokens}\t{ema[0]:.4f}\t{ema[1]:.4f}\t{hm:.4f}"
                        f"\t{hx:.4f}\n")
    hm, hx = evaluate(cfg, p, vocab, held, args, args.seed + 2)
    minutes = (time.time() - start) / 60
    log(f"done: {step} steps, {tokens} tokens in {minutes:.1f} min; held-out main {hm:.3f} "
        f"mtp {hx:.3f} nats/token")
    with open(log_path, "a") as f:
        f.write(f"{step}\t{minutes:.2f}\t{tokens}\t{ema[0]:.4f}\t{ema[1]:.4f}\t{hm:.4f}\t{hx:.4f}\n")
    export(cfg_json, cfg, p, vocab, args)
    log(f"exported to {args.out} (training log: {log_path})")
    if not args.no_check:
        prompts = [[BOS] + d[:24] for d in held_ids[:2]]
        worst = check_export(cfg, args, prompts)
        if not worst < 1e-4:
            sys.exit(f"dserve's logits differ from the float64 forward pass by {worst:.2e}")


if __name__ == "__main__":
    main()
