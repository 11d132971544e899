"""Start-up cuts of commands that load a model: no initial weights drawn for a checkpoint,
decoding started before the model is built, and the CLI's exit without module teardown."""

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import MDCLUST, TINY, write_images

from mdclust.core import encoders, preprocess_cache
from mdclust.core.encoders import ClipEncoder, model_spec
from mdclust.core.features import load_image_features
from mdclust.core.store import Store
from mdclust.stages import embed as embed_stage


@pytest.fixture
def weights(tmp_path):
    import open_clip

    encoders.register_configs()
    torch.manual_seed(3)
    path = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(TINY).state_dict(), path)
    return path


def counting_initialiser(monkeypatch):
    calls = []
    real = torch.nn.init.kaiming_uniform_

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", counted)
    return calls


def test_a_checkpoint_is_loaded_without_drawing_weights_first_and_gives_the_same_model(
        weights, monkeypatch):
    import open_clip

    calls = counting_initialiser(monkeypatch)
    enc = ClipEncoder(model_spec(TINY, str(weights)), device="cpu", precision="fp32")
    assert calls == []  # every Linear's kaiming_uniform_ skipped
    assert torch.nn.init.kaiming_uniform_.__name__ == "counted"  # put back afterwards
    ClipEncoder(model_spec(TINY, "random"), device="cpu", precision="fp32")
    assert len(calls) > 0  # random weights are still drawn

    plain, _, _ = open_clip.create_model_and_transforms(TINY, pretrained=str(weights))
    plain.eval()
    theirs, ours = plain.state_dict(), enc.model.state_dict()
    assert theirs.keys() == ours.keys()
    for name in theirs:
        assert torch.equal(theirs[name], ours[name]), name
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(plain.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_array_equal(enc.encode_images(pixels), ref)


def test_decoding_starts_before_the_model_once_its_preprocessing_is_known(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    write_images(folder, 9, size=(40, 30))
    spec = model_spec(TINY, "random")
    seen = []
    real = embed_stage._early_decoding

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(embed_stage, "_early_decoding", spy)
    preprocess_cache._path(spec).unlink(missing_ok=True)
    embed_stage.embed(folder, Store(tmp_path / "a.h5"), model=TINY, pretrained="random",
                      workers=1, batch_size=4)
    assert seen == [False]  # nothing remembered yet: the model's own transform
    assert preprocess_cache.known(spec) is not None
    embed_stage.embed(folder, Store(tmp_path / "b.h5"), model=TINY, pretrained="random",
                      workers=1, batch_size=4)
    assert seen == [False, True]
    first = load_image_features(Store(tmp_path / "a.h5"))
    early = load_image_features(Store(tmp_path / "b.h5"))
    assert list(first.paths) == list(early.paths)
    np.testing.assert_allclose(early.vectors, first.vectors, atol=1e-6)

    # a remembered config that is not the model's: decoded again with the model's own
    path = preprocess_cache._path(spec)
    cfg = json.loads(path.read_text())
    cfg["mean"] = [0.9, 0.9, 0.9]
    path.write_text(json.dumps(cfg))
    embed_stage.embed(folder, Store(tmp_path / "c.h5"), model=TINY, pretrained="random",
                      workers=1, batch_size=4)
    again = load_image_features(Store(tmp_path / "c.h5"))
    np.testing.assert_allclose(again.vectors, first.vectors, atol=1e-6)
    assert json.loads(path.read_text())["mean"] != [0.9, 0.9, 0.9]  # remembered right again


def test_the_cli_exit_keeps_output_codes_and_the_store(tmp_path):
    folder = tmp_path / "imgs"
    paths = write_images(folder, 6)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,color\n" + "".join(
        f"{p.relative_to(folder)},{'red' if i % 2 else 'blue'}\n" for i, p in enumerate(paths)))
    store = tmp_path / "s.h5"

    def mdclust(*args):
        return subprocess.run([MDCLUST, *args, "--store", str(store)], capture_output=True,
                              text=True)

    done = mdclust("embed", str(folder), "--model", TINY, "--pretrained", "random",
                   "--labels", str(labels), "--json", "--quiet")
    assert done.returncode == 0 and json.loads(done.stdout)["embedded"] == 6, done.stderr
    bad = mdclust("cluster", "--interest", "color", "--method", "kmeans", "--k", "50")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
    ok = mdclust("cluster", "--interest", "color", "--method", "kmeans", "--k", "2", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["k"] == 2, ok.stderr
    gate = mdclust("eval", "--interest", "color", "--method", "kmeans", "--json",
                   "--fail-under-nmi", "1.01")
    assert gate.returncode == 1 and "nmi" in json.loads(gate.stdout), gate.stderr
    assert gate.stderr.count("\n") == 1
    assert len(load_image_features(Store(store)).paths) == 6


def test_a_model_no_checkpoint_completed_is_built_again_with_its_initialisers(weights,
                                                                              monkeypatch):
    import open_clip

    with encoders.skipped_init() as (skipped, loaded):
        bare = open_clip.create_model(TINY)  # no checkpoint: what a failed hub load leaves
    assert skipped and not encoders._all_set(bare, skipped, loaded)
    with encoders.skipped_init() as (skipped, loaded):
        full = open_clip.create_model(TINY, pretrained=str(weights))
    assert encoders._all_set(full, skipped, loaded)

    tries = []
    real = ClipEncoder._create

    def create(self, *args, skip):
        model, preprocess, complete = real(self, *args, skip=skip)
        tries.append(skip)
        return model, preprocess, complete and len(tries) > 1  # the first counts as incomplete

    monkeypatch.setattr(ClipEncoder, "_create", create)
    enc = ClipEncoder(model_spec(TINY, str(weights)), device="cpu", precision="fp32")
    assert tries == [True, False]
    for name, value in full.state_dict().items():
        assert torch.equal(enc.model.state_dict()[name], value), name
