#!/usr/bin/env python3
"""One command for the native peer comparison: blipq, PyTorch and ONNX Runtime on the same
checkpoint and images, run interleaved (pair after pair, every runtime once per pair, each in
its own process), then medians and ranges per runtime and the ratios that matter, as a markdown
table. With --readme it replaces the README's table between the `peer-compare` markers.

    python3 tools/peer_compare.py --fp32 /tmp/blip-base --int8 /tmp/blip-base-int8 \
        [--channel /tmp/blip-base-int8-channel] --images data/validation --pairs 3 \
        --threads 2,1 --readme README.md

Runtimes (per thread count):
  blipq FP32 / INT8     `blipq bench --fixed-new-tokens N --warmup 1` (the --blipq binary);
                        with --channel, the `--scheme int8-channel` copy too
  PyTorch FP32 / INT8   tools/peer_pytorch.py (transformers; INT8 = quantize_dynamic qint8 Linear)
  ONNX Runtime          the vision encoder only, exported with torch.onnx, FP32 and
                        onnxruntime.quantization.quantize_dynamic (per-channel QInt8)

Never run in CI (needs torch, transformers, onnx, onnxruntime).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readme_block import replace_block  # noqa: E402


def run(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def blipq_run(args, model, threads, out):
    label = os.path.basename(os.path.normpath(model))
    run([args.blipq, "bench", "--model", model, "--images", args.images, "--warmup", "1",
         "--fixed-new-tokens", str(args.tokens), "--threads", str(threads), "--out", out],
        stdout=subprocess.DEVNULL)
    return breakdown(os.path.join(out, f"{label}_results.json"))


def pytorch_run(args, variant, threads, out):
    run([sys.executable, os.path.join(HERE, "peer_pytorch.py"), "--model", args.fp32,
         "--images", args.images, "--fixed-new-tokens", str(args.tokens), "--threads",
         str(threads), "--variant", variant, "--out", out], stderr=subprocess.DEVNULL)
    return breakdown(os.path.join(out, f"pytorch-{variant}_results.json"))


def breakdown(path):
    perf = json.load(open(path))["performance_metrics"]
    b = perf["breakdown"]
    return dict(total=perf["avg_inference_time"], vision=b["vision_s"], decode=b["decode_s"])


def ort_export(args, cache):
    """The vision encoder as ONNX, FP32 and dynamic INT8 (per channel); cached by checkpoint."""
    fp32 = os.path.join(cache, "vision-fp32.onnx")
    int8 = os.path.join(cache, "vision-int8.onnx")
    if os.path.exists(fp32) and os.path.exists(int8):
        return fp32, int8
    code = f"""
import torch
from transformers import BlipForConditionalGeneration
from onnxruntime.quantization import quantize_dynamic, QuantType
model = BlipForConditionalGeneration.from_pretrained({args.fp32!r}).eval()
size = model.config.vision_config.image_size
class Vision(torch.nn.Module):
    def __init__(self, v):
        super().__init__(); self.v = v
    def forward(self, pixel_values):
        return self.v(pixel_values=pixel_values).last_hidden_state
with torch.no_grad():
    torch.onnx.export(Vision(model.vision_model), (torch.zeros(1, 3, size, size),), {fp32!r},
                      input_names=["pixel_values"], output_names=["image_embeds"], dynamo=False)
quantize_dynamic({fp32!r}, {int8!r}, weight_type=QuantType.QInt8, per_channel=True)
"""
    run([sys.executable, "-c", code])
    return fp32, int8


ORT_RUN = """
import json, os, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image
from transformers import BlipProcessor
path, threads, model, images = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
proc = BlipProcessor.from_pretrained(model)
files = sorted(f for f in os.listdir(images) if f.lower().endswith((".png", ".jpg", ".jpeg")))
pix = [proc(images=Image.open(os.path.join(images, f)).convert("RGB"), return_tensors="np")["pixel_values"].astype(np.float32) for f in files]
sess.run(None, {"pixel_values": pix[0]})
times = []
for p in pix:
    t = time.perf_counter(); sess.run(None, {"pixel_values": p}); times.append(time.perf_counter() - t)
print(json.dumps(dict(vision=sum(times) / len(times))))
"""


def ort_run(args, onnx, threads):
    out = run([sys.executable, "-c", ORT_RUN, onnx, str(threads), args.fp32, args.images],
              capture_output=True, text=True)
    v = json.loads(out.stdout.strip().splitlines()[-1])["vision"]
    return dict(total=None, vision=v, decode=None)


def summary(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def cell(s, bold=False):
    if s is None:
        return "—"
    med, lo, hi = s
    text = f"{med:.2f}"
    if bold:
        text = f"**{text}**"
    return f"{text} ({lo:.2f}–{hi:.2f})" if hi - lo >= 0.005 else text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fp32", required=True, help="FP32 checkpoint (Hugging Face layout)")
    p.add_argument("--int8", required=True, help="its `blipq quantize` copy")
    p.add_argument("--channel", help="its `blipq quantize --scheme int8-channel` copy (optional)")
    p.add_argument("--images", default=os.path.join(ROOT, "data", "validation"))
    p.add_argument("--pairs", type=int, default=3, help="interleaved rounds per thread count")
    p.add_argument("--threads", default="2,1")
    p.add_argument("--tokens", type=int, default=20, help="exactly this many new tokens")
    p.add_argument("--blipq", default=os.path.join(ROOT, "target", "release", "blipq"))
    p.add_argument("--cache", default=os.path.join(ROOT, "bench-out", "peers"),
                   help="where the ONNX exports are kept")
    p.add_argument("--readme", help="replace the table between the peer-compare markers here")
    args = p.parse_args()
    for path in (args.fp32, args.int8, args.images, args.blipq) + ((args.channel,) if args.channel else ()):
        if not os.path.exists(path):
            sys.exit(f"peer_compare: {path} does not exist")
    os.makedirs(args.cache, exist_ok=True)
    onnx_fp32, onnx_int8 = ort_export(args, args.cache)

    runtimes = [
        ("blipq FP32", lambda t, o: blipq_run(args, args.fp32, t, o)),
        ("blipq INT8", lambda t, o: blipq_run(args, args.int8, t, o)),
        *([("blipq INT8 per-channel", lambda t, o: blipq_run(args, args.channel, t, o))] if args.channel else []),
        ("PyTorch FP32", lambda t, o: pytorch_run(args, "fp32", t, o)),
        ("PyTorch dynamic INT8", lambda t, o: pytorch_run(args, "int8", t, o)),
        ("ONNX Runtime FP32 (vision only)", lambda t, o: ort_run(args, onnx_fp32, t)),
        ("ONNX Runtime dynamic INT8 per-channel (vision only)", lambda t, o: ort_run(args, onnx_int8, t)),
    ]
    threads = [int(t) for t in args.threads.split(",")]
    results = {}
    started = time.time()
    for t in threads:
        for i in range(args.pairs):
            for name, fn in runtimes:
                with tempfile.TemporaryDirectory() as out:
                    r = fn(t, out)
                results.setdefault((t, name), []).append(r)
                print(f"[{time.time() - started:.0f}s] threads {t} round {i + 1}: {name} {r}",
                      file=sys.stderr)

    lines = [
        f"| runtime | threads | s/image | vision s | decode s ({args.tokens} tokens) |",
        "|---|---|---|---|---|",
    ]
    ratios = []
    for t in threads:
        for name, _ in runtimes:
            runs = results[(t, name)]
            lines.append(f"| {name} | {t} | {cell(summary(runs, 'total'), True)} | "
                         f"{cell(summary(runs, 'vision'))} | {cell(summary(runs, 'decode'))} |")
        med = lambda name, key: summary(results[(t, name)], key)[0]
        ratios.append(
            f"- {t} thread{'s' if t > 1 else ''}: blipq FP32 / PyTorch FP32 = "
            f"{med('blipq FP32', 'total') / med('PyTorch FP32', 'total'):.2f} "
            f"(vision {med('blipq FP32', 'vision') / med('PyTorch FP32', 'vision'):.2f}, "
            f"decode {med('blipq FP32', 'decode') / med('PyTorch FP32', 'decode'):.2f}); "
            f"blipq INT8 / PyTorch INT8 = "
            f"{med('blipq INT8', 'total') / med('PyTorch dynamic INT8', 'total'):.2f}; "
            f"blipq INT8 vision / ONNX Runtime INT8 vision = "
            f"{med('blipq INT8', 'vision') / med('ONNX Runtime dynamic INT8 per-channel (vision only)', 'vision'):.2f}; "
            f"blipq FP32 / blipq INT8 = {med('blipq FP32', 'total') / med('blipq INT8', 'total'):.2f}"
            + (f"; blipq INT8 per-channel / PyTorch INT8 = "
               f"{med('blipq INT8 per-channel', 'total') / med('PyTorch dynamic INT8', 'total'):.2f} "
               f"(vision / ONNX Runtime INT8 vision = "
               f"{med('blipq INT8 per-channel', 'vision') / med('ONNX Runtime dynamic INT8 per-channel (vision only)', 'vision'):.2f}; "
               f"decode / blipq INT8 decode = "
               f"{med('blipq INT8 per-channel', 'decode') / med('blipq INT8', 'decode'):.2f})"
               if args.channel else ""))
    images = len([f for f in os.listdir(args.images) if f.lower().endswith((".png", ".jpg", ".jpeg"))])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    table = "\n".join([
        f"Medians of {args.pairs} interleaved rounds (range in brackets), {images} images, "
        f"exactly {args.tokens} new tokens; {cpu}, {time.strftime('%Y-%m-%d')}; "
        f"`python3 tools/peer_compare.py --fp32 {args.fp32} --int8 {args.int8} "
        f"{'--channel ' + args.channel + ' ' if args.channel else ''}--pairs {args.pairs} "
        f"--threads {args.threads}`.",
        "",
        *lines,
        "",
        "Ratios of medians (below 1: blipq takes less time):",
        "",
        *ratios,
    ])
    print(table)
    if args.readme:
        replace_block(args.readme, "peer-compare", table)


if __name__ == "__main__":
    main()
