"""How many threads torch, OpenMP, MKL and BLAS use, and how their idle threads wait.

torch's intra-op pool, MKL, faiss and scikit-learn all run on OpenMP (libgomp). By default an
OpenMP thread that has finished its share of a parallel region spins (about 300,000 turns)
before it sleeps, betting that the next region comes soon. Alone that is cheap; two mdclust
processes on 2 cores have 4 such threads: the spinning ones hold the cores that the thread
they wait for needs, every barrier waits out a scheduler time slice, and `train --method
pipcdr` ran 4-13 times slower beside a second command (issue #22; docs/benchmarks.md, "Two
commands at once"). mdclust shortens the spin to SPIN_COUNT turns (GOMP_SPINCOUNT): long
enough that a thread whose next region comes at once (small torch steps: Multi-DProxy, PIPCDR)
still catches it, short enough that two commands at once share the cores. Measured against
sleeping at once (OMP_WAIT_POLICY=PASSIVE, the policy before): Multi-DProxy alone 2.1 times
faster, two PIPCDR trainings at once 1.7 times their time alone against PASSIVE's 1.1 (the
target is 2.5); docs/benchmarks.md, "Two commands at once".

Each OpenMP runtime reads its variables once, when it is loaded, so ``configure`` must run
before torch, faiss or scikit-learn's compiled parts are imported; it imports none of them.
It runs when ``mdclust.methods`` and ``mdclust.core.encoders`` are imported (the modules that
load them) and again, strictly, as each CLI command starts.

MDCLUST_THREADS (docs/cli.md):
  unset  thread counts as the libraries choose (one per core), idle threads spin briefly;
  N      N threads for torch, OpenMP, MKL and BLAS, idle threads spin briefly;
  off    mdclust sets nothing: the libraries' own defaults, spinning (the behaviour before).
A count the user gave OMP_NUM_THREADS, MKL_NUM_THREADS or OPENBLAS_NUM_THREADS wins over
MDCLUST_THREADS, and a wait policy given by OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME
over ours.
"""

from __future__ import annotations

import os
import sys

from mdclust.core.errors import BadInput

THREADS_ENV = "MDCLUST_THREADS"
OFF = "off"
COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Any of these set by the user means they chose how idle threads wait (GNU and Intel OpenMP).
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
WAIT_VAR, SPIN_COUNT = "GOMP_SPINCOUNT", "3000"  # libgomp's default is 300,000

_applied: dict[str, str] = {}  # what configure() set
_limited: list[int] = []  # the count _limit_loaded applied last


def requested(strict: bool = False) -> int | str | None:
    """MDCLUST_THREADS read: a count, ``"off"``, or None when unset (or invalid and not strict)."""
    value = os.environ.get(THREADS_ENV, "").strip().lower()
    if not value:
        return None
    if value == OFF:
        return OFF
    if value.isdigit() and int(value) >= 1:
        return int(value)
    if strict:
        raise BadInput(f"{THREADS_ENV} must be a number of threads (1 or more) or 'off', "
                       f"not {os.environ[THREADS_ENV]!r}")
    return None


def configure(strict: bool = False) -> dict[str, str]:
    """Set the thread policy (see the module docstring); cheap, and safe to call again.

    Only variables the user left unset are set (the module docstring says which win). When
    torch or faiss is already loaded (a script imported it before mdclust), an explicit
    MDCLUST_THREADS count is applied to them directly; their waiting stays as it started.
    ``strict`` raises BadInput for an invalid MDCLUST_THREADS (the CLI, the stages); otherwise
    it counts as unset, so that ``import mdclust`` never fails on it. Returns what was set.
    """
    want = requested(strict)
    if want == OFF:
        return {}
    if not any(v in os.environ for v in WAIT_VARS):
        os.environ[WAIT_VAR] = _applied[WAIT_VAR] = SPIN_COUNT
    # torch takes MKL_NUM_THREADS over OMP_NUM_THREADS, OpenBLAS OMP_NUM_THREADS when its own
    # is unset: a count the user gave any of them is theirs for all, so ours is not set then.
    users = [v for v in COUNT_VARS if v in os.environ and os.environ[v] != _applied.get(v)]
    if isinstance(want, int) and not users:
        for var in COUNT_VARS:
            os.environ[var] = _applied[var] = str(want)
        _limit_loaded(want)
    return dict(_applied)


def _limit_loaded(n: int) -> None:
    """Apply a count to libraries that were loaded before their variables were set."""
    if _limited == [n]:
        return
    _limited[:] = [n]
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    if "numpy" in sys.modules:
        # numpy's OpenBLAS is loaded by `import mdclust` (the store), before any configure().
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return
        threadpool_limits(n, user_api="blas")

