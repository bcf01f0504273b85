"""The `aezoo` command (also `python -m aezoo`): the command-line contract of the README.

Mistakes a user can make end in one line on stderr and exit status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from importlib.metadata import version
from pathlib import Path

import torch.distributed as dist

from . import registry, zoo
from .config import merge, parse_overrides, read_config_file
from .errors import AezooError


def _cmd_models(args) -> None:
    width = max(map(len, registry.MODELS))
    for name, e in registry.MODELS.items():
        print(f"{name:<{width}}  {e.summary}  [default data: {e.default_data}]")


def _cmd_datasets(args) -> None:
    from .config import DataConfig
    from .data import DATASETS

    width = max(map(len, DATASETS))
    for name, info in DATASETS.items():
        where = info.where(DataConfig(name=name, dir=args.dir or ""))
        print(f"{name:<{width}}  {info.summary}\n{'':<{width}}  read from: {where}")


def _cmd_zoo(args) -> None:
    from .glossary import KEYS

    rows = []
    for e in zoo.entries():
        results = e.eval()
        numbers = [f"{k} {zoo.format_value(results[k])} {KEYS[k].unit if k in KEYS else ''}".rstrip()
                   for k in e.headline]
        rows.append((e.name, e.model, e.data, "; ".join(numbers), f"{e.size_bytes() / 1e6:.1f} MB"))
    head = ("name", "model", "data", "headline (aezoo eval on the test split)", "size")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    print(f"\nA name works as a RUN: aezoo sample NAME --out samples.png, aezoo eval NAME (on a copy in "
          f"./runs/zoo/NAME, the command that writes), aezoo.load('NAME') in Python. How each was made: "
          f"{zoo.ROOT}/NAME/README.md")


def _run_folder(run: str, writes: bool) -> Path:
    """The folder a RUN argument names: a path, or a zoo entry (its copy in ./runs/zoo when the command
    writes into the run folder; the package is never written to)."""
    return zoo.resolve_writable(run) if writes else zoo.resolve(run)


def _cmd_train(args) -> None:
    from .train import train

    entry = registry.entry(args.model)
    tree = read_config_file(args.config) if args.config else {}
    if tree.pop("model_name", args.model) != args.model:
        raise AezooError(f"{args.config} is a config for another model, not {args.model}")
    cli: dict = {"data": {"name": args.data}} if args.data else {}
    if "name" not in tree.get("data", {}) and not args.data:
        cli = {"data": {"name": entry.default_data}}
    for key, value in (("epochs", args.epochs), ("steps", args.steps), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            cli.setdefault("train", {})[key] = value
    if args.epochs is not None and args.steps is None:
        cli["train"]["steps"] = 0
    tree = merge(merge(tree, cli), parse_overrides(args.set))
    run = train(entry.run_config(tree), args.out)
    _say(f"trained {args.model}: {run.path}")


def _say(line: str) -> None:
    """Print on process 0 only (torchrun starts several)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(line)


def _cmd_train_prior(args) -> None:
    from .train_prior import train_prior

    run = train_prior(_run_folder(args.run, writes=True), args.prior, args.set, steps=args.steps, epochs=args.epochs)
    _say(f"trained prior: {run.path}")


def _cmd_resume(args) -> None:
    from .train import resume

    if zoo.is_name(args.run):  # a copy has no resume.pt: resuming would train the model again from step 0
        raise AezooError(f"{args.run} is a zoo entry, shipped without its training state: train a run of your own "
                         f"with the commands in {zoo.get(args.run).path / 'README.md'}")
    run = resume(args.run, epochs=args.epochs, steps=args.steps)
    if run is None:
        print(f"{args.run}: already finished; `aezoo resume {args.run} --epochs N` (or --steps N) trains it further")
    else:
        _say(f"trained: {run.path}")


def _cmd_config(args) -> None:
    from .config_reference import format_reference

    print(format_reference(args.model))


def _cmd_compare(args) -> None:
    from .compare import write_comparison

    print(f"wrote {write_comparison([_run_folder(r, writes=False) for r in args.runs], args.out)}")


def _cmd_eval(args) -> None:
    from .evaluation import evaluate

    run = _run_folder(args.run, writes=True)
    results = evaluate(run, args.split)
    notes = results.pop("notes", [])
    width = max(map(len, results))
    for key, value in results.items():
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            value = "[" + ", ".join(f"{v:.3g}" for v in value[:8]) + (", ...]" if len(value) > 8 else "]")
        elif isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key:<{width}}  {value}")
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {run / 'eval.json'}")


def _cmd_sample(args) -> None:
    import numpy as np
    import torch

    from .files import atomic_write_bytes
    from .models.capabilities import Generative
    from .plots import save_image_grid
    from .runfolder import load_run

    model, _, cfg, run = load_run(_run_folder(args.run, writes=args.out is None))
    if not isinstance(model, Generative):
        raise AezooError(f"{cfg.model_name} has no generative prior to sample from")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        samples = model.sample(args.n, 1.0 if args.temperature is None else args.temperature).cpu()
    if samples.dim() == 4:  # images (sequences come as strips of frames)
        out = Path(args.out) if args.out else run.path / "samples.png"
        save_image_grid(samples.clamp(0, 1), out)
    else:  # vectors: the numbers themselves
        out = Path(args.out) if args.out else run.path / "samples.npy"
        if out.suffix != ".npy":
            raise AezooError(f"{cfg.model_name} on {cfg.data.name} samples vectors, not images: --out must end in .npy")
        buf = io.BytesIO()
        np.save(buf, samples.numpy())
        atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}")


def _cmd_report(args) -> None:
    from .report import write_report
    from .visualise import write_plots

    run = _run_folder(args.run, writes=True)
    write_plots(run)
    print(f"wrote {write_report(run)}")


# --- using the codes: encode, reconstruct, interpolate, compress, decompress (aezoo.embed, aezoo.compress) ---
def _examples_of(args, loaded):
    """The image files of args.files, or the split of a dataset (args.data, args.split, args.limit, args.set)."""
    from .embed import data_config, dataset_examples, file_examples

    if args.limit is not None and args.limit < 1:
        raise AezooError("--limit must be at least 1")
    if args.files:
        if args.data or args.set or args.limit:
            raise AezooError("give image files or --data/--split/--limit/--set, not both")
        return file_examples(loaded, args.files)
    if loaded.cfg is None:
        raise AezooError("this model folder records no data: give image files")
    return dataset_examples(loaded.model, data_config(loaded.cfg, args.data, args.set), args.split, args.limit or 0)


def _cmd_encode(args) -> None:
    from .embed import check_output, encode_examples, load_model, write_fields

    out = check_output(args.out)  # a wrong suffix is refused before any work
    if args.batch_size < 1:
        raise AezooError("--batch-size must be at least 1")
    loaded = load_model(_run_folder(args.run, writes=False))
    fields = encode_examples(loaded.model, _examples_of(args, loaded), args.batch_size)
    write_fields(fields, out)
    n = len(next(iter(fields.values())))
    print(f"wrote {out}: {n} examples, " + ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in fields.items()))


def _cmd_reconstruct(args) -> None:
    from .embed import file_examples, load_model, reconstruct_grid
    from .plots import save_image_grid

    loaded = load_model(_run_folder(args.run, writes=args.out is None))
    ex = file_examples(loaded, args.files)
    images, per_row = reconstruct_grid(loaded.model, ex.batch(0, len(ex.raw), loaded.model.device))
    out = Path(args.out) if args.out else loaded.path / "reconstructions_of_files.png"
    save_image_grid(images, out, nrow=per_row)
    print(f"wrote {out}: originals above their reconstructions")


def _cmd_interpolate(args) -> None:
    from .embed import file_examples, interpolation_strip, load_model
    from .models.capabilities import CodeModel
    from .plots import save_image_grid

    loaded = load_model(_run_folder(args.run, writes=args.out is None))
    x = file_examples(loaded, [args.a, args.b]).batch(0, 2, loaded.model.device)
    strip = interpolation_strip(loaded.model, x[0], x[1], args.steps)
    out = Path(args.out) if args.out else loaded.path / "interpolation.png"
    save_image_grid(strip, out, nrow=len(strip))
    how = ("between the encoder's outputs before quantisation, each point quantised to its nearest codes"
           if isinstance(loaded.model, CodeModel) else "between the codes")
    print(f"wrote {out}: {args.a}, {args.steps} decodings along the line {how}, {args.b}")


def _cmd_compress(args) -> None:
    import torch

    from .compress import compress_images
    from .embed import load_model
    from .files import atomic_write_bytes

    out = Path(args.out)
    if not args.files and not args.data:
        raise AezooError("give image files to compress, or --data NAME [--split S] [--limit N] for a dataset")
    loaded = load_model(_run_folder(args.run, writes=False))
    ex = _examples_of(args, loaded)
    model = loaded.model
    images = torch.cat([ex.batch(i, 500, model.device) for i in range(-(-len(ex.raw) // 500))])
    result = compress_images(model, images, run=loaded.path)
    atomic_write_bytes(out, result.data)
    n = result.header.n
    print(f"wrote {out}: {n} images, {len(result.data)} bytes ({8 * len(result.data) / n:.1f} bits per image; "
          f"the prior's cross-entropy {result.cross_entropy_bits / n:.1f})")


def _cmd_decompress(args) -> None:
    from .compress import decompress_bytes, read_file, read_header, write_decompressed
    from .embed import load_model

    data = read_file(args.file)
    header, _ = read_header(data, args.file)
    run = args.run or header.run
    if not run:
        raise AezooError(f"{args.file} names no run folder: give --run RUN")
    loaded = load_model(_run_folder(run, writes=False))
    result = decompress_bytes(data, loaded.model, args.file)
    names = [lv.name for lv in loaded.model.code_levels()]
    out = write_decompressed(result, args.out, names)
    print(f"wrote {out}: {header.n} PNG images and codes.npz")


def _add_code_commands(sub) -> None:
    splits = ["test", "val", "train"]
    en = sub.add_parser("encode", help="the codes of a dataset split or of image files, as .npy, .npz or .parquet")
    en.add_argument("run")
    en.add_argument("--out", required=True, help="FILE.npy (codes only), FILE.npz or FILE.parquet (every field)")
    en.add_argument("--files", nargs="+", metavar="IMG", help="image files instead of a dataset")
    en.add_argument("--data", help="dataset name (default: the run's)")
    en.add_argument("--split", choices=splits, default="test")
    en.add_argument("--limit", type=int, help="the first N examples only")
    en.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings, e.g. data.dir=DIR")
    en.add_argument("--batch-size", type=int, default=500)
    en.set_defaults(fn=_cmd_encode)

    rc = sub.add_parser("reconstruct", help="image files through a run's model: originals above reconstructions")
    rc.add_argument("run")
    rc.add_argument("files", nargs="+", metavar="FILE")
    rc.add_argument("--out", help="PNG file (default RUN/reconstructions_of_files.png)")
    rc.set_defaults(fn=_cmd_reconstruct)

    ip = sub.add_parser("interpolate", help="decodings along the line between the codes of two image files")
    ip.add_argument("run")
    ip.add_argument("a")
    ip.add_argument("b")
    ip.add_argument("--steps", type=int, default=10, help="decodings, both ends included (default 10)")
    ip.add_argument("--out", help="PNG file (default RUN/interpolation.png)")
    ip.set_defaults(fn=_cmd_interpolate)

    cp = sub.add_parser("compress", help="images coded under a vqvae/vqvae2 run's prior into one .aez file")
    cp.add_argument("run")
    cp.add_argument("files", nargs="*", metavar="FILE", help="image files (or --data for a dataset split)")
    cp.add_argument("--out", required=True, help="the .aez file")
    cp.add_argument("--data", help="a dataset's split instead of files (the run's dataset: --data with its name)")
    cp.add_argument("--split", choices=splits, default="test")
    cp.add_argument("--limit", type=int, help="the first N images of the split")
    cp.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings, e.g. data.dir=DIR")
    cp.set_defaults(fn=_cmd_compress)

    dp = sub.add_parser("decompress", help="decode an .aez file: PNG images and codes.npz in a new folder")
    dp.add_argument("file")
    dp.add_argument("--out", required=True, help="the folder to create")
    dp.add_argument("--run", help="the run folder (default: the one recorded in the file)")
    dp.set_defaults(fn=_cmd_decompress)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aezoo", description="The autoencoder family: train, evaluate, sample, report.")
    p.add_argument("--version", action="version", version=f"aezoo {version('aezoo')}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("models", help="the models, one line each").set_defaults(fn=_cmd_models)
    d = sub.add_parser("datasets", help="the datasets and where each is read from")
    d.add_argument("--dir", help="a data folder to look in")
    d.set_defaults(fn=_cmd_datasets)
    sub.add_parser("zoo", help="the trained models shipped with aezoo, usable by name as a RUN").set_defaults(
        fn=_cmd_zoo)

    cf = sub.add_parser("config", help="every config key of a model's run: default, allowed values, meaning")
    cf.add_argument("model")
    cf.set_defaults(fn=_cmd_config)

    t = sub.add_parser("train", help="train a model into a new run folder",
                       epilog="Every key --set takes: aezoo config MODEL.")
    t.add_argument("model")
    t.add_argument("--out", required=True, help="the run folder to create")
    t.add_argument("--data", help="dataset name (default: the model's)")
    t.add_argument("--config", help="a TOML or JSON file with model/data/train/eval sections")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.beta=4")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    t.set_defaults(fn=_cmd_train)

    tp = sub.add_parser("train-prior", help="stage 2 of vqvae/vqvae2: a prior over the run's code maps, in RUN/prior")
    tp.add_argument("run")
    tp.add_argument("--prior", help="which prior (default: the model's own, pixelcnn for vqvae)")
    tp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="prior.key=value for the prior, train.key=value for its training")
    g = tp.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps", type=int)
    tp.set_defaults(fn=_cmd_train_prior)

    r = sub.add_parser("resume", help="continue an interrupted run, or train a finished one further")
    r.add_argument("run")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="the run's budget becomes this many epochs in all")
    g.add_argument("--steps", type=int, help="the run's budget becomes this many steps in all")
    r.set_defaults(fn=_cmd_resume)

    e = sub.add_parser("eval", help="evaluate a run: writes RUN/eval.json")
    e.add_argument("run")
    e.add_argument("--split", choices=["test", "val", "train"])
    e.set_defaults(fn=_cmd_eval)

    s = sub.add_parser("sample", help="draw samples from a run's model")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", help="PNG file (default RUN/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float,
                   help="T < 1 gives more typical samples: the prior's logits divided by T (vqvae, vqvae2), "
                        "the latent noise scaled by T (vae, beta_vae, tdvae); default 1")
    s.set_defaults(fn=_cmd_sample)

    rp = sub.add_parser("report", help="write RUN/report.html with the run's plots and numbers")
    rp.add_argument("run")
    rp.set_defaults(fn=_cmd_report)

    cm = sub.add_parser("compare", help="runs side by side: numbers, loss curves, pictures, in one HTML page")
    cm.add_argument("runs", nargs="+", metavar="RUN")
    cm.add_argument("--out", required=True, help="the HTML file to write")
    cm.set_defaults(fn=_cmd_compare)
    _add_code_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    code = _run(parser().parse_args(argv))
    if dist.is_available() and dist.is_initialized():
        _leave_processes(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        for name in ("n", "epochs", "steps"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                raise AezooError(f"--{name} must be at least 1")
        args.fn(args)
    except AezooError as e:
        message = str(e).replace("\n", "\\n")  # one line, whatever the user typed
        print(f"aezoo: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aezoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`aezoo config vae | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _leave_processes(code: int) -> None:
    """End a process torchrun started, its files written, without the interpreter's teardown: there,
    about one in 100 two-process gloo runs aborted ("terminate called without an active
    exception", SIGABRT in the main thread after the last Python frame, even with the process group
    destroyed), and torchrun then fails the whole run."""
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
