"""mdclust: multiple clustering of image collections by user interest.

The stages, as the CLI runs them (each takes a Store or a path as its first argument):

    import mdclust
    mdclust.embed("images/", "s.h5", model="mdclust-tiny")
    mdclust.candidates("s.h5", "color", from_file="colors.txt", k=6)
    mdclust.filter_nouns("s.h5", "color")
    mdclust.cluster("s.h5", "color", method="gradnorm")
    mdclust.evaluate("s.h5", "color", method="gradnorm")

Names are imported on first use, so `import mdclust` stays fast (no torch).
"""

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "embed": "embed", "candidates": "candidates", "filter_nouns": "filter", "train": "train",
    "cluster": "cluster", "evaluate": "evaluate", "export_csv": "evaluate", "info": "info",
    "Store": "store", "MdclustError": "errors", "QualityGateFailed": "errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mdclust' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
