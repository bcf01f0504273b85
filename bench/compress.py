"""Compression of MNIST under a VQ model's learned prior, against PNG, JPEG and WebP.

Stage 1 and 2 as bench/vqvae.py trains them (vqvae defaults with EMA + dead-code restart: hidden 64,
K = 512 codes of D = 64, 7x7 code maps, logistic likelihood; --steps steps of 100 images, then the
default gated PixelCNN prior for --prior-steps steps of 100 code maps), and a `vqvae2` beside it
(defaults, 4x4 top and 8x8 bottom maps, --steps steps; its prior a gated PixelCNN over both levels,
cheaper than the default PixelSNAIL, --prior-steps steps). Then, on the first --n MNIST test images:
  - `aezoo compress` / `aezoo decompress` (aezoo.compress): the .aez file's size in bits per image
    against the prior's cross-entropy -log2 p(codes) of the same codes (the gap: coder overhead and
    header), the time to compress and to decompress, and a check that the decoded codes are the
    encoded ones;
  - PSNR of the decoded images (the decoder's mean, clipped to [0, 1] and rounded to 8 bits, as the
    PNGs that decompress writes) against bytes per image;
  - PNG (lossless, Pillow optimize=True), WebP lossless, and JPEG (optimize=True) and WebP (method 6)
    at 18-19 qualities from 0/1 to 100 (`QUALITIES`), each image compressed alone by Pillow, in bytes
    per image and PSNR; aezoo's bytes are compared with what JPEG and WebP need for the same PSNR
    (interpolated linearly between their two qualities around it);
  - `aezoo encode` throughput (images/s of the code indices of the test split);
  - retrieval precision@10 (`aezoo.evaluation.retrieval`) of the codes of each family (a vae and an
    ae trained here with their defaults, 1,000 steps, beside the VQ models) against the pixels.
Results in compress.json, the rate-distortion plot in compress_rd.png. Torch runs on one thread.

    OMP_NUM_THREADS=1 .venv/bin/python bench/compress.py [--n 10000] [--out runs/bench_compress]
    (--train-only: stop after training the models)

The committed compress.json (all 10,000 test images; training 2,190 s, measuring ~45 min on the
shared 2-core machine): vqvae 24.8 bytes per image (198.7 bits against a cross-entropy of 198.6:
the file is 0.056% above it, the 152-byte header 0.061%, the coder 0.005% below: its 24-bit
quantised probabilities fit these codes marginally better than the float64 ones), PSNR 24.9 dB;
vqvae2 45.1 bytes (0.035% above its cross-entropy), PSNR 24.9 dB. At the same PSNR JPEG needs
270 bytes and WebP 112 bytes per image: the vqvae file is 0.09x JPEG's and 0.22x WebP's, the
vqvae2 file 0.17x and 0.40x (PNG, lossless: 274 bytes). The comparison is of one file of 10,000
images against 10,000 files: JPEG (~200 bytes of headers and tables) and WebP (~30) pay their
headers per image, aezoo its 152 bytes once; a lone image in its own .aez file costs ~177 bytes.
Compressing took 388 s (vqvae, 26 images/s) and 682 s (vqvae2), decompressing 413 s and 648 s:
the prior runs once per code position in float64 (aezoo.compress). `aezoo encode` of the test
split: 2,900 (vqvae) and 2,300 (vqvae2) images/s. Retrieval precision@10 (first 2,000 test
queries, 10,000 training images), Euclidean / cosine: pixels 0.866 / 0.888, vae 0.859 / 0.864,
ae 0.875 / 0.886, vqvae 0.905 / 0.908, vqvae2 0.906 / 0.910.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from aezoo.config import make_run_config
from aezoo.registry import entry
from aezoo.train import train
from aezoo.train_prior import train_prior
from common import write_result

HERE = Path(__file__).parent
MODELS = {
    "vqvae": {"model": "vqvae", "config": {"codebook_update": "ema", "restart_after": 50}, "prior": None},
    "vqvae2": {"model": "vqvae2", "config": {}, "prior": "pixelcnn"},
}


def train_models(args) -> dict:
    """Each model and its prior in --out/NAME, trained unless already there; the wall times."""
    out = Path(args.out)
    timings_file = out / "timings.json"
    wall = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for name, spec in MODELS.items():
        if name not in args.models:
            continue
        folder = out / name
        if not (folder / "model.safetensors").exists():
            started = time.perf_counter()
            tree = {"model": spec["config"], "data": {"name": "mnist"},
                    "train": {"steps": args.steps, "batch_size": 100, "val_every": args.steps, "progress": False}}
            train(make_run_config(spec["model"], entry(spec["model"]).config_class, tree), folder)
            wall[f"{name}_stage1_s"] = round(time.perf_counter() - started, 1)
            timings_file.write_text(json.dumps(wall))
        if not (folder / "prior" / "model.safetensors").exists():
            started = time.perf_counter()
            train_prior(folder, spec["prior"], steps=args.prior_steps,
                        overrides=[f"train.val_every={args.prior_steps}", "train.progress=false"])
            wall[f"{name}_prior_s"] = round(time.perf_counter() - started, 1)
            timings_file.write_text(json.dumps(wall))
        print(f"trained {name}: {wall}", flush=True)
    return wall



# --- measurements ------------------------------------------------------------------------------------
def psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-12))


def pixel_psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR of 8-bit images from the mean squared error over every pixel of the set (as aezoo eval's psnr)."""
    diff = (original.astype(np.float64) - decoded.astype(np.float64)) / 255
    return psnr(float((diff**2).mean()))


def codec_point(pixels: np.ndarray, fmt: str, **options) -> dict:
    """Each image (H, W) uint8 compressed alone by Pillow: bytes per image and PSNR of the decoded set."""
    from PIL import Image

    sizes, decoded = [], []
    for a in pixels:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt, **options)
        sizes.append(buf.tell())
        buf.seek(0)
        decoded.append(np.asarray(Image.open(buf).convert("L")))
    out = {"bytes_per_image": float(np.mean(sizes)), "psnr": pixel_psnr(pixels, np.stack(decoded))}
    if out["psnr"] >= 100:  # lossless
        out["psnr"] = None
    return out


QUALITIES = (0, 1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95, 100)  # JPEG from 1


def baselines(pixels: np.ndarray) -> dict:
    started = time.perf_counter()
    out = {
        "png": codec_point(pixels, "PNG", optimize=True),
        "webp_lossless": codec_point(pixels, "WEBP", lossless=True, quality=100, method=6),
        "jpeg": [{"quality": q, **codec_point(pixels, "JPEG", quality=q, optimize=True)} for q in QUALITIES[1:]],
        "webp": [{"quality": q, **codec_point(pixels, "WEBP", quality=q, method=6)} for q in QUALITIES],
    }
    print(f"baselines: {time.perf_counter() - started:.0f} s", flush=True)
    return out


def bytes_at_psnr(curve: list[dict], target: float) -> float | None:
    """The bytes per image a codec needs for PSNR >= target: the cheapest setting that reaches it, or the
    linear interpolation between the two settings around it on the curve's convex-in-bytes order."""
    points = sorted((p["bytes_per_image"], p["psnr"]) for p in curve if p["psnr"] is not None)
    best = None
    for (b0, q0), (b1, q1) in zip(points, points[1:]):
        if q0 < target <= q1:
            b = b0 + (b1 - b0) * (target - q0) / (q1 - q0)
            best = b if best is None else min(best, b)
    reached = [b for b, q in points if q >= target]
    if reached:
        best = min(reached) if best is None else min(best, min(reached))
    return best


def measure_model(name: str, folder: Path, pixels: np.ndarray, args) -> dict:
    import aezoo
    from aezoo import compress
    from aezoo.embed import Examples, encode_dataset, encode_examples

    model = aezoo.load(folder)
    n = len(pixels)
    images = torch.from_numpy(pixels).float().unsqueeze(1) / 255
    started = time.perf_counter()
    result = compress.compress_images(model, images, run=folder)
    compress_s = time.perf_counter() - started
    out_file = Path(args.out) / f"{name}_test{n}.aez"
    out_file.write_bytes(result.data)
    started = time.perf_counter()
    back = compress.decompress_bytes(result.data, model)
    decompress_s = time.perf_counter() - started
    codes = compress.image_codes(model, images)
    identical = all(torch.equal(a, b) for a, b in zip(codes, back.codes))
    decoded = compress.to_uint8(back.images)[..., 0]
    with torch.no_grad():
        float_mse = float(((back.images - images) ** 2).mean())
    bits = 8 * len(result.data)
    ce = result.cross_entropy_bits
    header_bits = 8 * result.header_bytes
    # encode throughput: `aezoo encode` of the 10,000 test images (data loading included, and without)
    started = time.perf_counter()
    fields = encode_dataset(folder, split="test", show_progress=False)
    encode_wall = time.perf_counter() - started
    test = torch.from_numpy(fields_pixels(args))
    started = time.perf_counter()
    encode_examples(model, Examples(test.unsqueeze(1), 255.0), show_progress=False)
    encode_s = time.perf_counter() - started
    levels = [(lv.name, lv.codebook_size, *lv.shape) for lv in model.code_levels()]
    out = {
        "code_levels": levels,
        "images": n,
        "file_bytes": len(result.data),
        "bytes_per_image": len(result.data) / n,
        "bits_per_image": bits / n,
        "cross_entropy_bits_per_image": ce / n,
        "header_bytes": result.header_bytes,
        "gap_percent": 100 * (bits - ce) / ce,
        "gap_header_percent": 100 * header_bits / ce,
        "gap_coder_percent": 100 * (bits - header_bits - ce) / ce,
        "bits_per_dim_codes": ce / n / 784,
        "psnr": pixel_psnr(pixels, decoded),
        "psnr_float": psnr(float_mse),
        "codes_identical": identical,
        "compress_s": compress_s,
        "decompress_s": decompress_s,
        "compress_images_per_s": n / compress_s,
        "decompress_images_per_s": n / decompress_s,
        "encode_test_images": len(fields["label"]),
        "encode_images_per_s": len(test) / encode_s,
        "encode_dataset_wall_s": encode_wall,
        "file": str(out_file),
    }
    print(name, json.dumps(out), flush=True)
    return out


def cached(path: Path, compute):
    """A measurement kept in --out, so that a rerun (after a crash, or to redraw the plot) reuses it."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=1))
    return value


RETRIEVAL_MODELS = ("vae", "ae")  # trained here (their defaults, 1,000 steps of 100) beside the VQ models
RETRIEVAL_QUERIES = 2000


def retrieval_table(args) -> dict:
    """`aezoo eval`'s retrieval evaluator (precision@10 in code space and in pixel space, Euclidean and
    cosine) for each model family: the first RETRIEVAL_QUERIES test images as queries, the first 10,000
    training images searched (eval.probe_train)."""
    from aezoo.evaluation.base import EvalContext
    from aezoo.evaluation.retrieval import retrieval
    from aezoo.runfolder import load_run

    out = Path(args.out)
    for name in RETRIEVAL_MODELS:
        if not (out / name / "model.safetensors").exists():
            tree = {"data": {"name": "mnist"},
                    "train": {"steps": 1000, "batch_size": 100, "val_every": 1000, "progress": False}}
            train(make_run_config(name, entry(name).config_class, tree), out / name)
    table = {}
    for name in (*RETRIEVAL_MODELS, *args.models):
        model, ds, cfg, run = load_run(out / name, "test")
        ds.x["test"] = ds.x["test"][:RETRIEVAL_QUERIES]
        cfg.eval.probe_train = 10_000
        table[name] = retrieval(EvalContext(model, ds, cfg, "test", run))
        print(name, json.dumps(table[name]), flush=True)
    return table


_TEST_PIXELS = None


def fields_pixels(args) -> np.ndarray:
    """The 10,000 MNIST test images (N, 28, 28) uint8."""
    global _TEST_PIXELS
    if _TEST_PIXELS is None:
        from aezoo.config import DataConfig
        from aezoo.data import load_dataset

        _TEST_PIXELS = load_dataset(DataConfig(name="mnist")).x["test"][:, 0].numpy()
    return _TEST_PIXELS


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for codec, colour in (("jpeg", "tab:orange"), ("webp", "tab:green")):
        pts = sorted((p["bytes_per_image"], p["psnr"]) for p in result["baselines"][codec])
        name = {"jpeg": "JPEG", "webp": "WebP"}[codec]
        ax.plot([b for b, _ in pts], [q for _, q in pts], ".-", color=colour, markersize=4,
                label=f"{name} (Pillow, quality {'1' if codec == 'jpeg' else '0'}-100)")
    top = max(p["psnr"] for c in ("jpeg", "webp") for p in result["baselines"][c] if p["psnr"] is not None) + 2
    for codec, marker, label in (("png", "s", "PNG"), ("webp_lossless", "D", "WebP lossless")):
        b = result["baselines"][codec]["bytes_per_image"]
        ax.plot([b], [top], marker, color="tab:gray", label=f"{label} ({b:.0f} B; lossless, drawn at the top)")
    for (name, m), colour in zip(result["models"].items(), ("tab:red", "tab:purple")):
        ax.plot([m["bytes_per_image"]], [m["psnr"]], "*", color=colour, markersize=14,
                label=f"aezoo {name} + PixelCNN prior ({m['bytes_per_image']:.0f} B, {m['psnr']:.1f} dB)")
    ax.set_xscale("log")
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="bytes per image (log scale)", ylabel="PSNR (dB)",
           title=f"{result['n_images']:,} MNIST test images: a file per image (Pillow), one .aez for all")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)



def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--prior-steps", type=int, default=800)
    p.add_argument("--n", type=int, default=10000, help="test images compressed (the first N)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_compress")
    p.add_argument("--train-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    wall = train_models(args)
    if args.train_only:
        return
    pixels = fields_pixels(args)[: args.n]
    out = Path(args.out)
    result = {"n_images": len(pixels), "baselines": cached(out / f"baselines_{len(pixels)}.json",
                                                           lambda: baselines(pixels)), "models": {}}
    for name in args.models:
        result["models"][name] = cached(out / f"{name}_{len(pixels)}.json",
                                        lambda name=name: measure_model(name, out / name, pixels, args))
    result["retrieval"] = cached(out / f"retrieval_{RETRIEVAL_QUERIES}.json", lambda: retrieval_table(args))
    comparison = {}
    for name, m in result["models"].items():
        row = {"psnr": m["psnr"], "bytes_per_image": m["bytes_per_image"]}
        for codec in ("jpeg", "webp"):
            b = bytes_at_psnr(result["baselines"][codec], m["psnr"])
            row[f"{codec}_bytes_at_equal_psnr"] = b
            row[f"ratio_to_{codec}"] = None if b is None else m["bytes_per_image"] / b
        row["ratio_to_png"] = m["bytes_per_image"] / result["baselines"]["png"]["bytes_per_image"]
        comparison[name] = row
    result["comparison_at_equal_psnr"] = comparison
    plot(result, HERE / "compress_rd.png")
    write_result(__file__, {
        "budget": {"dataset": "mnist test split (8-bit grey 28x28)", "images_compressed": len(pixels),
                   "stage1_steps": args.steps, "prior_steps": args.prior_steps, "batch_size": 100,
                   "threads": args.threads},
        "model_specs": {name: MODELS[name] for name in args.models},
        "training_wall_s": wall,
        **result,
        "invocation_wall_s": round(time.perf_counter() - started, 1),
        "note": "measurements are cached in --out (baselines_N.json, MODEL_N.json, retrieval_2000.json) and reused by "
                "a later invocation, whose own wall time invocation_wall_s then is; the models' compress_s, "
                "decompress_s and encode times are those of the run that measured them, on a 2-core machine "
                "shared with other jobs",
    })


if __name__ == "__main__":
    main()
