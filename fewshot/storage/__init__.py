"""Saving and loading: atomic, checked, pickle-free folders (:mod:`.bundle`) and their writer lock (:mod:`.lock`)."""

from fewshot.storage.bundle import MANIFEST, check_target, read_bundle, read_manifest, write_bundle
from fewshot.storage.lock import FolderLock

__all__ = ["MANIFEST", "FolderLock", "check_target", "read_bundle", "read_manifest", "write_bundle"]
