"""Re-ranking of retrieval results: alpha query expansion (qe), database-side
augmentation (dba) and k-reciprocal re-ranking (kreciprocal). `rerank` is the one
call for a search (search.py, the service); `for_metrics` is eval.py's."""
from .ranking import Reranked, check_sizes, for_metrics, rerank
from .settings import METHODS, NONE, Settings, add_rerank_arguments

__all__ = ["METHODS", "NONE", "Reranked", "Settings", "add_rerank_arguments", "check_sizes", "for_metrics", "rerank"]
