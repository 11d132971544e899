"""mdclust: multiple clustering of image collections by user interest.

The stages, as the CLI runs them (each takes a Store or a path as its first argument):

    import mdclust
    mdclust.embed("images/", "s.h5", model="mdclust-tiny")
    mdclust.candidates("s.h5", "color", from_file="colors.txt", k=6)
    mdclust.filter_nouns("s.h5", "color")
    mdclust.cluster("s.h5", "color", method="gradnorm")
    mdclust.evaluate("s.h5", "color", method="gradnorm")

torch, open_clip and litellm are imported only when a stage needs them. The stage functions
share their names with the modules that define them (mdclust/embed.py defines embed), so they
are bound here once, after the modules load; reach a module itself through
``importlib.import_module("mdclust.train")``.
"""

__version__ = "0.1.0"

from mdclust.core.errors import MdclustError, QualityGateFailed  # noqa: E402
from mdclust.core.store import Store  # noqa: E402
from mdclust.stages.candidates import candidates  # noqa: E402
from mdclust.stages.cluster import cluster  # noqa: E402
from mdclust.stages.embed import embed  # noqa: E402
from mdclust.stages.evaluate import evaluate, export_csv  # noqa: E402
from mdclust.stages.filter import filter_nouns  # noqa: E402
from mdclust.stages.info import info  # noqa: E402
from mdclust.stages.train import train  # noqa: E402

__all__ = ["__version__", "embed", "candidates", "filter_nouns", "train", "cluster",
           "evaluate", "export_csv", "info", "Store", "MdclustError", "QualityGateFailed"]
