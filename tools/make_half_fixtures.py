#!/usr/bin/env python3
"""F16 / BF16 parity fixtures: the token ids transformers' `generate` gives for the tiny fixture
model (tests/fixtures/tiny) with every weight rounded to float16 or bfloat16 and upcast back to
float32 — exactly the values `blipq quantize --scheme f16|bf16` stores and blipq computes with —
for the greedy and 3-beam cases, from each fixture image's recorded `pixel_values`
(tests/fixtures/expected.safetensors). Writes tests/fixtures/half/expected.json, which
tests/schemes.rs checks blipq against.

    /path/to/venv/bin/python tools/make_half_fixtures.py

Needs torch, transformers and safetensors (never run in CI).
"""
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import BlipForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CASES = ["greedy", "beam3"]


def main() -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    tensors = load_file(str(FIXTURES / "expected.safetensors"))
    out = {
        "generator": "tools/make_half_fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model_dir": "tiny",
        "description": "every parameter p of the tiny model replaced by p.to(dtype).float(); "
        "model.generate(pixel_values, **generate_kwargs) in float32",
        "dtypes": {},
    }
    for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
        model = BlipForConditionalGeneration.from_pretrained(str(FIXTURES / "tiny")).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.to(dtype).float()
        images = {}
        for image in expected["images"]:
            pixels = tensors[f"{image}/pixel_values"].unsqueeze(0)
            cases = {}
            for case in CASES:
                kwargs = expected["cases"][case]["generate_kwargs"]
                with torch.no_grad():
                    ids = model.generate(pixel_values=pixels, **kwargs)[0].tolist()
                cases[case] = {"generate_kwargs": kwargs, "ids": ids}
            images[image] = cases
        out["dtypes"][name] = images
    path = FIXTURES / "half" / "expected.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
