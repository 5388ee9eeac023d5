"""The de-identification key and everything derived from it (keyed HMAC-SHA256).

One secret gives, deterministically and independently of the order files are processed in:

* UIDs: ``2.25.<128-bit integer>`` from HMAC(key, "uid" | original UID) (PS3.5 B.2 UUID-derived form),
  so the same UID maps to the same new UID in every file, worker and run with the same key;
* patient pseudonyms (ID, name), AE title pseudonyms;
* a per-patient date offset (whole days) for the Modified Dates option;
* the keyed ids of input paths written to ``audit.jsonl`` (so the audit names no input file).

The key itself never leaves this object: outputs and logs carry only its *fingerprint*
(an HMAC of a fixed label), which tells whether two runs used the same key without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from imgsynth.errors import UsageError
from imgsynth.utils.io import is_within

KEY_ENV = "IMGSYNTH_DEID_KEY"
MIN_KEY_BYTES = 16


class Keyring:
    """Keyed, deterministic pseudonyms derived from one secret."""

    __slots__ = ("_key", "_uids")

    def __init__(self, secret: bytes | str) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        key = key.strip()
        if len(key) < MIN_KEY_BYTES:
            raise UsageError(
                f"the de-identification key is too short ({len(key)} bytes; at least {MIN_KEY_BYTES} needed); "
                "create one with --new-key FILE"
            )
        self._key = key
        self._uids: dict[str, str] = {}

    def __repr__(self) -> str:  # never show the secret
        return f"Keyring(fingerprint={self.fingerprint})"

    def __reduce__(self):  # picklable for worker processes (the key travels in memory only)
        return (Keyring, (self._key,))

    def digest(self, domain: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` in a named domain (domains never collide)."""
        return hmac.new(self._key, f"{domain}\x00{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        """Public fingerprint of the key (16 hex digits): same key, same fingerprint."""
        return self.digest("fingerprint", "imgsynth-deid").hex()[:16]

    def uid(self, uid: str) -> str:
        """The pseudonymous UID for ``uid``: ``2.25.`` + a 128-bit integer (at most 44 characters)."""
        out = self._uids.get(uid)
        if out is None:
            if len(self._uids) > 200_000:
                self._uids.clear()
            out = "2.25." + str(int.from_bytes(self.digest("uid", uid)[:16], "big"))
            self._uids[uid] = out
        return out

    def token(self, domain: str, value: str, length: int = 12) -> str:
        """Upper-case hex token (``length`` characters) for ``value`` in ``domain``."""
        return self.digest(domain, value).hex()[:length].upper()

    def date_offset_days(self, patient_key: str, low: int, high: int) -> int:
        """A keyed whole-day offset in ``[-high, -low]`` (dates move into the past) for one patient."""
        span = max(high - low, 0) + 1
        return -(low + int.from_bytes(self.digest("date-offset", patient_key)[:8], "big") % span)

    def path_id(self, label: str) -> str:
        """Keyed id (32 hex digits) of an input's relative path, as written in ``audit.jsonl``."""
        return self.digest("input-path", label).hex()[:32]


def new_key_file(path: str | Path) -> Keyring:
    """Create a new random key file (mode 0600); refuses to overwrite an existing one."""
    path = Path(path)
    if path.exists():
        raise UsageError(f"--new-key {path} already exists; pass it as --key-file to reuse it, or choose a new name")
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    return Keyring(secret)


def load_keyring(
    *,
    key_file: str | Path | None = None,
    new_key: str | Path | None = None,
    out_dir: str | Path | None = None,
    inputs: tuple[Path, ...] = (),
    environ: dict[str, str] | None = None,
) -> Keyring:
    """The key from ``key_file``, else a new key file ``new_key``, else ``$IMGSYNTH_DEID_KEY``.

    With none of the three the run is refused: pseudonyms made with a throw-away key could never be
    matched with those of a later batch. A new key file must lie outside ``out_dir`` and the inputs.
    """
    env = os.environ if environ is None else environ
    if key_file is not None and new_key is not None:
        raise UsageError("give either --key-file or --new-key, not both")
    if key_file is not None:
        path = Path(key_file)
        if path.is_dir():
            raise UsageError(f"--key-file {path} is a folder: give the key file itself")
        if not path.is_file():
            what = "not a regular file" if path.exists() else "key file not found"
            raise UsageError(f"{what}: {path} (create a key file with --new-key FILE)")
        return Keyring(path.read_bytes())
    if new_key is not None:
        path = Path(new_key)
        for folder, what in [(out_dir, "OUT_DIR"), *((p, "an input folder") for p in inputs)]:
            if folder is not None and is_within(path, folder):
                raise UsageError(f"--new-key {path} must lie outside {what} (the key must never travel with the data)")
        return new_key_file(path)
    if env.get(KEY_ENV):
        return Keyring(env[KEY_ENV])
    raise UsageError(
        f"no de-identification key: pass --key-file FILE, set ${KEY_ENV}, or create a new key with --new-key FILE "
        "(outside OUT_DIR); keep it to give later batches the same pseudonyms"
    )
