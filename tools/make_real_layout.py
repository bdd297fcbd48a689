#!/usr/bin/env python3
"""Write `tests/fixtures/real-bin/`: a tiny random-weight checkpoint with the exact file and tensor
layout of the real `Salesforce/blip-image-captioning-base` (Hub commit 82a3776).

Usage (from anywhere; torch is needed, transformers for the reference captions; the weights are
drawn by `init_weights` of tools/make_fixtures.py, which this imports, with numpy, Pillow and
safetensors):

    python3 tools/make_real_layout.py [--real ../shared/real-blip] [--no-transformers]

Inputs: the real checkpoint's metadata files, byte for byte, in `<real>/base/` and the real tensor
list `<real>/base_expected_tensors.tsv` (default `<real>` = `../shared/real-blip` next to the
repository). Outputs, in `tests/fixtures/real-bin/`:

  tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt,
  preprocessor_config.json  copied unchanged from the real checkpoint (30522 tokens: no [DEC] or
                            [ENC], which exist only as embedding rows 30522 / 30523; `"size": 384`
                            as an integer; no `resample`, `rescale_factor` or `do_convert_rgb`).
  config.json               the real one with only the model dimensions shrunk (every other key
                            kept, `text_config` still without `encoder_hidden_size`, which means
                            the vision hidden size); written as transformers writes it (indent 2,
                            sorted keys), checked to reproduce the real file byte for byte when no
                            dimension is changed.
  pytorch_model.bin         a zip-format `torch.save` of an OrderedDict with exactly the real key
                            set in the real order (474 entries, 12 layers per tower as in the real
                            model): `text_decoder.bert.embeddings.position_ids` as an int64
                            `arange(512).expand(1, -1)` buffer (as transformers 4.26 registered it),
                            `cls.predictions.decoder.bias` sharing storage with
                            `cls.predictions.bias`, `cls.predictions.decoder.weight` a separate copy
                            (clone) of the word embeddings, and the state dict's `_metadata`.
  expected_tensors.tsv      name / dtype / shape of every entry of pytorch_model.bin, in file order
                            (the names are those of the real tensor list, checked here).
  expected.json             transformers' `generate` token ids and captions for a few
                            `data/demo-eval/` images and cases, with the exact generate arguments
                            and versions (with --no-transformers: the existing file is kept as
                            it was, not re-checked).

Deterministic: weights come from a seeded `torch.Generator` in a fixed parameter order, and the
random `.data/serialization_id` record torch.save writes is replaced by zeros (CRC fixed up), so a
re-run gives byte-identical files with the same versions. The script checks its own results
(transformers loads the folder to the same weights with the LM head tied; float64 gives the same
ids; every greedy step has a top1-top2 gap >= MIN_GREEDY_MARGIN; some but not all greedy captions
end at [SEP]) and fails before writing expected.json if one does not hold.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "real-bin"
DEFAULT_REAL = ROOT.parent / "shared" / "real-blip"

COPIED = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
]

# Only these keys of the real config change. Layer counts (12), image_size (384), patch_size (16),
# vocab_size (30524), max_position_embeddings (512) and everything else stay as in the real file.
# The vision hidden size differs from the text one so that cross-attention's key/value width
# (encoder_hidden_size = vision hidden, derived because the real config omits the field) is
# exercised: a loader that took the text hidden size instead would fail on the shapes.
VISION_DIMS = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
TEXT_DIMS = {"hidden_size": 16, "intermediate_size": 64, "num_attention_heads": 2}

# Weight scales as tools/make_fixtures.py chose them for the tiny fixture, except a larger
# cross-attention (0.4, not 0.15): through 12 random vision layers the image embeddings of these
# synthetic scenes differ less, and 0.15 gave the same first tokens for most images (0.6 gave
# captions stuck repeating one or two tokens). SEED was chosen among 0..9 for captions that differ
# from the first token on and repeat little; SEP_BIAS lies between the smallest "best token vs
# [SEP]" gaps of the images' greedy runs (1.23-1.66 without it), so some captions end early. The
# checks in check_properties() hold for these values; change them only together with a re-run.
SEED = 2
INIT_STD = 0.05
BIAS_STD = 0.02
LN_WEIGHT_STD = 0.1
LN_BIAS_STD = 0.05
STD_OVERRIDES = {"word_embeddings": 0.15, "crossattention": 0.4}
SEP_BIAS = 1.28
MIN_GREEDY_MARGIN = 1e-3

BOS_ID = 30522
SEP_ID = 102
PROMPT_TEXT = "a picture of"
# gray, black and white backgrounds; small and large shapes
IMAGES = ["scene_000000.png", "scene_000002.png", "scene_000004.png", "scene_000007.png"]
CASES = {
    "greedy": (False, {"max_length": 20}),
    "beam3": (False, {"num_beams": 3, "max_length": 20}),
    "prompt": (True, {"max_length": 20}),
    "default": (False, {}),
}


def read_real_names(real: Path) -> list[tuple[str, str, str]]:
    rows = []
    lines = (real / "base_expected_tensors.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["name", "shape", "dtype"], lines[0]
    for line in lines[1:]:
        name, shape, dtype = line.split("\t")[:3]
        rows.append((name, shape, dtype))
    return rows


def make_config(real: Path) -> tuple[dict, str]:
    raw = (real / "base" / "config.json").read_text()
    cfg = json.loads(raw)

    def dump(c: dict) -> str:
        return json.dumps(c, indent=2, sort_keys=True) + "\n"

    assert dump(cfg) == raw, "the real config.json is not in transformers' JSON layout"
    assert "encoder_hidden_size" not in cfg["text_config"]
    for key in VISION_DIMS:
        assert key in cfg["vision_config"], key
    for key in TEXT_DIMS:
        assert key in cfg["text_config"], key
    cfg["vision_config"].update(VISION_DIMS)
    cfg["text_config"].update(TEXT_DIMS)
    return cfg, dump(cfg)


def build_model(cfg: dict, seed: int = SEED, sep_bias: float = SEP_BIAS):
    from transformers import BlipConfig, BlipForConditionalGeneration

    from make_fixtures import init_weights  # same draw as the tiny fixture, other scales

    config = BlipConfig.from_dict(cfg)
    # transformers derives it from the vision tower (BlipConfig.__post_init__), as blipq does.
    assert config.text_config.encoder_hidden_size == VISION_DIMS["hidden_size"]
    model = BlipForConditionalGeneration(config)
    # Unlike make_fixtures.py, "post_layernorm" is not among the LayerNorm names: the vision
    # post_layernorm is drawn like any other weight / bias (part of this fixture's bytes).
    init_weights(
        model,
        seed,
        sep_bias,
        init_std=INIT_STD,
        bias_std=BIAS_STD,
        ln_weight_std=LN_WEIGHT_STD,
        ln_bias_std=LN_BIAS_STD,
        std_overrides=STD_OVERRIDES,
        ln_names=("LayerNorm", "layer_norm"),
        sep_id=SEP_ID,
    )
    return model.eval()


def real_state_dict(model, names: list[str]) -> collections.OrderedDict:
    """The model's weights with the real file's key set, order, buffer and (un)tying."""
    sd = model.state_dict()
    pre = "text_decoder.cls.predictions."
    emb = "text_decoder.bert.embeddings."
    out = collections.OrderedDict()
    for name in names:
        if name == emb + "position_ids":
            # transformers 4.26: register_buffer("position_ids", arange(max_pos).expand((1, -1)))
            n = model.config.text_config.max_position_embeddings
            out[name] = torch.arange(n).expand((1, -1))
        elif name == pre + "decoder.weight":
            # Stored apart from the word embeddings in the real file, with the same values.
            out[name] = sd[emb + "word_embeddings.weight"].clone()
        elif name == pre + "decoder.bias":
            out[name] = out[pre + "bias"]  # the same tensor: torch.save stores one storage
        else:
            out[name] = sd[name]
    assert len(out) == len(names) and set(sd) <= set(out), set(sd) ^ set(out)
    out._metadata = sd._metadata  # what a module's state_dict() carries (module versions)
    return out


def zero_serialization_id(path: Path) -> None:
    """Replace torch.save's random `.data/serialization_id` digits by zeros (same length), fixing
    the CRC-32 in the local header and in the central directory, so the file is reproducible."""
    data = bytearray(path.read_bytes())
    suffix = b"/.data/serialization_id"
    # central directory entries: signature PK\1\2
    at = data.find(b"PK\x01\x02")
    found = False
    while at != -1:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        name = bytes(data[at + 46 : at + 46 + name_len])
        if name.endswith(suffix):
            local = struct.unpack_from("<I", data, at + 42)[0]
            size = struct.unpack_from("<I", data, at + 20)[0]
            lname, lextra = struct.unpack_from("<HH", data, local + 26)
            start = local + 30 + lname + lextra
            old = bytes(data[start : start + size])
            assert old.isdigit(), old
            new = b"0" * size
            data[start : start + size] = new
            crc = zlib.crc32(new)
            struct.pack_into("<I", data, local + 14, crc)
            struct.pack_into("<I", data, at + 16, crc)
            found = True
        at = data.find(b"PK\x01\x02", at + 46 + name_len + extra_len + comment_len)
    assert found, "no serialization_id record"
    path.write_bytes(bytes(data))


def write_checkpoint(real: Path, model, cfg_text: str, rows) -> collections.OrderedDict:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for f in COPIED:
        shutil.copyfile(real / "base" / f, OUT / f)
    (OUT / "config.json").write_text(cfg_text)
    names = [r[0] for r in rows]
    sd = real_state_dict(model, names)
    torch.save(sd, OUT / "pytorch_model.bin")
    zero_serialization_id(OUT / "pytorch_model.bin")
    with open(OUT / "expected_tensors.tsv", "w") as f:
        f.write("name\tdtype\tshape\treal_shape\n")
        for name, real_shape, dtype in rows:
            t = sd[name]
            want = {"F32": torch.float32, "I64": torch.int64}[dtype]
            assert t.dtype == want, (name, t.dtype, dtype)
            assert t.dim() == len(json.loads(real_shape)), (name, t.shape, real_shape)
            f.write(f"{name}\t{dtype}\t{json.dumps(list(t.shape))}\t{real_shape}\n")
    return sd


def check_file(sd: collections.OrderedDict, names: list[str]) -> None:
    """What torch.load gives back: the real key order, the storage sharing and the buffer."""
    back = torch.load(OUT / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert list(back) == names
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    pre = "text_decoder.cls.predictions."
    w = "text_decoder.bert.embeddings.word_embeddings.weight"
    assert back[pre + "decoder.bias"].data_ptr() == back[pre + "bias"].data_ptr()
    assert back[pre + "decoder.weight"].data_ptr() != back[w].data_ptr()
    assert torch.equal(back[pre + "decoder.weight"], back[w])
    pid = back["text_decoder.bert.embeddings.position_ids"]
    assert pid.dtype == torch.int64 and torch.equal(pid, torch.arange(512)[None])


# ---------------------------------------------------------------------------------------------
# Reference captions from transformers
def generate_case(model, processor, image, case, dtype=torch.float32):
    with_prompt, kwargs = CASES[case]
    if with_prompt:
        inputs = dict(processor(images=image, text=PROMPT_TEXT, return_tensors="pt"))
        inputs["input_ids"] = inputs["input_ids"].clone()  # generate writes bos into it
    else:
        inputs = dict(processor(images=image, return_tensors="pt"))
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs, output_scores=True, return_dict_in_generate=True)
    res = {"ids": out.sequences[0].tolist()}
    if kwargs.get("num_beams", 1) == 1:
        res["min_step_margin"] = min(
            float(torch.topk(s[0].float(), 2).values.diff().abs()) for s in out.scores
        )
    return res


def reference_captions(sd: collections.OrderedDict) -> dict:
    import PIL
    import transformers
    from PIL import Image
    from safetensors import safe_open
    from transformers import BlipForConditionalGeneration, BlipProcessor

    warnings.filterwarnings("ignore", message="Using the model-agnostic default")
    model = BlipForConditionalGeneration.from_pretrained(OUT).eval()
    # The same weights, the LM head tied to the word embeddings, position_ids ignored.
    loaded = model.state_dict()
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        assert torch.equal(loaded[k], v), k
    head = model.text_decoder.cls.predictions.decoder.weight
    assert head.data_ptr() == model.text_decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    # What save_pretrained (safetensors) writes for these weights: which names it leaves out.
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        with safe_open(Path(tmp) / "model.safetensors", "pt") as f:
            saved = set(f.keys())
    assert saved <= set(sd)
    left_out = sorted(set(sd) - saved)
    # The PIL backend (what transformers 4 did and blipq implements), also with torchvision.
    processor = BlipProcessor.from_pretrained(OUT, backend="pil")
    assert type(processor.image_processor).__name__ == "BlipImageProcessorPil", type(
        processor.image_processor
    )
    model64 = BlipForConditionalGeneration.from_pretrained(OUT).double().eval()
    tok = processor.tokenizer
    images = {}
    for name in IMAGES:
        im = Image.open(ROOT / "data" / "demo-eval" / name)
        im.load()
        entry = {"file": f"data/demo-eval/{name}"}
        for case, (with_prompt, kwargs) in CASES.items():
            r = generate_case(model, processor, im, case)
            r64 = generate_case(model64, processor, im, case, torch.float64)
            assert r64["ids"] == r["ids"], (name, case, r["ids"], r64["ids"])
            e = {"generate_kwargs": dict(kwargs)}
            if with_prompt:
                e["text"] = PROMPT_TEXT
            e["ids"] = r["ids"]
            e["caption"] = processor.decode(r["ids"], skip_special_tokens=True)
            # tokenizer.json alone (the tokenizers library) decodes the same way
            assert tok.backend_tokenizer.decode(r["ids"], skip_special_tokens=True) == e["caption"]
            e["stopped_at_sep"] = r["ids"][-1] == SEP_ID
            if "min_step_margin" in r:
                e["min_step_margin"] = r["min_step_margin"]
            entry[case] = e
        images[name] = entry
        print(f"  {name}: greedy {entry['greedy']['ids']} {entry['greedy']['caption']!r}")
    check_properties(images)
    decode_checks = []
    for ids in decode_check_ids(tok):
        text = processor.decode(ids, skip_special_tokens=True)
        assert tok.backend_tokenizer.decode(ids, skip_special_tokens=True) == text
        decode_checks.append({"ids": ids, "text": text})
        print(f"  decode {ids} -> {text!r}")
    return {
        "generator": "tools/make_real_layout.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "pillow_version": PIL.__version__,
        "seed": SEED,
        "sep_logit_bias_added": SEP_BIAS,
        "bos_token_id": BOS_ID,
        "sep_token_id": SEP_ID,
        "image_processor": type(processor.image_processor).__name__,
        "save_pretrained_leaves_out": left_out,
        "cases": {c: {"generate_kwargs": kw, "prompt": PROMPT_TEXT if wp else None} for c, (wp, kw) in CASES.items()},
        "notes": [
            "ids = BlipForConditionalGeneration.from_pretrained(real-bin).generate(**processor(...), **kwargs)"
            ".sequences[0]: the leading bos (30522) included, and the final [SEP] (102) when it stopped early.",
            "caption = processor.decode(ids, skip_special_tokens=True). The real tokenizer has no token "
            "30522: decoding drops the id (it is not '[UNK]').",
            "The same ids from a float64 copy of the model; min_step_margin = smallest top1-top2 gap of "
            "the processed scores over the greedy steps.",
        ],
        "images": images,
        "decode_checks": decode_checks,
    }


def decode_check_ids(tok) -> list[list[int]]:
    """Id sequences whose decoding the real tokenizer files decide: bos / [ENC] ids (30522, 30523)
    that the tokenizer does not have, punctuation and contractions (spaces cleaned up or not:
    tokenizer_config.json has no `clean_up_tokenization_spaces`), a leading `##` piece, `[unusedN]`
    and the special tokens."""
    words = tok.encode("a dog, sitting. it's the cat's toy! don't they?", add_special_tokens=False)
    unused = tok.convert_tokens_to_ids(["[unused262]", "##sam", "[CLS]", "[PAD]", "[MASK]", "[UNK]"])
    return [
        [BOS_ID] + words + [SEP_ID],
        [BOS_ID, 30523] + unused + [SEP_ID],
        [unused[1], BOS_ID] + words[:3],
    ]


def check_properties(images: dict) -> None:
    greedy = [images[n]["greedy"] for n in IMAGES]
    early = [g for g in greedy if g["stopped_at_sep"]]
    assert 1 <= len(early) < len(greedy), "want some but not all greedy captions ending at [SEP]"
    assert len({tuple(g["ids"]) for g in greedy}) == len(greedy), "captions must differ"
    for n in IMAGES:
        for case, e in images[n].items():
            if isinstance(e, dict) and "min_step_margin" in e:
                assert e["min_step_margin"] >= MIN_GREEDY_MARGIN, (n, case, e["min_step_margin"])
        g = images[n]["greedy"]
        assert g["stopped_at_sep"] or len(g["ids"]) == 20, g
        assert images[n]["default"]["ids"][:20] == g["ids"]
        assert BOS_ID not in g["ids"][1:]
        assert "[UNK]" not in g["caption"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder with base/ and the tsv")
    ap.add_argument(
        "--no-transformers", action="store_true", help="keep expected.json as it is (torch only)"
    )
    args = ap.parse_args()
    real = args.real
    if not (real / "base" / "config.json").is_file():
        sys.exit(f"{real}/base/config.json not found (give --real)")
    rows = read_real_names(real)
    names = [r[0] for r in rows]
    cfg, cfg_text = make_config(real)
    model = build_model(cfg)
    old_expected = OUT / "expected.json"
    kept_expected = old_expected.read_bytes() if old_expected.is_file() else None
    sd = write_checkpoint(real, model, cfg_text, rows)
    check_file(sd, names)
    if args.no_transformers:
        if kept_expected is not None:
            (OUT / "expected.json").write_bytes(kept_expected)
            print("expected.json kept as it was (not re-checked: --no-transformers)")
    else:
        meta = reference_captions(sd)
        with open(OUT / "expected.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
    total = 0
    for p in sorted(OUT.iterdir()):
        total += p.stat().st_size
        print(f"  {p.relative_to(ROOT)}  {p.stat().st_size:,} bytes")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
