#!/usr/bin/env python3
"""Caption an eval set with a BLIP checkpoint (greedy) and score it with pycocoevalcap.

Scores follow the COCO caption rules: both sides go through the PTB tokenizer (needs Java), then
BLEU-1..4, ROUGE-L and CIDEr(-D) from ``pycocoevalcap``. BLEU is on a 0..1 scale.

Usage::

    python3 tools/eval_demo.py                                   # models/demo on data/demo-eval
    python3 tools/eval_demo.py --model models/demo --data data/demo-eval \\
        --results /tmp/demo_captions.json --update-report

``--update-report`` writes the scores into ``<model>/training_report.json`` (key ``eval``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_coco(data_dir: Path):
    """Returns (images [{id, file_name}], refs {image_id: [caption, ...]})."""
    coco = json.loads((data_dir / "captions.json").read_text())
    refs: dict[int, list[str]] = {}
    for a in coco["annotations"]:
        refs.setdefault(a["image_id"], []).append(a["caption"])
    return coco["images"], refs


def coco_scores(refs: dict[int, list[str]], hyps: dict[int, str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE_L and CIDEr of ``hyps`` against ``refs`` (pycocoevalcap, PTB tokenized)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = sorted(hyps)
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in ids})
    res = tok.tokenize({i: [{"caption": hyps[i]}] for i in ids})
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, b in enumerate(bleu, 1):
        out[f"Bleu_{n}"] = float(b)
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


def caption_images(model, processor, paths: list[Path], max_length: int, batch_size: int = 32) -> list[str]:
    """Greedy captions (``model.generate(pixel_values, max_length=...)``), special tokens skipped."""
    import torch
    from PIL import Image

    caps: list[str] = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(paths), batch_size):
            imgs = [Image.open(p).convert("RGB") for p in paths[s : s + batch_size]]
            pv = processor(images=imgs, return_tensors="pt")["pixel_values"]
            ids = model.generate(pixel_values=pv, max_length=max_length, num_beams=1, do_sample=False)
            caps += [c.strip() for c in processor.batch_decode(ids, skip_special_tokens=True)]
    return caps


def fake_quantize_int8(model) -> int:
    """Rounds the weights in place the way blipq's INT8 checkpoint stores them: every nn.Linear weight
    with in % 32 == 0 and the word embedding become q = round(W / d) in [-127, 127] with one f16 scale
    d = max|W_block| / 127 per block of 32 along `in`, dequantized back to f32. Returns #tensors."""
    import torch

    targets = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m.in_features % 32 == 0]
    targets.append(model.text_decoder.bert.embeddings.word_embeddings.weight)
    done = set()
    with torch.no_grad():
        for w in targets:
            if w.data_ptr() in done:  # tied LM head = word embedding
                continue
            done.add(w.data_ptr())
            out, inp = w.shape
            blocks = w.reshape(out, inp // 32, 32)
            d = (blocks.abs().amax(-1, keepdim=True) / 127).half().float()
            q = torch.where(d > 0, torch.round(blocks / torch.where(d > 0, d, torch.ones_like(d))), torch.zeros_like(blocks))
            w.copy_((q.clamp(-127, 127) * d).reshape(out, inp))
    return len(done)


def evaluate(model_dir: Path, data_dir: Path, model=None, processor=None, max_length: int | None = None,
             batch_size: int = 32):
    """Captions every image of ``data_dir`` and scores them.

    Returns (scores dict, [{"image_id", "caption"}] in COCO results format, seconds spent).
    ``model``/``processor`` default to loading ``model_dir`` with ``from_pretrained``.
    """
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if model is None:
        model = BlipForConditionalGeneration.from_pretrained(model_dir)
    if processor is None:
        processor = BlipProcessor.from_pretrained(model_dir)
    if max_length is None:
        max_length = model.generation_config.max_length or 20
    images, refs = load_coco(data_dir)
    t0 = time.time()
    with torch.inference_mode():
        caps = caption_images(model, processor, [data_dir / im["file_name"] for im in images], max_length, batch_size)
    secs = time.time() - t0
    hyps = {im["id"]: c for im, c in zip(images, caps)}
    scores = coco_scores(refs, hyps)
    results = [{"image_id": im["id"], "caption": c} for im, c in zip(images, caps)]
    return scores, results, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "demo")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "demo-eval")
    ap.add_argument("--max-length", type=int, default=None, help="default: generation_config.max_length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=None, help="write the captions in COCO results format")
    ap.add_argument("--update-report", action="store_true", help="store the scores in <model>/training_report.json")
    ap.add_argument("--simulate-int8", action="store_true",
                    help="also score the model with its weights rounded to blipq's INT8 (Q8_0) format")
    ap.add_argument("--show", type=int, default=8, help="print this many captions with their references")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    scores, results, secs = evaluate(args.model, args.data, max_length=args.max_length)
    _, refs = load_coco(args.data)
    for r in results[: args.show]:
        print(f"[{r['image_id']}] {r['caption']!r}   refs: {refs[r['image_id']][:2]}")
    print(json.dumps(scores, indent=2))
    print(f"{len(results)} images captioned in {secs:.1f}s")
    int8 = None
    if args.simulate_int8:
        from transformers import BlipForConditionalGeneration

        m = BlipForConditionalGeneration.from_pretrained(args.model)
        n = fake_quantize_int8(m)
        int8, _, _ = evaluate(args.model, args.data, model=m, max_length=args.max_length)
        int8["quantized_tensors"] = n
        print("simulated INT8:", json.dumps(int8, indent=2))
    if args.results:
        args.results.write_text(json.dumps(results, indent=1))
    if args.update_report:
        rp = args.model / "training_report.json"
        report = json.loads(rp.read_text()) if rp.exists() else {}
        data = args.data.resolve()
        data = data.relative_to(REPO) if data.is_relative_to(REPO) else data
        report["eval"] = {"data": str(data), "images": len(results), **scores, "caption_seconds": round(secs, 1)}
        if int8 is not None:
            report["eval_simulated_int8"] = int8
        rp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"updated {rp}")


if __name__ == "__main__":
    main()
