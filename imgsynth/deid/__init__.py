"""Stage 1: DICOM de-identification per PS3.15 Annex E (Basic Profile and its options).

``anonymize_tree`` de-identifies folder trees, ``verify_tree`` scans an output folder for any
identifying value of its inputs, ``deid_minibatch`` is the mini-batch entry both run on. Names are
imported lazily so that importing the (light) config schema does not load pydicom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgsynth.deid.actions import Deidentifier
    from imgsynth.deid.keys import Keyring
    from imgsynth.deid.tree import DeidSummary, anonymize_tree, deid_minibatch
    from imgsynth.deid.verify import VerifyResult, verify_tree

__all__ = ["DeidSummary", "Deidentifier", "Keyring", "VerifyResult", "anonymize_tree", "deid_minibatch", "verify_tree"]
_WHERE = {
    "anonymize_tree": "tree", "deid_minibatch": "tree", "DeidSummary": "tree", "verify_tree": "verify",
    "VerifyResult": "verify", "Deidentifier": "actions", "Keyring": "keys",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"imgsynth.deid.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'imgsynth.deid' has no attribute {name!r}")
