"""mdclust: multiple clustering of image collections by user interest."""

__version__ = "0.1.0"
