"""Re-ranking of retrieval results: alpha query expansion (qe), database-side
augmentation (dba) and k-reciprocal re-ranking (kreciprocal). `rerank` is the one
call for a search (search.py, the service; `gallery_lists` precomputes what k-reciprocal
re-ranking of a gallery needs, for a caller that searches it many times); `for_metrics`
is eval.py's."""
from .neighbours import GalleryLists, gallery_lists
from .ranking import Reranked, check_sizes, for_metrics, rerank
from .settings import METHODS, NONE, Settings, add_rerank_arguments

__all__ = ["METHODS", "NONE", "GalleryLists", "Reranked", "Settings", "add_rerank_arguments", "check_sizes",
           "for_metrics", "gallery_lists", "rerank"]
