"""mdclust: multiple clustering of image collections by user interest.

The stages, as the CLI runs them (each takes a Store or a path as its first argument and
returns a result dataclass with ``to_json()``):

    import mdclust
    mdclust.embed("images/", "s.h5", model="mdclust-tiny")
    mdclust.candidates("s.h5", "color", from_file="colors.txt", k=6)
    mdclust.filter_nouns("s.h5", "color")
    result = mdclust.cluster("s.h5", "color", method="gradnorm")
    result.labels, result.paths                      # per image
    mdclust.evaluate("s.h5", "color", method="gradnorm").nmi

The public API is this module, ``mdclust.methods`` (the method registry, each method's
settings and its store-free ``fit``) and ``mdclust.datasets`` (the synthetic generator).
torch, open_clip and litellm are imported only when a stage needs them.
"""

__version__ = "0.1.0"

from mdclust.core.checks import checked  # noqa: E402
from mdclust.core.errors import (  # noqa: E402
    BadInput,
    MdclustError,
    MissingStage,
    QualityGateFailed,
    StaleResult,
)
from mdclust.core.features import shared_features  # noqa: E402
from mdclust.core.store import Store  # noqa: E402
from mdclust.stages.candidates import CandidateResult, candidates  # noqa: E402
from mdclust.stages.cluster import ClusterResult, cluster, load_clustering  # noqa: E402
from mdclust.stages.embed import EmbedResult, embed  # noqa: E402
from mdclust.stages.evaluate import METRICS, EvalResult, evaluate, export_csv  # noqa: E402
from mdclust.stages.export import ExportResult, FoldersResult, export, export_folders  # noqa: E402
from mdclust.stages.filter import FilterResult, filter_nouns  # noqa: E402
from mdclust.stages.info import InfoResult, info, models  # noqa: E402
from mdclust.stages.report import ReportResult, report  # noqa: E402
from mdclust.stages.train import TrainResult, train  # noqa: E402

# Every stage checks its arguments against its annotations here, at the public boundary, and
# names a bad one as the CLI does (mdclust.core.checks); these are the names that are not
# "--" plus the parameter's name with dashes (a parameter the command lacks keeps its name).
_FLAGS = {"images_dir": "IMAGES_DIR", "interests": "--interest", "methods": "--method",
          "warn": "warn",
          "show_progress": "show_progress", "stop_after": "stop_after"}
_API_ONLY = {"cluster": {"template": "template"}}
(embed, candidates, filter_nouns, train, cluster, load_clustering, evaluate, export_csv, export,
 export_folders, info, models, report) = (
    checked(fn, flags={**_FLAGS, **_API_ONLY.get(fn.__name__, {})}) for fn in (
        embed, candidates, filter_nouns, train, cluster, load_clustering, evaluate, export_csv,
        export, export_folders, info, models, report))

__all__ = ["__version__", "embed", "candidates", "filter_nouns", "train", "cluster",
           "load_clustering", "evaluate", "export_csv", "export", "export_folders", "info",
           "models", "report", "Store", "EmbedResult", "CandidateResult", "FilterResult",
           "TrainResult", "ClusterResult", "EvalResult", "ExportResult", "FoldersResult",
           "InfoResult", "ReportResult", "METRICS", "MdclustError", "BadInput", "MissingStage",
           "StaleResult", "QualityGateFailed", "shared_features"]
