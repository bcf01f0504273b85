"""The report's configuration (the keys the run uses, changed ones marked) and environment (every key; the
keys in which pieces of training differ), and the comparison's environments: from files written here."""

import json
import re

from aezoo.compare import render_comparison
from aezoo.report import render_report

PIECE = {"step": 0, "started": "2026-12-01T00:00:00Z", "python": "3.11.7", "torch": "2.13.0+cpu",
         "device": "cpu", "torch_threads": 1, "env_OMP_NUM_THREADS": "1", "gpu": None}


def run_folder(path, environment=None, **train):
    path.mkdir()
    config = {"model_name": "vqvae",
              "data": {"name": "mnist", "limit": 600},
              "train": {"optimizer": "sgd", "momentum": 0.5, "betas": [0.9, 0.999], "eps": 1e-8, "lr": 0.001, **train},
              "eval": {"split": "test"},
              "model": {"quantizer": "fsq", "fsq_levels": [8, 5, 5, 5], "codebook_size": 512, "hidden": 64}}
    (path / "config.json").write_text(json.dumps(config))
    if environment is not None:
        (path / "environment.json").write_text(json.dumps(environment))
    return path


def config_section(html):
    return html[html.index("<h2>Configuration</h2>"):]


def test_config_shows_the_keys_the_run_uses_and_marks_the_changed(tmp_path):
    html = config_section(render_report(run_folder(tmp_path / "r")))
    shown = re.findall(r"<tr[^>]*><th>([\w.]+)</th>", html)
    assert shown[0].startswith("model.")  # the model's keys first
    assert {"model.fsq_levels", "train.momentum", "train.lr", "data.limit"} <= set(shown)
    assert not {"train.betas", "train.eps", "model.codebook_size"} & set(shown)
    assert "Not used by this run's settings (so not shown): train.betas, train.eps, model.codebook_size" \
        in html.replace("model.codebook_size, train.betas, train.eps", "train.betas, train.eps, model.codebook_size")
    changed = re.findall(r"<tr class=changed><th>([\w.]+)</th><td[^>]*>(.*?)</td>", html)
    assert dict(changed) == {"model.quantizer": "fsq <span class=default>(default vq)</span>",
                             "data.limit": "600 <span class=default>(default 0)</span>",
                             "train.optimizer": "sgd <span class=default>(default adam)</span>",
                             "train.momentum": "0.5 <span class=default>(default 0.9)</span>"}
    assert "4 keys set away from their default" in html


def test_no_environment_section_without_the_file(tmp_path):
    assert "Environment" not in render_report(run_folder(tmp_path / "r"))


def test_one_piece_shows_every_key(tmp_path):
    html = render_report(run_folder(tmp_path / "r", {"pieces": [PIECE]}))
    env = html[html.index("<h3>Environment</h3>"):html.index("<h2>Evaluation</h2>")]
    assert re.findall(r"<th>(\w+)</th>", env) == list(PIECE)
    assert "<td>2.13.0+cpu</td>" in env and "pieces" not in env


def test_pieces_that_differ_are_named(tmp_path):
    second = {**PIECE, "step": 1000, "started": "2026-12-01T01:00:00Z", "torch_threads": 2,
              "env_OMP_NUM_THREADS": "2"}
    html = render_report(run_folder(tmp_path / "r", {"pieces": [PIECE, second]}))
    env = html[html.index("<h3>Environment</h3>"):html.index("<h2>Evaluation</h2>")]
    assert "trained in 2 pieces whose environments differ in: torch_threads, env_OMP_NUM_THREADS;" in env
    assert re.findall(r"<tr class=differs><th>(\w+)</th><td>(.*?)</td><td>(.*?)</td>", env) == [
        ("torch_threads", "1", "2"), ("env_OMP_NUM_THREADS", "1", "2")]
    same = env[env.index("The same in every piece"):]
    assert "<th>python</th><td>3.11.7</td>" in same and "torch_threads" not in same and "<th>step</th>" not in same
    html = render_report(run_folder(tmp_path / "s", {"pieces": [PIECE, {**PIECE, "step": 5}]}))
    assert "trained in 2 pieces, all in the same environment" in html
    html = render_report(run_folder(tmp_path / "t", PIECE))  # one flat dict
    assert "<th>torch</th><td>2.13.0+cpu</td>" in html


def test_a_broken_environment_file_is_said_not_fatal(tmp_path):
    run = run_folder(tmp_path / "r")
    (run / "environment.json").write_text('{"pieces": [1, 2]}')
    assert 'environment.json: &quot;pieces&quot; is not a list of objects' in render_report(run)
    (run / "environment.json").write_text('{"pieces": [')
    assert "environment.json: " in render_report(run) and "not valid JSON" in render_report(run)


def test_comparison_names_the_environment_keys_that_differ(tmp_path):
    a = run_folder(tmp_path / "a", {"pieces": [PIECE]})
    b = run_folder(tmp_path / "b", {"pieces": [{**PIECE, "torch": "2.12.0"}, {**PIECE, "device": "cuda:0"}]})
    html = render_comparison([a, b])
    env = html[html.index("<h2>Environments</h2>"):]
    assert "1 of 6 keys differ" in env  # b's last piece differs from a's in the device only
    assert re.findall(r"<tr><th>(\w+)</th><td>(.*?)</td><td>(.*?)</td></tr>", env) == [("device", "cpu", "cuda:0")]
    c = run_folder(tmp_path / "c")
    assert "Fewer than two of the runs record" in render_comparison([a, c])
