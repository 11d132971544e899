"""`embed --engine ray` (docs/scale.md): the store equals the local engine's, an interrupted run
resumes from its shards, an unchanged folder never starts Ray, and the CLI's output stays clean.
Real Ray (one local instance for the module, num_cpus=2), real files, no mocks."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MDCLUST, TINY, write_images

ray = pytest.importorskip("ray")  # the optional extra: pip install 'mdclust[ray]' (make test)

from mdclust.core import journal  # noqa: E402
from mdclust.core.errors import BadInput, MdclustError  # noqa: E402
from mdclust.core.features import load_image_features  # noqa: E402
from mdclust.core.store import Store  # noqa: E402
from mdclust.stages import embed_ray  # noqa: E402
from mdclust.stages.embed import embed  # noqa: E402

N = 40  # distinct decodable images; plus a duplicate of one of them and an undecodable file
BATCH = 8


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance shared by the module; yields its address for subprocesses."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray") / "imgs"
    write_images(d, N, size=(24, 24))
    shutil.copy(d / "img0000.png", d / "copy-of-0.png")
    (d / "broken.png").write_bytes(b"\x89PNG but not really an image")
    return d


def run(folder, store, **kw):
    kw.setdefault("model", TINY)
    kw.setdefault("pretrained", "random")
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", BATCH)
    return embed(folder, Store(store), **kw)


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """The local engine's store of the folder."""
    path = tmp_path_factory.mktemp("ref") / "local.h5"
    res = run(folder, path)
    assert (res.images, res.embedded) == (N + 1, N)
    assert [p for p, _ in res.skipped] == ["broken.png"]
    return path


def assert_same_store(path, ref):
    a, b = Store(path), Store(ref)
    for group in ("images", "skipped"):
        ga, gb = a.read_group(group), b.read_group(group)
        assert ga.data.keys() == gb.data.keys()
        for name in ga.data:
            assert list(ga[name]) == list(gb[name]), (group, name)
    fa, fb = load_image_features(a), load_image_features(b)
    assert fa.key == fb.key and fa.paths == fb.paths
    np.testing.assert_allclose(fa.vectors, fb.vectors, atol=1e-3)
    rows = a.read_group(f"features/{fa.key}")["sha256"]
    assert len(rows) == len(set(rows)) == N  # one row per content: the copy shares its row
    assert not a.journal_dir.exists()


@pytest.mark.timeout(120)
def test_ray_engine_store_equals_the_local_engines(cluster, folder, reference, tmp_path):
    res = run(folder, tmp_path / "ray.h5", engine="ray")
    assert (res.images, res.embedded, res.reused, res.dropped) == (N + 1, N, 1, 0)
    assert res.skipped == [("broken.png", "not an image (unrecognised format)")]
    assert res.model_loaded
    assert_same_store(tmp_path / "ray.h5", reference)


def _cpus_free(expected: float, within: float = 20.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if ray.available_resources().get("CPU", 0) >= expected:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_interrupted_ray_run_resumes_from_its_shards(cluster, folder, reference, tmp_path,
                                                        monkeypatch):
    store = tmp_path / "s.h5"
    monkeypatch.setenv(embed_ray.STOP_AFTER_ENV, "2")
    with pytest.raises(KeyboardInterrupt):
        run(folder, store, engine="ray")
    batches = journal.read_batches(Store(store), "embed")
    assert len(batches) == 2  # one shard per output block, each written as it arrived
    done = {str(s) for _, z in batches for s in z["sha"]}
    failed = {str(s) for _, z in batches for s in z["failed_sha"]}
    assert BATCH <= len(done) + len(failed) <= 2 * BATCH  # a block is at most one batch
    assert not Store(store).exists()  # nothing merged yet: the store is written at the end
    assert _cpus_free(2)  # stopping the driver stopped the pipeline and its model actors

    monkeypatch.delenv(embed_ray.STOP_AFTER_ENV)
    res = run(folder, store, engine="ray")
    assert res.embedded == N - len(done)  # the journalled contents were not encoded again
    assert (res.images, len(res.skipped)) == (N + 1, 1)
    assert_same_store(store, reference)


def test_an_unchanged_folder_never_starts_ray(folder, reference, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    before = store.stat().st_mtime_ns, store.read_bytes()
    code = ("import json, sys, mdclust\n"
            "r = mdclust.embed(sys.argv[1], sys.argv[2], model=sys.argv[3], pretrained='random',"
            " engine='ray', address='ray://nowhere.invalid:1')\n"
            "print(json.dumps({'embedded': r.embedded, 'reused': r.reused,"
            " 'model_loaded': r.model_loaded, 'ray': 'ray' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(store), TINY],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"embedded": 0, "reused": N + 1, "model_loaded": False,
                                       "ray": False}
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_json_prints_one_object_and_ray_stays_quiet(cluster, folder, tmp_path):
    store = tmp_path / "s.h5"
    done = subprocess.run([MDCLUST, "embed", str(folder), "--model", TINY, "--pretrained",
                           "random", "--batch-size", str(BATCH), "--engine", "ray",
                           "--address", cluster, "--store", str(store), "--json"],
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    out = json.loads(lines[0])
    assert (out["images"], out["embedded"], out["skipped_count"]) == (N + 1, N, 1)
    assert done.stderr == ""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_error_in_the_model_actors_is_one_line(cluster, folder, tmp_path):
    with pytest.raises(MdclustError, match=r"^unknown model 'no-such-model'; see `mdclust "
                                           r"models`"):
        run(folder, tmp_path / "s.h5", model="no-such-model", engine="ray")
    assert _cpus_free(2)


def test_a_missing_ray_is_one_line_exit_2(folder, tmp_path):
    # ray made unimportable for this child, as in a base install without the extra
    code = ("import sys\n"
            "class NoRay:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'):\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoRay())\n"
            "from mdclust.cli import main\n"
            "sys.argv = ['mdclust', *sys.argv[1:]]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, "embed", str(folder), "--model", TINY,
                           "--engine", "ray", "--store", str(tmp_path / "s.h5")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "mdclust: error: the ray engine needs ray: pip install 'mdclust[ray]'\n"
    assert done.stdout == "" and not (tmp_path / "s.h5").exists()


def test_an_unknown_engine_is_bad_input(folder, tmp_path):
    with pytest.raises(BadInput, match="unknown engine 'spark': use local or ray"):
        run(folder, tmp_path / "s.h5", engine="spark")


def test_the_base_install_does_not_import_ray(folder, tmp_path):
    code = ("import sys, mdclust\n"
            "mdclust.embed(sys.argv[1], sys.argv[2], model=sys.argv[3], pretrained='random',"
            " workers=0)\n"
            "assert 'ray' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "s.h5"), TINY],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr


def test_the_plan_puts_one_actor_on_each_gpu_and_decodes_beside_it():
    plan = embed_ray.plan
    # 2 nodes of 16 CPUs and 1 GPU each: one actor per GPU, 8 decoding processes beside it
    # (the local engine's default), blocks of many batches (decoders start once per block)
    gpu = plan({"CPU": 32.0, "GPU": 2.0}, "auto", 100_000, 256)
    assert (gpu.actors, gpu.gpus, gpu.device, gpu.workers, gpu.cpus) == (2, 1, "cuda", 8, 9)
    assert gpu.rows == 4096 and gpu.rows % 256 == 0
    assert plan({"CPU": 32.0, "GPU": 2.0}, "auto", 300, 64).actors == 2  # both GPUs busy
    assert plan({"CPU": 2.0, "GPU": 2.0}, "cuda", 10, 4).workers == 0  # no CPU to spare
    # no GPU, or --device cpu: single-CPU actors, one batch per block, at most 16 model copies
    cpu = plan({"CPU": 64.0, "GPU": 2.0}, "cpu", 100_000, 64)
    assert (cpu.actors, cpu.cpus, cpu.gpus, cpu.device, cpu.workers, cpu.rows) == \
        (16, 1, 0, "cpu", 0, 64)
    assert plan({"CPU": 8.0}, "auto", 100, 64).actors == 2  # never more actors than blocks
    with pytest.raises(MdclustError, match="asked for but the Ray cluster has no GPU"):
        plan({"CPU": 8.0}, "cuda", 100, 64)
    with pytest.raises(BadInput, match="runs on cpu or cuda, not mps"):
        plan({"CPU": 8.0}, "mps", 100, 64)
