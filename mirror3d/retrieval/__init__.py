"""mirror3d.retrieval: searchable re-id galleries (features + metadata on disk)."""

from mirror3d.retrieval.gallery import GalleryIndex, faiss_available

__all__ = ["GalleryIndex", "faiss_available"]
