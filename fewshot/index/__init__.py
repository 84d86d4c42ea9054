"""A persistent, searchable store of embeddings: FAISS for vectors, one SQLite table for everything else.

- :mod:`.vectors`: the FAISS structure (flat or HNSW, removals, growth);
- :mod:`.metadata`: the ``items(id, item, label, metadata)`` table, keyed by the same ids;
- :mod:`.filters`: ``where`` filters compiled to typed SQL;
- :mod:`.embedding_index`: :class:`EmbeddingIndex`, which joins them, encodes and saves;
- :mod:`.paths`: where indexes saved by name live.
"""

from fewshot.index.embedding_index import KINDS, EmbeddingIndex, Hit
from fewshot.index.paths import index_dir, resolve_index_path

__all__ = ["KINDS", "EmbeddingIndex", "Hit", "index_dir", "resolve_index_path"]
