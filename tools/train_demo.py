#!/usr/bin/env python3
"""Train the blipq demo model: a tiny `transformers` BlipForConditionalGeneration, from random init, on
the synthetic scenes of tools/make_scenes.py, saved to models/demo/ in Hugging Face layout.

What it does:

1. Reads the training scenes (``<cache>/train/captions.json`` + PNGs; run tools/make_scenes.py first)
   and builds a WordPiece vocabulary from their words: ``[PAD]=0 [UNK] [CLS] [SEP] [MASK]``, the
   scene words, single letters/digits (and ``##`` letters) as fallback pieces, then ``[DEC]`` (BLIP's
   bos) as an added special token. A ``BertTokenizerFast`` over it goes into a ``BlipProcessor``
   together with a ``BlipImageProcessor`` at ``--image-size``.
2. Builds a ``BlipConfig`` with small dims, all multiples of 32 (so blipq's INT8 quantizer, which packs
   every Linear with in % 32 == 0 and the word embedding into Q8_0 blocks, covers nearly all of the
   weights), ``text_config.encoder_hidden_size == vision_config.hidden_size``, and
   ``bos/sep/pad_token_id`` taken from the tokenizer.
3. Trains it the way BLIP trains its captioner: the processor tokenizes the caption to
   ``[CLS] words [SEP] [PAD]...``, the first token is replaced by bos (``[DEC]``),
   ``labels = input_ids`` with pads set to -100, and the loss is the model's own: logits shifted by one,
   cross-entropy with label smoothing ``text_config.label_smoothing`` (0.1, as in BLIP's med.py; the
   transformers default config has 0.0). By default (``--canon-prob 1.0``) the model trains on each
   scene's canonical caption only; the 4 rephrasings serve as extra references for the metric.
   ``--canon-prob p < 1`` mixes them in (canonical with probability p, else a random rephrasing):
   that works too but learns slower, which the ~20 min CPU budget cannot afford (measured on this
   config, 2500 steps: greedy == canonical on 18% of validation scenes with p = 0.5, 34% with p = 1).
   The vision position embedding starts as a 2-D sin/cos pattern (``--pos-init-scale``), so the
   encoder knows where patches are from the first step.
4. Saves ``model.safetensors`` (tied LM head not duplicated), ``config.json``,
   ``generation_config.json`` (greedy, max_length), the processor files, then captions
   data/demo-eval greedily and writes ``training_report.json`` (scores, seed, steps, time, dims, size).

Sizing: 64x64 images with 8x8 patches (64 tokens) keep the F32-only patch conv (3*8*8*64 weights)
small; the text decoder (128 wide) holds most weights and costs little per token. On the shared
2-core machine one torch thread is several times faster per step than two, hence ``--threads 1``.

Images are resized once with PIL bicubic to the model size (exactly what BlipImageProcessor does, and
checked against it) and cached as uint8 next to the PNGs, so steps only normalize.

Usage::

    python3 tools/make_scenes.py          # once: scenes to /work/cache/scenes, eval set to data/demo-eval
    python3 tools/train_demo.py           # reproduces models/demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BOS = "[DEC]"


# ---------------------------------------------------------------------------------------------------
# Tokenizer / processor
# ---------------------------------------------------------------------------------------------------


def build_vocab(captions: list[str]) -> list[str]:
    """Specials, then scene words by frequency, punctuation, then single-character fallback pieces."""
    counts: dict[str, int] = {}
    for c in captions:
        for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", c.lower()):
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    punct = list(".,:;!?'\"-()")
    vocab = list(SPECIALS)
    for t in words + punct + chars + ["##" + ch for ch in chars]:
        if t not in vocab:
            vocab.append(t)
    return vocab


def build_processor(vocab: list[str], image_size: int, max_len: int):
    from transformers import BertTokenizerFast, BlipImageProcessor, BlipProcessor

    tok = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(vocab)},
        do_lower_case=True,
        model_max_length=max_len,
    )
    tok.add_special_tokens({"bos_token": BOS})
    ip = BlipImageProcessor(
        size={"height": image_size, "width": image_size},
        do_resize=True,
        resample=3,  # PIL.Image.BICUBIC
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )
    return BlipProcessor(image_processor=ip, tokenizer=tok)


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


def build_config(args, tok):
    from transformers import BlipConfig

    for name, v in [("vision-dim", args.vision_dim), ("vision-mlp", args.vision_mlp), ("text-dim", args.text_dim),
                    ("text-mlp", args.text_mlp)]:
        assert v % 32 == 0, f"--{name} must be a multiple of 32 (INT8 blocks)"
    assert args.image_size % args.patch_size == 0

    def tower(dim, mlp, layers, **extra) -> dict:
        """What the text and vision configs share: width, MLP, depth, heads of --head-dim, GELU."""
        return dict(hidden_size=dim, intermediate_size=mlp, projection_dim=dim, num_hidden_layers=layers,
                    num_attention_heads=dim // args.head_dim, hidden_act="gelu", **extra)

    text = tower(
        args.text_dim, args.text_mlp, args.text_layers,
        vocab_size=len(tok),
        encoder_hidden_size=args.vision_dim,
        max_position_embeddings=args.max_positions,
        bos_token_id=tok.convert_tokens_to_ids(BOS),
        sep_token_id=tok.sep_token_id,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
        label_smoothing=args.label_smoothing,
    )
    vision = tower(
        args.vision_dim, args.vision_mlp, args.vision_layers,
        image_size=args.image_size,
        patch_size=args.patch_size,
        initializer_range=0.02,  # BLIP's default (1e-10) is meant for loading pretrained weights
    )
    cfg = BlipConfig(text_config=text, vision_config=vision, projection_dim=args.vision_dim,
                     image_text_hidden_size=args.vision_dim, label_smoothing=args.label_smoothing)
    assert cfg.text_config.encoder_hidden_size == cfg.vision_config.hidden_size
    return cfg


def sincos_position_init(model, scale: float, temperature: float = 100.0):
    """Initializes the vision position embedding with a 2-D sin/cos pattern (as in MAE) times ``scale``
    instead of N(0, 0.02): the encoder then knows where each patch is from the first step, which a ViT
    trained from scratch on a few thousand steps otherwise learns late. Class position stays 0."""
    pe = model.vision_model.embeddings.position_embedding  # [1, 1 + g*g, dim]
    dim = pe.shape[-1]
    g = int(round((pe.shape[1] - 1) ** 0.5))
    q = dim // 4
    omega = temperature ** (-torch.arange(q, dtype=torch.float32) / q)
    ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
    x = xs.reshape(-1, 1) * omega
    y = ys.reshape(-1, 1) * omega
    emb = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # [g*g, dim] (row-major, like the patches)
    with torch.no_grad():
        pe.zero_()
        pe[0, 1:] = emb * scale


def int8_size_estimate(model) -> dict:
    """Bytes of the FP32 tensors vs blipq's INT8 layout (Linear with in % 32 == 0 and the word embedding
    -> 1 byte per weight + an f16 scale per 32; everything else stays F32), over the saved tensors."""
    quant = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod.in_features % 32 == 0:
            quant.add(name + ".weight")
    quant.add("text_decoder.bert.embeddings.word_embeddings.weight")
    fp32 = int8 = qparams = 0
    seen = set()
    for name, p in model.state_dict().items():
        if name == "text_decoder.cls.predictions.decoder.weight":  # tied, not saved
            continue
        if p.data_ptr() in seen and name.endswith("decoder.bias"):
            continue
        seen.add(p.data_ptr())
        n = p.numel()
        fp32 += 4 * n
        if name in quant:
            int8 += n + 2 * (n // 32)
            qparams += n
        else:
            int8 += 4 * n
    return {"fp32_bytes": fp32, "int8_bytes": int8, "int8_ratio": int8 / fp32,
            "quantized_param_share": qparams * 4 / fp32}


def int8_file_size(model_dir: Path) -> dict:
    """Writes model.safetensors in blipq's INT8 layout (docs: shared README section 3) to a temporary
    file and measures it, header included: the ratio blipq's quantizer will see."""
    import hashlib
    import tempfile

    from safetensors.torch import load_file, save_file
    from transformers import BlipForConditionalGeneration

    src = model_dir / "model.safetensors"
    sd = load_file(src)
    model = BlipForConditionalGeneration.from_pretrained(model_dir)
    quant = {n + ".weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 32 == 0}
    quant.add("text_decoder.bert.embeddings.word_embeddings.weight")
    out = {}
    for k, w in sd.items():
        if k in quant:
            o, i = w.shape
            blocks = w.reshape(o, i // 32, 32)
            d = blocks.abs().amax(-1) / 127
            q = torch.round(blocks / d.clamp_min(1e-30).unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
            out[k] = q.reshape(o, i).contiguous()
            out[k + "_scale"] = d.half().contiguous()
        else:
            out[k] = w
    meta = {"format": "blipq-int8", "version": "1", "block_size": "32",
            "source": hashlib.sha256(src.read_bytes()).hexdigest()}
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "model.safetensors"
        save_file(out, str(dst), metadata=meta)
        size = dst.stat().st_size
    fp32 = src.stat().st_size
    return {"fp32_file_bytes": fp32, "int8_file_bytes": size, "int8_file_ratio": round(size / fp32, 4),
            "quantized_tensors": sum(k in quant for k in sd)}


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def load_scenes(scene_dir: Path, image_size: int, processor, tok, max_len: int):
    """uint8 images [N, S, S, 3] resized like BlipImageProcessor, token ids [N, 5, L] (first = bos)."""
    coco = json.loads((scene_dir / "captions.json").read_text())
    images = coco["images"]
    caps: dict[int, list[str]] = {}
    for a in coco["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"])

    cache = scene_dir / f"pixels_{image_size}_{len(images)}.npy"
    if cache.exists():
        pix = np.load(cache)
    else:
        t0 = time.time()
        pix = np.empty((len(images), image_size, image_size, 3), np.uint8)
        for i, im in enumerate(images):
            with Image.open(scene_dir / im["file_name"]) as img:
                pix[i] = np.asarray(img.convert("RGB").resize((image_size, image_size), Image.BICUBIC))
        np.save(cache, pix)
        print(f"resized {len(images)} images in {time.time() - t0:.0f}s -> {cache}", flush=True)

    # our resize + normalize must equal the processor's output
    with Image.open(scene_dir / images[0]["file_name"]) as img:
        ref = processor(images=[img.convert("RGB")], return_tensors="pt")["pixel_values"]
    ours = normalize(torch.from_numpy(pix[:1]))
    assert torch.allclose(ref, ours, atol=1e-5), (ref - ours).abs().max()

    all_caps = [c for im in images for c in caps[im["id"]]]
    enc = tok(all_caps, padding="max_length", truncation=True, max_length=max_len, return_tensors="np")
    ids = enc["input_ids"].reshape(len(images), -1, max_len).astype(np.int64)
    lens = enc["attention_mask"].sum(1)
    assert lens.max() < max_len, "captions truncated: raise --max-positions"
    ids[:, :, 0] = tok.convert_tokens_to_ids(BOS)
    return pix, ids


MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def normalize(u8: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float, BLIP mean/std (as BlipImageProcessor)."""
    x = u8.permute(0, 3, 1, 2).float() * (1 / 255)
    return (x - MEAN) / STD


def make_batch(pix, ids, idx, rng: np.random.Generator, canon_prob: float, pad_id: int):
    n_caps = ids.shape[1]
    pick = np.where(rng.random(len(idx)) < canon_prob, 0, rng.integers(1, n_caps, len(idx)))
    input_ids = torch.from_numpy(ids[idx, pick])
    width = int((input_ids != pad_id).sum(1).max())
    input_ids = input_ids[:, :width].contiguous()
    attn = (input_ids != pad_id).long()
    labels = input_ids.masked_fill(input_ids == pad_id, -100)
    return normalize(torch.from_numpy(pix[idx])), input_ids, attn, labels


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def val_loss(model, pix, ids, pad_id, batch=128):
    model.eval()
    tot = n = 0.0
    rng = np.random.default_rng(0)
    for s in range(0, len(pix), batch):
        idx = np.arange(s, min(len(pix), s + batch))
        pv, inp, attn, lab = make_batch(pix, ids, idx, rng, 1.0, pad_id)
        out = model(pixel_values=pv, input_ids=inp, attention_mask=attn, labels=lab)
        k = float((lab[:, 1:] != -100).sum())
        tot += float(out.loss) * k
        n += k
    model.train()
    return tot / n


@torch.no_grad()
def val_exact_match(model, pix, ids, tok, batch=128):
    """Share of scenes whose greedy caption equals the canonical reference, token for token."""
    model.eval()
    hit = 0
    sep, pad = tok.sep_token_id, tok.pad_token_id
    for s in range(0, len(pix), batch):
        pv = normalize(torch.from_numpy(pix[s : s + batch]))
        gen = model.generate(pixel_values=pv, max_length=model.generation_config.max_length)
        for g, ref in zip(gen.tolist(), ids[s : s + batch, 0].tolist()):
            want = [t for t in ref[1:] if t not in (pad, sep)]
            got = [t for t in g[1:] if t not in (pad, sep)]
            hit += got == want
    model.train()
    return hit / len(pix)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=Path, default=Path(os.environ.get("BLIPQ_SCENES", "/work/cache/scenes")) / "train")
    ap.add_argument("--eval-dir", type=Path, default=REPO / "data" / "demo-eval")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is fastest on a busy 2-core machine (2 threads wait on each other)")
    # model
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--vision-dim", type=int, default=64)
    ap.add_argument("--vision-layers", type=int, default=3)
    ap.add_argument("--vision-mlp", type=int, default=256)
    ap.add_argument("--text-dim", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--text-mlp", type=int, default=512)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--max-positions", type=int, default=32, help="text positions (and tokenizer max length)")
    ap.add_argument("--gen-max-length", type=int, default=20, help="generation_config.max_length")
    ap.add_argument("--pos-init-scale", type=float, default=0.5,
                    help="init the vision position embedding as 2-D sin/cos times this (0: N(0, 0.02))")
    # optimisation
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.02)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--canon-prob", type=float, default=1.0,
                    help="probability of training on the canonical caption instead of a rephrasing")
    ap.add_argument("--val", type=int, default=512, help="training scenes held out for the validation loss")
    ap.add_argument("--val-generate", type=int, default=256, help="validation scenes captioned greedily")
    ap.add_argument("--save-every", action="store_true", help="also save the model at every validation")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--no-eval", action="store_true", help="skip the final data/demo-eval scoring")
    args = ap.parse_args()

    import transformers
    from transformers import BlipForConditionalGeneration, GenerationConfig

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()

    coco = json.loads((args.scenes / "captions.json").read_text())
    vocab = build_vocab([a["caption"] for a in coco["annotations"]])
    processor = build_processor(vocab, args.image_size, args.max_positions)
    tok = processor.tokenizer
    print(f"vocab: {len(tok)} tokens ({len(vocab)} in WordPiece vocab + {BOS})", flush=True)

    pix, ids = load_scenes(args.scenes, args.image_size, processor, tok, args.max_positions)
    n_val = args.val
    tr_pix, tr_ids = pix[n_val:], ids[n_val:]
    va_pix, va_ids = pix[:n_val], ids[:n_val]
    print(f"scenes: {len(tr_pix)} train, {n_val} validation, captions/image {ids.shape[1]}", flush=True)

    cfg = build_config(args, tok)
    model = BlipForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        max_length=args.gen_max_length, num_beams=1, do_sample=False,
        bos_token_id=cfg.text_config.bos_token_id, eos_token_id=cfg.text_config.sep_token_id,
        pad_token_id=cfg.text_config.pad_token_id,
    )
    if args.pos_init_scale > 0:
        sincos_position_init(model, args.pos_init_scale)
    n_params = sum(p.numel() for p in model.parameters())
    size = int8_size_estimate(model)
    print(f"params: {n_params:,}  fp32 {size['fp32_bytes'] / 1e6:.2f} MB, int8 est. "
          f"{size['int8_bytes'] / 1e6:.2f} MB ({size['int8_ratio']:.3f})", flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in n or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(tr_pix))
    pos = 0
    pad_id = tok.pad_token_id
    model.train()
    t0 = time.time()
    run_loss = None
    history = []
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(tr_pix)), 0
        idx = np.sort(order[pos : pos + args.batch])
        pos += args.batch
        pv, inp, attn, lab = make_batch(tr_pix, tr_ids, idx, rng, args.canon_prob, pad_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        out = model(pixel_values=pv, input_ids=inp, attention_mask=attn, labels=lab)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = float(out.loss.detach())
        run_loss = loss if run_loss is None else 0.95 * run_loss + 0.05 * loss
        if (step + 1) % args.log_every == 0 or step == 0:
            el = time.time() - t0
            print(f"step {step + 1:5d}/{args.steps}  loss {loss:.4f} (avg {run_loss:.4f})  lr {lr_at(step, args):.2e}  "
                  f"elapsed {el:6.0f}s  ({el / (step + 1):.2f}s/step)", flush=True)
        if (step + 1) % args.val_every == 0 or step + 1 == args.steps:
            vl = val_loss(model, va_pix, va_ids, pad_id)
            em = val_exact_match(model, va_pix[: args.val_generate], va_ids[: args.val_generate], tok)
            history.append({"step": step + 1, "train_loss": round(run_loss, 4), "val_loss": round(vl, 4),
                            "val_exact_match": round(em, 4), "elapsed_s": round(time.time() - t0, 1)})
            print(f"  validation: loss (canonical captions) {vl:.4f}, greedy == canonical caption on "
                  f"{100 * em:.1f}% of {args.val_generate} scenes", flush=True)
            if args.save_every:
                model.save_pretrained(args.out)
                processor.save_pretrained(args.out)
    train_secs = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    processor.image_processor.save_pretrained(args.out)  # preprocessor_config.json for older readers
    file_size = (args.out / "model.safetensors").stat().st_size
    print(f"saved {args.out} (model.safetensors {file_size / 1e6:.2f} MB)", flush=True)

    report = {
        "model": "BlipForConditionalGeneration (random init, trained by tools/train_demo.py)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch,
        "train_scenes": int(len(tr_pix)),
        "train_wall_time_s": round(train_secs, 1),
        "threads": args.threads,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dims": {
            "image_size": args.image_size, "patch_size": args.patch_size,
            "vision_hidden": args.vision_dim, "vision_layers": args.vision_layers, "vision_mlp": args.vision_mlp,
            "text_hidden": args.text_dim, "text_layers": args.text_layers, "text_mlp": args.text_mlp,
            "heads_dim": args.head_dim, "vocab_size": len(tok), "max_positions": args.max_positions,
            "gen_max_length": args.gen_max_length,
        },
        "total_parameters": n_params,
        "model_safetensors_bytes": file_size,
        "int8_estimate": size,
        "int8_file": int8_file_size(args.out),
        "history": history,
    }
    if not args.no_eval:
        from eval_demo import evaluate, fake_quantize_int8

        reloaded = BlipForConditionalGeneration.from_pretrained(args.out)
        scores, results, secs = evaluate(args.out, args.eval_dir, model=reloaded)
        report["eval"] = {"data": "data/demo-eval", "images": len(results), **scores,
                          "caption_seconds": round(secs, 1)}
        print(json.dumps(report["eval"], indent=2), flush=True)
        # the same model with its weights rounded as blipq's INT8 checkpoint stores them
        n_q = fake_quantize_int8(reloaded)
        scores_q, _, _ = evaluate(args.out, args.eval_dir, model=reloaded)
        report["eval_simulated_int8"] = {**scores_q, "quantized_tensors": n_q}
        print(f"simulated INT8: BLEU-4 {scores_q['Bleu_4']:.4f} "
              f"({100 * scores_q['Bleu_4'] / scores['Bleu_4']:.1f}% of FP32)", flush=True)
    report["total_wall_time_s"] = round(time.time() - t_start, 1)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done in {report['total_wall_time_s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
