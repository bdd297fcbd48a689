#!/usr/bin/env python3
"""Record reference caption-metric values from the real `pycocoevalcap` for blipq's metrics tests.

Runs pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1, needs `java`), Bleu(4), Rouge and Cider
on a hand-written set of captions and writes tests/fixtures/metrics/cases.json with the inputs,
the tokenizer output per caption, per-image scores and corpus scores:

- "cases": small corpora (BLEU and CIDEr are corpus-level, so each case is evaluated on its own);
- "corpus": every image of every case evaluated together;
- "coco": a COCO annotations file + results file evaluated the way COCOEvalCap does with
  params["image_id"] = cocoRes.getImgIds() (METEOR and SPICE left out);
- "tokenizer": caption batches and the tokenizer's output, for tokenizer-only tests.

Usage: pip install pycocoevalcap  &&  python3 tools/record_metrics.py [output.json]
"""

import json
import os
import sys
import tempfile

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "metrics", "cases.json")

# Each case: (name, [(image_id, hypothesis, [references...]), ...]).
# Image ids are unique across cases so that all images can also be evaluated as one corpus.
CASES = [
    ("plain_coco_style", [
        (1, "a man riding a wave on top of a surfboard",
         ["A man riding a wave on top of a surfboard.", "A surfer is riding a large wave in the ocean.",
          "a person on a surfboard riding a wave", "A man on a surfboard rides a wave.",
          "Surfer riding the crest of a big ocean wave."]),
        (2, "a plate of food with broccoli and rice",
         ["A plate of food with broccoli, rice and meat.", "A white plate topped with rice and broccoli.",
          "a dinner plate with chicken , rice, and broccoli", "Rice, broccoli and meat on a plate.",
          "A close up of a plate of food with vegetables."]),
        (3, "a giraffe standing next to a tree",
         ["A giraffe standing next to a tall tree.", "A tall giraffe eating leaves off of a tree",
          "a giraffe is standing by some trees", "The giraffe is reaching up to eat from the tree.",
          "A giraffe in a zoo enclosure near trees."]),
        (4, "two dogs playing in the snow",
         ["Two dogs play in the snow.", "Two dogs are running through the deep snow.",
          "a couple of dogs playing in a snowy field", "Two brown dogs chasing each other in snow",
          "Dogs frolic in the snow on a winter day."]),
    ]),
    ("punctuation", [
        (10, "a sign that says stop.", ["A \"STOP\" sign on a pole.", "A red stop sign; it's on a street corner!",
                                       "Stop sign -- next to a road...", "a stop sign (red) near trees?"]),
        (11, "a bus, parked on the street!", ["A bus is parked on the street.", "A city bus: parked at the curb",
                                             "a bus parked on a street , next to a building"]),
        (12, "people walking ... on a beach", ["People walking on a beach...", "Some people walk along the beach -- at sunset.",
                                              "A group of people on the beach; walking."]),
        (13, "a cat sitting on a couch ?!", ["A cat sitting on a couch?", "The cat sits on the sofa!!",
                                             "A cat (black and white) rests on a couch."]),
    ]),
    ("contractions_possessives", [
        (20, "a dog's toy on the floor", ["The dog's toy is on the floor.", "A dog toy lying on a wooden floor",
                                          "the dogs' toys are on the floor"]),
        (21, "it's a man who doesn't wear a hat", ["It's a man who isn't wearing a hat.", "A man that doesn't have a hat on.",
                                                   "He's not wearing a hat, he can't find it."]),
        (22, "the children's books on a shelf", ["The children's books are on the shelf.", "Books for kids on a shelf",
                                                 "James' books and the boss's books on shelves"]),
        (23, "i'm sure they're eating pizza", ["They're eating pizza, I'm sure.", "We've got people who'll eat pizza",
                                               "You'd see they won't stop eating pizza", "People cannot stop eating pizza."]),
    ]),
    ("case_and_repetition", [
        (30, "A DOG RUNNING ON THE GRASS", ["a dog running on the grass", "A Dog Runs On Green Grass.", "A DOG IN A FIELD"]),
        (31, "a a a a dog dog dog", ["a dog", "a dog and a cat", "the dog"]),
        (32, "the the the the", ["the cat is on the mat", "a cat on a mat"]),
        (33, "Banana banana BANANA bananas", ["A bunch of bananas.", "Bananas on a table", "ripe banana bananas"]),
    ]),
    ("hyphens_numbers", [
        (40, "a 3-year-old boy with a well-known toy", ["A 3-year-old boy playing with a toy.", "A well-known toy and a three year old boy",
                                                      "A little boy, age 3, with a hand-made toy"]),
        (41, "a clock that reads 10:30 and 3.5 miles", ["A clock reading 10:30 on a tower.", "The clock shows 10:30 p.m.",
                                                       "A clock 3.5 feet tall at 10:30"]),
        (42, "1,000 people in the U.S. at $5 each", ["About 1,000 people in the U.S. paying $5 each.", "A crowd of 1000 people",
                                                     "Many people, 50% of them from the U.S.A."]),
        (43, "a double-decker bus on a two-lane road", ["A red double-decker bus on a two-lane road.", "Double decker bus driving down a road",
                                                        "A double - decker bus -- on the road"]),
        (44, "a man in a t-shirt eating 2 1/2 hot-dogs", ["A man in a T-shirt eats 2 1/2 hot dogs.", "A man eating hot-dogs at 5 pm",
                                                         "guy wearing a t-shirt with two hot dogs"]),
    ]),
    ("short_and_empty", [
        (50, "", ["A man on a horse.", "A person riding a horse."]),
        (51, "dog", ["A dog.", "a black dog", "Dog sitting on grass"]),
        (52, "a", ["a cat"]),
        (53, "...", ["Nothing to see here.", "An empty room."]),
        (54, "a cat on a bed", ["A cat on a bed."]),
    ]),
    ("reference_counts", [
        (60, "a train at the station", ["A train at the station."]),
        (61, "a train at the station", ["A train at the station.", "A train waiting at a platform."]),
        (62, "a train at the station", ["A train at the station.", "A train waiting at a platform.", "The train is stopped at the station"]),
        (63, "a train at the station", ["A train at the station.", "A train waiting at a platform.", "The train is stopped at the station",
                                        "A passenger train pulling into a station."]),
        (64, "a train at the station", ["A train at the station.", "A train waiting at a platform.", "The train is stopped at the station",
                                        "A passenger train pulling into a station.", "A yellow and blue train at a stop."]),
    ]),
    ("string_ids_and_quotes", [
        ("img_a", "a woman holding an umbrella in the rain", ["A woman holding an 'umbrella' in the rain.",
                                                              "A lady with a \u201cbig\u201d umbrella walks in the rain",
                                                              "She\u2019s holding an umbrella; it\u2019s raining"]),
        ("img_b", "a kitchen with a stove and a refrigerator", ["A kitchen with a stove & a refrigerator.",
                                                                "A small kitchen [with appliances] and a fridge",
                                                                "a kitchen with stove {gas} and refrigerator"]),
        ("img_c", "an elephant walking through the grass", ["An elephant walking through tall grass.",
                                                            "An elephant walks in a grassy field",
                                                            "The elephant's trunk is raised"]),
    ]),
    ("sentence_boundaries", [
        (70, "a sign with the letter t", ["A sign with the letter T.", "The sign shows a big T.",
                                          "A white sign with a letter T. A man stands near it", "Letter A."]),
        (71, "a shirt from the u.s.", ["A shirt made in the U.S.", "A man wearing a shirt from the U.S.",
                                       "The U.S. shirt. It is blue."]),
        (72, "mr. smith at st. louis", ["Mr. Smith is in St. Louis.", "Dr. Jones and Mr. Smith in St. Louis, etc.",
                                        "Two men in the city of St. Louis"]),
    ]),
    ("misc_symbols", [
        (80, "a man with a laptop @ home", ["A man with a laptop at home.", "A man using a laptop @home",
                                            "A man & his laptop #1"]),
        (81, "a cafe with a resume on the table", ["A caf\u00e9 with a r\u00e9sum\u00e9 on the table.",
                                                  "A resume on a cafe table", "na\u00efve art in a caf\u00e9"]),
        (82, "a man in a  blue   shirt", ["A man in a blue shirt.", "  A man wearing a blue shirt  ",
                                          "a\tman in a blue\tshirt"]),
        (83, "a phone number on a sign", ["A sign with the number 555-1234.", "A phone number (555) 123-4567 on a sign",
                                          "A sign: call 1-800-555-0199 now!"]),
    ]),
    ("identical", [
        (90, "a red car parked on the street", ["a red car parked on the street"]),
        (91, "a blue boat in the water", ["a blue boat in the water", "A blue boat in the water."]),
        (92, "a yellow kite in the sky", ["a yellow kite in the sky", "a kite flying in the sky"]),
    ]),
]

# Extra caption batches for tokenizer-only tests (each batch is tokenized in one call, like
# pycocoevalcap does for all references of an evaluation, so later lines give context).
TOKENIZER_BATCHES = [
    ["A man's dog don't can't won't I'm they're we've you'll he'd.",
     "The colour of the grey centre is well-known (very) [bracket] {brace}.",
     "He paid $3.50 for 1,000 apples 3.5 times 50% of U.S. items... wow!",
     "\"Quoted\" and 'single' quotes -- dash \u2014 em \u2013 en \u2026 ellipsis",
     "AT&T a & b 1/2 a/b * star #hash @at",
     "in the U.S.",
     "Mr. Smith goes to Washington. Dr. Who",
     "cannot gonna wanna gotta lemme 'tis 'twas",
     "kids' toys the Joneses' house o'clock rock'n'roll",
     "e-mail x-ray 3-year-old 10:30 5pm 5 p.m. 1990s '90s",
     "a  man   with\t\ttabs"],
    ["a T.", "A man", "a T.", "a man", "the letter I.", "The end", "etc.", "The", "in U.S.", "", "x", ""],
    ["It's a \"big\" day, isn't it?", "a sign that says 'STOP'", "'A quote at start'", "He said 'hello'",
     "Y'all c'mon ma'am O'Neil d'Avignon l'amour", "A-frame house, T-shirt, x-ray, e-mail, 4x4 truck, 2-3 people",
     "100% sure, $100, #1, @home", "ok!!! really?? what?!", "a man ... a woman . . . a child",
     "a man\u2019s hat and \u201csmart quotes\u201d and \u2018single\u2019", "50-50 chance, 1990-2000, -5 degrees, +5",
     "U.K. U.S.A. e.g. i.e. vs. etc. Inc. Co. St. Dr. Mrs. Jr. Ave. Mt.", "fig. 3 no. 5 ca. 1900",
     "5'10\" 6' tall 12\" pizza", "two-thirds 1/3 1/2-inch 3/4 \u00bd \u00bc", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00dcber",
     ":) ;) :-( <3 >> <b>bold</b>", "c++ and c# code in foo.py and photo.jpg", "john@example.com and www.example.com",
     "A   dog \u00a0 runs", "\u00a3 5 \u20ac 10 \u00a2 \u00a5"],
]


def score_all(gts, res):
    """Bleu/Rouge/Cider as COCOEvalCap.evaluate runs them; returns (corpus, per-image) dicts."""
    corpus, per_image = {}, {k: {} for k in gts}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        if isinstance(scorer, Bleu):
            score, scores = scorer.compute_score(gts, res, verbose=0)
        else:
            score, scores = scorer.compute_score(gts, res)
            score, scores = [score], [scores]
        for name, s, per in zip(names, score, scores):
            corpus[name] = float(s)
            for image_id, v in zip(gts.keys(), per):
                per_image[image_id][name] = float(v)
    return corpus, per_image


def evaluate_images(images):
    """Tokenize (refs in one batch, hyps in another, in image order) and score."""
    tokenizer = PTBTokenizer()
    gts = {img_id: [{"caption": r} for r in refs] for img_id, _, refs in images}
    res = {img_id: [{"caption": hyp}] for img_id, hyp, _ in images}
    gts_tok = tokenizer.tokenize(gts)
    res_tok = tokenizer.tokenize(res)
    corpus, per_image = score_all(gts_tok, res_tok)
    out = []
    for img_id, hyp, refs in images:
        out.append({
            "image_id": img_id,
            "hypothesis": hyp,
            "references": refs,
            "tokenized_hypothesis": res_tok[img_id][0],
            "tokenized_references": gts_tok[img_id],
            "scores": per_image[img_id],
        })
    return {"scores": corpus, "images": out}


def coco_case():
    """A COCO annotations/results pair evaluated as COCOEvalCap does (minus METEOR and SPICE)."""
    images, annotations = [], []
    ann_id = 1
    # The "images" order differs from the results order and from the annotation order on purpose.
    all_images = [img for _, imgs in CASES[:4] for img in imgs]
    for img_id, _, refs in reversed(all_images):
        images.append({"id": img_id, "file_name": "%s.jpg" % img_id})
    images.append({"id": 999, "file_name": "no_result.jpg"})  # has references but no result: ignored
    for img_id, _, refs in all_images:
        for r in refs:
            annotations.append({"id": ann_id, "image_id": img_id, "caption": r})
            ann_id += 1
    annotations.append({"id": ann_id, "image_id": 999, "caption": "An image nobody captioned."})
    results = [{"image_id": img_id, "caption": hyp} for img_id, hyp, _ in all_images]
    results = results[1::2] + results[0::2]
    ann_json = {"info": {"description": "blipq metrics fixture"}, "images": images, "annotations": annotations}

    with tempfile.TemporaryDirectory() as d:
        ann_path = os.path.join(d, "annotations.json")
        res_path = os.path.join(d, "results.json")
        with open(ann_path, "w") as f:
            json.dump(ann_json, f)
        with open(res_path, "w") as f:
            json.dump(results, f)
        coco = COCO(ann_path)
        coco_res = coco.loadRes(res_path)
    # COCOEvalCap.evaluate with params['image_id'] = cocoRes.getImgIds()
    img_ids = coco_res.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in img_ids}
    res = {i: coco_res.imgToAnns[i] for i in img_ids}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    corpus, per_image = score_all(gts, res)
    return {
        "annotations": ann_json,
        "results": results,
        "image_order": img_ids,
        "scores": corpus,
        "per_image": [dict(image_id=i, **per_image[i]) for i in img_ids],
    }


def tokenizer_batches():
    tokenizer = PTBTokenizer()
    out = []
    for batch in TOKENIZER_BATCHES:
        tok = tokenizer.tokenize({0: [{"caption": c} for c in batch]})
        out.append({"captions": batch, "tokenized": tok[0]})
    return out


def main():
    cases = []
    for name, images in CASES:
        r = evaluate_images(images)
        r["name"] = name
        cases.append(r)
    all_images = [img for _, imgs in CASES for img in imgs]
    corpus = evaluate_images(all_images)
    fixture = {
        "generator": "tools/record_metrics.py",
        "pycocoevalcap": "1.2 (Stanford CoreNLP 3.4.1 PTBTokenizer)",
        "cases": cases,
        "corpus": {"scores": corpus["scores"], "per_image": [dict(image_id=i["image_id"], **i["scores"]) for i in corpus["images"]]},
        "coco": coco_case(),
        "tokenizer": tokenizer_batches(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    n = len(all_images)
    print("wrote %s: %d cases, %d images, corpus %s" % (OUT, len(cases), n, json.dumps(corpus["scores"])))


if __name__ == "__main__":
    main()
