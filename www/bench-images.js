// The benchmark's own-images set: images the user picks, with reference captions from a COCO
// captions file (read by the engine's `benchItems`, the parser of `blipq bench --annotations`) or
// typed next to each image, one per line. `ownBenchSet()` gives the benchmark its items (file,
// image_id, references: the engine's BenchItem) and the image files in the same order.
import { $, el, showMessage } from "./dom.js";

let bindings = null;
/** [{name, file, references: string[], imageId}] in the order picked. */
let images = [];
/** The captions file's items by file name, and its name. */
let captions = null;

export function setupOwnImages(b) {
  bindings = b;
  const showOwn = () => {
    $("bench-own").hidden = !$("bench-set-own").checked;
  };
  $("bench-set-own").addEventListener("change", showOwn);
  $("bench-set-eval").addEventListener("change", showOwn);
  $("bench-images").addEventListener("change", (e) => {
    addImages([...e.target.files]);
    e.target.value = "";
  });
  $("bench-captions").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) await readCaptions(file);
  });
}

/** Whether the benchmark runs over the user's images. */
export const usingOwnImages = () => $("bench-set-own").checked;

function addImages(files) {
  const taken = new Set(images.map((i) => i.name));
  for (const file of files) {
    if (file.type && !file.type.startsWith("image/")) {
      showMessage(`${file.name} is not an image (its type is ${file.type}); it was not added.`);
      continue;
    }
    try {
      bindings.checkFileSize("image", file.name, file.size);
    } catch (e) {
      showMessage(`${e.message}; it was not added.`);
      continue;
    }
    // Two picks with one name (from different folders) get distinct names in the report.
    let name = file.name;
    for (let k = 2; taken.has(name); k++) name = `${file.name.replace(/(\.[^.]*)?$/, `-${k}$1`)}`;
    taken.add(name);
    images.push({ name, file, references: [], imageId: null });
  }
  applyCaptions();
  render();
}

async function readCaptions(file) {
  try {
    // Over the engine's cap for a captions file (`blipq bench --annotations`'s): refused unread.
    bindings.checkFileSize("annotations", file.name, file.size);
    const items = bindings.benchItems(await file.text(), file.name);
    captions = { name: file.name, byFile: new Map(items.map((i) => [i.file.split("/").at(-1), i])) };
    applyCaptions();
    render();
    const matched = images.filter((i) => i.imageId !== null).length;
    showMessage(
      `${file.name}: captions for ${items.length} image${items.length === 1 ? "" : "s"}; ` +
        `${matched} of the ${images.length} picked image${images.length === 1 ? "" : "s"} matched by file name.`,
      "notice",
    );
  } catch (e) {
    showMessage(`Could not read the captions file ${file.name}: ${e.message}`);
  }
}

/** References and ids from the captions file, for images whose file name it lists. */
function applyCaptions() {
  for (const im of images) {
    const item = captions?.byFile.get(im.file.name);
    if (item && im.imageId === null) {
      im.imageId = item.image_id;
      if (!im.references.length) im.references = [...item.references];
    }
  }
}

function render() {
  const list = $("bench-own-list");
  list.replaceChildren();
  images.forEach((im, i) => {
    const id = `own-refs-${i}`;
    const refs = el("textarea", {
      id,
      rows: 2,
      "data-image": im.name,
      placeholder: "reference captions, one per line (optional)",
    });
    refs.value = im.references.join("\n");
    refs.addEventListener("input", () => {
      im.references = refs.value.split("\n").map((l) => l.trim()).filter(Boolean);
    });
    const img = el("img", { src: URL.createObjectURL(im.file), alt: "", width: 48, height: 48 });
    list.append(
      el(
        "div",
        { class: "own-item", "data-image": im.name },
        img,
        el("label", { for: id, text: im.name }),
        refs,
        el("button", {
          type: "button",
          class: "secondary",
          "aria-label": `Remove ${im.name}`,
          text: "×",
          onclick: () => {
            images.splice(i, 1);
            render();
          },
        }),
      ),
    );
  });
}

/**
 * The own-images set for a run: {items, files, description}; throws when no image is picked.
 * Images without an id in a captions file get their name as id, so typed references are scored.
 */
export function ownBenchSet() {
  if (!images.length) throw new Error("pick the images to benchmark first (Choose images…)");
  // A run holds every image at once: the engine's cap on their total.
  const total = images.reduce((sum, im) => sum + im.file.size, 0);
  bindings.checkFileSize("benchmark images", `the ${images.length} images picked`, total);
  const items = images.map((im) => ({
    file: im.name,
    image_id: im.imageId ?? im.name,
    references: im.references,
  }));
  const scored = items.filter((i) => i.references.length).length;
  return {
    items,
    files: images.map((im) => im.file),
    description: `${items.length} image${items.length === 1 ? "" : "s"} of yours (${scored} with reference captions)`,
  };
}
