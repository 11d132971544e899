"""MDCLUST_THREADS and the OpenMP wait policy (mdclust/core/threads.py, issue #22): each case runs
in a fresh interpreter, because OpenMP reads its variables once, when torch loads it."""

import json
import os
import subprocess
import sys

from conftest import MDCLUST

OURS = ("MDCLUST_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Loads torch the way `mdclust train` does (through the registry), then reports what torch and
# the loaded OpenMP runtimes use.
PROBE = """
import json, os, sys
{before}
import mdclust
from mdclust import methods
methods.get("pipcdr").load("fit")
import torch
from threadpoolctl import threadpool_info
omp = [d["num_threads"] for d in threadpool_info() if d["internal_api"] == "openmp"]
print(json.dumps({{"torch": torch.get_num_threads(), "omp": omp,
                  "env": {{v: os.environ.get(v) for v in {ours!r}}}}}))
"""


def probe(before: str = "", **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in OURS}
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before, ours=OURS)],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_count_reaches_torch_and_openmp_and_idle_threads_spin_briefly():
    got = probe(MDCLUST_THREADS="1")
    assert got["torch"] == 1
    assert got["omp"] and set(got["omp"]) == {1}, got
    assert got["env"]["OMP_NUM_THREADS"] == got["env"]["MKL_NUM_THREADS"] == "1"
    assert got["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert got["env"]["GOMP_SPINCOUNT"] == "3000" and got["env"]["OMP_WAIT_POLICY"] is None


def test_unset_keeps_the_libraries_counts_and_only_sets_the_wait_policy():
    got = probe()
    assert got["env"]["GOMP_SPINCOUNT"] == "3000"
    assert got["env"]["OMP_NUM_THREADS"] is None
    assert got["torch"] >= 1


def test_the_users_own_variables_win():
    got = probe(MDCLUST_THREADS="1", OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE")
    assert got["torch"] == 2 and set(got["omp"]) == {2}, got
    # torch would take MKL_NUM_THREADS over the user's OMP_NUM_THREADS: none is set for them
    assert got["env"]["MKL_NUM_THREADS"] is None and got["env"]["OPENBLAS_NUM_THREADS"] is None
    assert got["env"]["GOMP_SPINCOUNT"] is None  # they chose how threads wait


def test_off_sets_nothing():
    got = probe(MDCLUST_THREADS="off")
    assert all(got["env"][v] is None for v in OURS[1:]), got["env"]


def test_a_count_reaches_a_torch_loaded_before_mdclust():
    got = probe(before="import torch; torch.set_num_threads(2)", MDCLUST_THREADS="1")
    assert got["torch"] == 1


def test_import_mdclust_stays_free_of_torch():
    code = "import sys, mdclust; print('torch' in sys.modules, 'faiss' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MDCLUST_THREADS": "nonsense"})
    assert done.returncode == 0, done.stderr  # a bad value does not break the import
    assert done.stdout.split() == ["False", "False"]


def test_a_bad_value_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([MDCLUST, "info", "--store", str(tmp_path / "s.h5")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MDCLUST_THREADS": "two"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "MDCLUST_THREADS" in done.stderr, done.stderr
