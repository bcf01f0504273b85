"""The `aezoo` command (also `python -m aezoo`): the command-line contract of the README.

Mistakes a user can make end in one line on stderr and exit status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch.distributed as dist

from . import registry
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
        print(f"{name:<{width}}  {info.summary}\n{'':<{width}}  read from: {info.where(DataConfig(name=name, dir=args.dir or ''))}")


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

    run = train_prior(args.run, args.prior, args.set, steps=args.steps, epochs=args.epochs)
    _say(f"trained prior: {run.path}")


def _cmd_resume(args) -> None:
    from .train import resume

    run = resume(args.run)
    print(f"resumed: {run.path}")


def _cmd_eval(args) -> None:
    from .evaluation import evaluate

    results = evaluate(args.run, args.split)
    width = max(map(len, results))
    for key, value in results.items():
        if isinstance(value, list):
            value = "[" + ", ".join(f"{v:.3g}" for v in value[:8]) + (", ...]" if len(value) > 8 else "]")
        elif isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key:<{width}}  {value}")
    print(f"wrote {Path(args.run) / 'eval.json'}")


def _cmd_sample(args) -> None:
    import torch

    from .models.capabilities import Generative
    from .plots import save_image_grid
    from .runfolder import load_run

    model, _, cfg, run = load_run(args.run)
    if not isinstance(model, Generative):
        raise AezooError(f"{cfg.model_name} has no generative prior to sample from")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        images = model.sample(args.n, 1.0 if args.temperature is None else args.temperature)
    out = Path(args.out) if args.out else run.path / "samples.png"
    save_image_grid(images.clamp(0, 1).cpu(), out)
    print(f"wrote {out}")


def _cmd_report(args) -> None:
    from .report import write_report
    from .visualise import write_plots

    write_plots(args.run)
    print(f"wrote {write_report(args.run)}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aezoo", description="The autoencoder family: train, evaluate, sample, report.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("models", help="the models, one line each").set_defaults(fn=_cmd_models)
    d = sub.add_parser("datasets", help="the datasets and where each is read from")
    d.add_argument("--dir", help="a data folder to look in")
    d.set_defaults(fn=_cmd_datasets)

    t = sub.add_parser("train", help="train a model into a new run folder")
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

    r = sub.add_parser("resume", help="continue an interrupted run")
    r.add_argument("run")
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
