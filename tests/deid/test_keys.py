"""The key: keyed UIDs and pseudonyms, where the key may come from, and that it never leaks."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
from pydicom.uid import UID

from imgsynth.deid.keys import KEY_ENV, Keyring, load_keyring
from imgsynth.errors import UsageError

from .conftest import KEY


def _uid_in_other_process(args: tuple[str, str]) -> str:
    key, uid = args
    return Keyring(key).uid(uid)


def test_uid_mapping_is_deterministic_valid_and_keyed() -> None:
    a, b = Keyring(KEY), Keyring(KEY)
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    new = a.uid(uid)
    assert new == b.uid(uid)
    assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
    assert int(new[5:]) < 2**128
    assert a.uid(uid + "1") != new
    assert Keyring(KEY + "x").uid(uid) != new  # another key: unrelated UIDs
    with mp.get_context("spawn").Pool(1) as pool:  # same key, another process
        assert pool.map(_uid_in_other_process, [(KEY, uid)]) == [new]


def test_date_offsets_are_keyed_per_patient_and_in_range() -> None:
    keys = Keyring(KEY)
    offsets = {keys.date_offset_days(f"patient{i}", 365, 3650) for i in range(200)}
    assert all(-3650 <= o <= -365 for o in offsets)
    assert len(offsets) > 150
    assert keys.date_offset_days("p", 365, 3650) == Keyring(KEY).date_offset_days("p", 365, 3650)


def test_fingerprint_identifies_the_key_without_revealing_it() -> None:
    keys = Keyring(KEY)
    assert keys.fingerprint == Keyring(KEY).fingerprint != Keyring(KEY + "x").fingerprint
    assert KEY not in repr(keys) and KEY not in keys.fingerprint


def test_key_sources_in_order(tmp_path: Path) -> None:
    key_file = tmp_path / "k.txt"
    key_file.write_text(KEY + "\n")
    assert load_keyring(key_file=key_file, environ={}).fingerprint == Keyring(KEY).fingerprint
    assert load_keyring(environ={KEY_ENV: KEY}).fingerprint == Keyring(KEY).fingerprint
    new = load_keyring(new_key=tmp_path / "keys" / "new.key", out_dir=tmp_path / "out", environ={})
    assert (tmp_path / "keys" / "new.key").stat().st_mode & 0o077 == 0
    assert load_keyring(key_file=tmp_path / "keys" / "new.key", environ={}).fingerprint == new.fingerprint


def test_refusals_are_one_line_and_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--key-file FILE.*IMGSYNTH_DEID_KEY.*--new-key FILE"):
        load_keyring(environ={})
    with pytest.raises(UsageError, match="outside OUT_DIR"):
        load_keyring(new_key=tmp_path / "out" / "k", out_dir=tmp_path / "out", environ={})
    (tmp_path / "exists").write_text(KEY)
    with pytest.raises(UsageError, match="already exists"):
        load_keyring(new_key=tmp_path / "exists", environ={})
    with pytest.raises(UsageError, match="too short"):
        Keyring("short")
    with pytest.raises(UsageError, match="not found"):
        load_keyring(key_file=tmp_path / "missing", environ={})
    for exc_text in ("outside OUT_DIR", "already exists"):
        assert "\n" not in exc_text


def test_new_key_is_random(tmp_path: Path) -> None:
    a = load_keyring(new_key=tmp_path / "a", environ={})
    b = load_keyring(new_key=tmp_path / "b", environ={})
    assert a.fingerprint != b.fingerprint
    assert len((tmp_path / "a").read_text().strip()) == 64
    assert os.stat(tmp_path / "a").st_size == 65


def test_key_file_that_is_not_a_file_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder: give the key file itself"):
        load_keyring(key_file=tmp_path, environ={})
    with pytest.raises(UsageError, match="^not a regular file: /dev/null"):
        load_keyring(key_file="/dev/null", environ={})
    with pytest.raises(UsageError, match="^key file not found"):
        load_keyring(key_file=tmp_path / "missing.key", environ={})
