"""The model zoo: every shipped entry loads by name and samples without training, its numbers agree with
its README and with README.md's Reproductions table, and it stays small; names resolve wherever a run
folder does, commands that write work on a copy and never inside the package, and bench/zoo_add.py
makes entries that pass the same checks."""

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import aezoo
from aezoo import zoo
from aezoo.errors import AezooError
from aezoo.models.capabilities import CodeModel, Generative
from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
ENTRIES = zoo.names()
SURVEY = {"ae", "dae", "sparse_ae", "ksparse_ae", "cae", "vae", "beta_vae", "vqvae", "vqvae2", "tdvae"}
FAST = ["--set", "train.batch_size=50", "--set", "model.hidden=[8]", "--set", "model.latent_dim=2",
        "--set", "eval.nll_k=3", "--set", "train.progress=false"]


def table(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the markdown table whose header line starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def key_of(cell: str) -> str:
    """`bits_per_dim` (bits/dim) -> bits_per_dim"""
    return cell.split("`")[1]


def zoo_add_module():
    spec = importlib.util.spec_from_file_location("zoo_add", REPO / "bench" / "zoo_add.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_model_of_the_survey_is_shipped():
    assert {zoo.get(n).model for n in ENTRIES} >= SURVEY, ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_loads_by_name_and_samples_or_reconstructs(name):
    e = zoo.get(name)
    model = aezoo.load(name)
    assert not model.training
    data_shape = tuple(json.loads((e.path / "config.json").read_text())["model"]["data_shape"])
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.sample(2) if isinstance(model, Generative) else model.reconstruct(torch.rand(2, *data_shape))
    if len(data_shape) == 4:  # sequences (T, C, H, W): each sample a strip of frames side by side
        t, c, h, w = data_shape
        assert x.shape[:3] == (2, c, h) and x.shape[3] % w == 0 and 1 < x.shape[3] // w <= t, x.shape
    else:
        assert tuple(x.shape) == (2, *data_shape)
    assert torch.isfinite(x).all()
    if isinstance(model, CodeModel):
        assert model.prior is not None
        with torch.no_grad():
            codes = model.prior.sample(2)
        for level, c in zip(model.code_levels(), codes):
            assert c.shape[0] == 2 and int(c.min()) >= 0 and int(c.max()) < level.codebook_size


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_is_small_and_trimmed(name):
    e = zoo.get(name)
    files = {f.relative_to(e.path).as_posix() for f in e.path.rglob("*") if f.is_file()}
    assert e.size_bytes() <= 10_000_000
    assert {"zoo.json", "README.md", "config.json", "model.safetensors", "eval.json"} <= files
    assert not {f for f in files if f.endswith(("resume.pt", "codes.safetensors", ".lock", ".png", ".html"))}


@pytest.mark.parametrize("name", ENTRIES)
def test_eval_json_equals_the_readmes(name):
    e = zoo.get(name)
    results = e.eval()
    readme = (e.path / "README.md").read_text()
    headline = table(readme, "| metric | obtained |")
    assert [key_of(r[0]) for r in headline] == e.headline
    for row in headline:
        assert row[1] == zoo.format_value(results[key_of(row[0])]), (name, row)
    numbers = table(readme, "| key | value |")
    for row in numbers:
        assert row[1] == zoo.format_value(results[key_of(row[0])]), (name, row)
    tabled = [k for k, v in results.items()
              if (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
              or (isinstance(v, list) and 0 < len(v) <= 16 and all(isinstance(u, (int, float)) for u in v))]
    assert [key_of(r[0]) for r in numbers] == tabled

    rows = [r for r in table((REPO / "README.md").read_text(), "| model | data | metric | obtained |")
            if r[0].startswith(f"`{name}` (")]
    assert sorted(key_of(r[2]) for r in rows) == sorted(e.headline), rows
    for row in rows:
        assert row[3] == zoo.format_value(results[key_of(row[2])]), (name, row)


def test_cli_lists_every_entry():
    code, out, err = run_cli("zoo")
    assert code == 0, err
    lines = out.splitlines()
    listed = [line.split()[0] for line in lines[1 : 1 + len(ENTRIES)]]
    assert listed == ENTRIES
    for name in ENTRIES:
        row = next(line for line in lines if line.startswith(name + " "))
        for key in zoo.get(name).headline:
            assert f"{key} {zoo.format_value(zoo.get(name).eval()[key])}" in row


# --- a zoo of one tiny entry made by bench/zoo_add.py, in a temporary package folder -----------------------
def snapshot(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import numpy as np

    folder = tmp_path_factory.mktemp("runs")
    np.save(folder / "x.npy", (np.random.default_rng(0).random((300, 12)) > 0.5).astype(np.float32))
    run = folder / "vae"
    code, _, err = run_cli("train", "vae", "--out", str(run), "--steps", "6", "--data", "arrays",
                           "--set", f"data.file={folder / 'x.npy'}", *FAST)
    assert code == 0, err
    code, _, err = run_cli("eval", str(run))
    assert code == 0, err
    return run


@pytest.fixture
def tiny_zoo(tiny_run, tmp_path, monkeypatch):
    """(zoo_add module, the package folder) with one entry, tiny-vae, and a README holding its table."""
    package = tmp_path / "package"
    package.mkdir()
    monkeypatch.setattr(zoo, "ROOT", package)
    zoo_add = zoo_add_module()
    monkeypatch.setattr(zoo_add, "REPO", tmp_path)
    (tmp_path / "README.md").write_text(f"# x\n\n{zoo_add.TABLE_HEAD}\n| --- |\n| `other` (ae) | row |\n\nafter\n")
    assert zoo_add.main([str(tiny_run), "tiny-vae", "--command", "aezoo train vae --out R", "--summary", "A tiny VAE.",
                         "--reference", "nll_iwae=86.76 (a paper)"]) == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return zoo_add, package / "tiny-vae"


def test_zoo_add_makes_an_entry_its_readme_and_table_rows(tiny_zoo, tiny_run, tmp_path):
    zoo_add, entry = tiny_zoo
    assert zoo.names() == ["tiny-vae"]
    assert snapshot(entry).keys() == {"README.md", "zoo.json", "config.json", "model.safetensors", "eval.json",
                                      "metrics.jsonl", "environment.json"}
    info = json.loads((entry / "zoo.json").read_text())
    steps = [r["step"] for r in map(json.loads, (tiny_run / "metrics.jsonl").read_text().splitlines())]
    assert info["headline"] == ["nll_iwae"] and info["budget"]["steps"] == 6 == max(steps)
    assert info["references"] == {"nll_iwae": "86.76 (a paper)"}
    nll = zoo.format_value(json.loads((tiny_run / "eval.json").read_text())["nll_iwae"])
    readme = (tmp_path / "README.md").read_text()
    rows = table(readme, zoo_add.TABLE_HEAD)
    assert rows[0] == ["`other` (ae)", "row"]
    assert rows[1][:5] == ["`tiny-vae` (vae)", "arrays", "`nll_iwae` (nats/example)", nll, "86.76 (a paper)"]
    assert readme.endswith("\nafter\n")
    assert table((entry / "README.md").read_text(), "| metric | obtained |") == [
        ["`nll_iwae`", nll, "nats/example", "86.76 (a paper)"]]
    # again, with --force: the entry's rows are replaced, not added
    assert zoo_add.main([str(tiny_run), "tiny-vae", "--command", "c", "--summary", "s", "--force"]) == 0
    rows = table((tmp_path / "README.md").read_text(), zoo_add.TABLE_HEAD)
    assert len(rows) == 2 and rows[1][4] == "none published"


def test_zoo_add_refuses_before_writing(tiny_zoo, tiny_run, tmp_path, monkeypatch, capsys):
    zoo_add, entry = tiny_zoo
    before = snapshot(entry.parent)
    base = [str(tiny_run), "tiny-vae2", "--command", "c", "--summary", "s"]
    assert zoo_add.main([str(tiny_run), "tiny-vae", "--command", "c", "--summary", "s"]) == 2  # exists
    assert zoo_add.main([*base, "--headline", "mig"]) == 2  # not in eval.json
    assert zoo_add.main([*base, "--reference", "psnr=1"]) == 2  # not a headline key
    assert zoo_add.main([str(tiny_run), "Tiny_VAE", "--command", "c", "--summary", "s"]) == 2
    monkeypatch.setattr(zoo_add, "LIMIT_BYTES", 1000)
    assert zoo_add.main(base) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "no mig" in err and "KEY=TEXT" in err and "a zoo name" in err and "over the zoo's" in err
    assert snapshot(entry.parent) == before


def test_pieces_split_where_time_goes_back():
    zoo_add = zoo_add_module()
    records = [{"step": s, "split": "train", "time_s": t} for s, t in ((50, 5.0), (100, 10.0), (150, 4.0), (200, 9.5))]
    records.insert(2, {"step": 100, "split": "val"})
    assert zoo_add.pieces(records) == [{"from_step": 50, "to_step": 100, "wall_s": 10.0},
                                       {"from_step": 150, "to_step": 200, "wall_s": 9.5}]


def test_a_name_loads_and_a_typo_gets_one_line(tiny_zoo):
    assert aezoo.load("tiny-vae").name == "vae"
    with pytest.raises(AezooError, match="did you mean 'tiny-vae'"):
        aezoo.load("tiny-vea")
    code, out, err = run_cli("sample", "tiny-vea", "--out", "s.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "did you mean 'tiny-vae'" in err
    assert "(the zoo: tiny-vae)" in err and not Path("s.png").exists()
    code, _, err = run_cli("eval", "runs/missing")  # a path, not a name: the run folder's own message
    assert code == 2 and "no run here (config.json missing)" in err
    code, _, err = run_cli("resume", "tiny-vae")  # no training state: it would train again from step 0
    assert code == 2 and "shipped without its training state" in err and not Path("runs").exists()


def test_encode_dataset_takes_a_name_and_reads_the_entry_in_place(tiny_zoo):
    before = snapshot(tiny_zoo[1])
    codes = aezoo.encode_dataset("tiny-vae", split="test")
    assert codes["mean"].shape == (30, aezoo.load("tiny-vae").config.latent_dim) and np.isfinite(codes["mean"]).all()
    assert snapshot(tiny_zoo[1]) == before and not Path("runs").exists()


def test_commands_that_write_use_a_copy_never_the_package(tiny_zoo):
    _, entry = tiny_zoo
    before = snapshot(entry)
    copy = Path("runs/zoo/tiny-vae")
    code, out, err = run_cli("eval", "tiny-vae")
    assert code == 0 and f"wrote {copy / 'eval.json'}" in out, err
    (copy / "eval.json").write_text(json.dumps({**json.loads((copy / "eval.json").read_text()), "marker": 1}))
    code, _, err = run_cli("report", "tiny-vae")
    assert code == 0 and (copy / "report.html").is_file() and (copy / "plots").is_dir(), err
    code, _, err = run_cli("sample", "tiny-vae", "--n", "4")
    assert code == 0 and (copy / "samples.npy").is_file(), err
    code, _, err = run_cli("encode", "tiny-vae", "--limit", "10", "--out", "codes.npy")
    assert code == 0 and Path("codes.npy").is_file(), err
    from aezoo.runfolder import load_run  # what evaluate and the report write through, from Python too

    assert load_run("tiny-vae")[3].path == copy
    assert snapshot(entry) == before
    assert json.loads((copy / "eval.json").read_text())["marker"] == 1  # same weights: the copy is kept
    # new weights in the entry: the copy is remade, and the pictures of the old weights go
    state = {k: v + 1 for k, v in aezoo.load("tiny-vae").state_dict().items()}
    from safetensors.torch import save_file

    save_file(state, str(entry / "model.safetensors"))
    assert zoo.copy("tiny-vae") == copy
    assert "marker" not in json.loads((copy / "eval.json").read_text())
    assert not (copy / "plots").exists() and not (copy / "report.html").exists()
    assert (copy / "model.safetensors").read_bytes() == (entry / "model.safetensors").read_bytes()


def test_a_local_folder_comes_before_an_entry(tiny_zoo, tiny_run):
    import shutil

    shutil.copytree(tiny_run, "tiny-vae")
    assert zoo.resolve("tiny-vae") == Path("tiny-vae") and zoo.resolve_writable("tiny-vae") == Path("tiny-vae")
    assert not Path("runs").exists()
