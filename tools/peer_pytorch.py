#!/usr/bin/env python3
"""PyTorch baseline for `blipq bench --baseline`: runs a BLIP checkpoint through `transformers`
in FP32 and with `torch.ao.quantization.quantize_dynamic` (qint8 on every nn.Linear, the common
recipe), on the same images, and writes results JSON in blipq's format (one file per variant).

Each variant runs in its own process so that peak memory (ru_maxrss) is per model.

    python3 tools/peer_pytorch.py --model /tmp/blip-base --images data/demo-eval/images \
        --limit 5 --fixed-new-tokens 20 --threads 2 --out bench-out/pytorch

then `blipq bench --model ... --baseline bench-out/pytorch/pytorch-fp32_results.json ...`.
`--batch-size N` captions N images per `generate` call (padded batch), like `blipq bench
--batch-size N`: each image's time is its own preprocessing plus an equal share of its batch's
vision and generate time, so images/s is measured over the batches' wall time.
Never run in CI (needs torch + transformers, ~6 GB).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time


def list_images(args):
    """(file, image_id, references) in evaluation order."""
    if args.annotations:
        ann = json.load(open(args.annotations))
        refs = {}
        for a in ann["annotations"]:
            refs.setdefault(a["image_id"], []).append(a["caption"])
        items = [(i["file_name"], i["id"], refs.get(i["id"], [])) for i in ann["images"]]
    else:
        exts = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
        items = [(f, None, []) for f in sorted(os.listdir(args.images)) if f.lower().endswith(exts)]
    return items[: args.limit] if args.limit else items


def run_variant(args):
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    torch.set_num_threads(args.threads)
    processor = BlipProcessor.from_pretrained(args.model)
    model = BlipForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.variant == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    gen = {}
    if args.fixed_new_tokens:
        gen = dict(max_new_tokens=args.fixed_new_tokens, min_new_tokens=args.fixed_new_tokens)
    elif args.max_length:
        gen = dict(max_length=args.max_length)
    if args.num_beams:
        gen["num_beams"] = args.num_beams

    items = list_images(args)
    samples, failures = [], []

    def caption(path):
        t0 = time.perf_counter()
        image = Image.open(path)
        inputs = processor(images=image, return_tensors="pt")
        t1 = time.perf_counter()
        with torch.no_grad():
            vision = model.vision_model(pixel_values=inputs["pixel_values"])
            t2 = time.perf_counter()
            ids = model.generate(**inputs, **gen)[0].tolist()
        t3 = time.perf_counter()
        # generate() runs the vision encoder again; the decode share is the rest.
        vision_s = t2 - t1
        return ids, dict(preprocess_s=t1 - t0, vision_s=vision_s,
                         decode_s=max(0.0, (t3 - t2) - vision_s), total_s=(t1 - t0) + (t3 - t2))

    eos = model.config.text_config.sep_token_id
    pad = model.config.text_config.pad_token_id

    def trim(ids):
        """A row of a batched generate without the padding after its end token."""
        if eos in ids[1:]:
            return ids[: ids.index(eos, 1) + 1]
        while len(ids) > 1 and ids[-1] == pad:
            ids = ids[:-1]
        return ids

    def caption_batch(paths):
        """[(ids, timings) or Exception] per path; unreadable images fail alone."""
        opened, pre = [], []
        for path in paths:
            t0 = time.perf_counter()
            try:
                image = Image.open(path)
                image.load()
                opened.append(image)
            except Exception as e:
                opened.append(e)
            pre.append(time.perf_counter() - t0)
        good = [im for im in opened if not isinstance(im, Exception)]
        if not good:
            return opened
        t0 = time.perf_counter()
        inputs = processor(images=good, return_tensors="pt")
        t1 = time.perf_counter()
        with torch.no_grad():
            model.vision_model(pixel_values=inputs["pixel_values"])
            t2 = time.perf_counter()
            rows = model.generate(**inputs, **gen).tolist()
        t3 = time.perf_counter()
        n = len(good)
        share_pre, vision_s = (t1 - t0) / n, (t2 - t1) / n
        gen_s = (t3 - t2) / n
        out, rows = [], iter(rows)
        for image, p in zip(opened, pre):
            if isinstance(image, Exception):
                out.append(image)
                continue
            pre_s = p + share_pre
            out.append((trim(next(rows)), dict(
                preprocess_s=pre_s, vision_s=vision_s, decode_s=max(0.0, gen_s - vision_s),
                total_s=pre_s + vision_s + gen_s)))
        return out

    first = os.path.join(args.images, items[0][0])
    if args.batch_size == 1:
        for _ in range(args.warmup):
            caption(first)
    else:
        for _ in range(-(-args.warmup // args.batch_size)):
            caption_batch([first] * args.batch_size)

    def record(file, image_id, outcome):
        if isinstance(outcome, Exception):  # report and go on, like blipq
            failures.append(dict(image=file, error=str(outcome)))
            return
        ids, timings = outcome
        samples.append(dict(image=file, image_id=image_id,
                            caption=processor.decode(ids, skip_special_tokens=True),
                            token_ids=ids, new_tokens=len(ids) - 1, timings=timings))
        print(f"{args.variant} {len(samples)}/{len(items)} {timings['total_s']:.3f}s", file=sys.stderr)

    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        if args.batch_size == 1:
            file, image_id, _refs = chunk[0]
            try:
                outcome = caption(os.path.join(args.images, file))
            except Exception as e:
                outcome = e
            record(file, image_id, outcome)
            continue
        try:
            outcomes = caption_batch([os.path.join(args.images, f) for f, _, _ in chunk])
        except Exception as e:
            outcomes = [e] * len(chunk)
        for (file, image_id, _refs), outcome in zip(chunk, outcomes):
            record(file, image_id, outcome)

    times = [s["timings"]["total_s"] for s in samples]
    total = sum(times)
    tokens = sum(s["new_tokens"] for s in samples)
    mean = lambda k: sum(s["timings"][k] for s in samples) / max(1, len(samples))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    quality = None
    if any(r for _, _, r in items):
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        refs = {i: [{"caption": c} for c in r] for _, i, r in items if r}
        hyps = {s["image_id"]: [{"caption": s["caption"]}] for s in samples if s["image_id"] in refs}
        tok = PTBTokenizer()
        gts, res = tok.tokenize({k: refs[k] for k in hyps}), tok.tokenize(hyps)
        bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        quality = dict(bleu_score=bleu[3], Bleu_1=bleu[0], Bleu_2=bleu[1], Bleu_3=bleu[2],
                       Bleu_4=bleu[3], ROUGE_L=rouge, CIDEr=cider, evaluation_method="pycocoevalcap")
    weights = os.path.join(args.model, "model.safetensors")
    result = dict(
        label=f"pytorch-{args.variant}",
        performance_metrics=dict(
            total_samples=len(samples), failed_samples=len(failures), batch_size=args.batch_size,
            avg_inference_time=total / max(1, len(samples)),
            throughput_images_per_sec=len(samples) / total if total else 0.0,
            tokens_per_second=tokens / total if total else 0.0,
            memory_usage_mb=peak_mb, individual_times=times,
            breakdown=dict(preprocess_s=mean("preprocess_s"), vision_s=mean("vision_s"),
                           decode_s=mean("decode_s"))),
        quality_metrics=quality,
        model_info=dict(
            total_parameters=sum(p.numel() for p in model.parameters()),
            model_size_mb=(os.path.getsize(weights) / 2**20) if os.path.exists(weights) else 0.0,
            device="cpu", is_quantized=args.variant == "int8",
            dtype="qint8 (dynamic)" if args.variant == "int8" else "float32",
            model_path=args.model),
        failures=failures, samples=samples)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"pytorch-{args.variant}_results.json")
    json.dump(result, open(path, "w"), indent=2)
    print(f"wrote {path}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory (Hugging Face layout)")
    p.add_argument("--images", required=True, help="image directory")
    p.add_argument("--annotations", help="COCO captions file: enables quality metrics")
    p.add_argument("--limit", type=int)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--fixed-new-tokens", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--num-beams", type=int)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per generate() call (1 to 32); images/s over the batches' wall time")
    p.add_argument("--out", default="bench-out/pytorch")
    p.add_argument("--variant", choices=["fp32", "int8", "both"], default="both")
    args = p.parse_args()
    if not 1 <= args.batch_size <= 32:
        p.error(f"--batch-size {args.batch_size}: give 1 to 32 images per batch")
    if args.variant != "both":
        return run_variant(args)
    for v in ("fp32", "int8"):
        cmd = [sys.executable, __file__] + [a for a in sys.argv[1:] if a not in ("both",)]
        cmd = [c for c in cmd if c != "--variant"] + ["--variant", v]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
