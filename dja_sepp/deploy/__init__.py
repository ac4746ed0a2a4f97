"""Deploy layer: which Dask cluster runs the tiles."""
from .cluster import cluster_client

__all__ = ["cluster_client"]
