"""Private attributes: removed by default; Retain Safe Private keeps only a documented safe list.

An element is kept only when its private creator and element byte are on the list *and* its VR is
the one listed (numbers and short codes: acquisition parameters that identify no one, such as
diffusion b-values and gradient directions, the examples PS3.15 E.3.10 gives). Kept text values are
still cleaned of the file's identifying values. Creators whose blocks keep nothing are removed.
Users add entries through the config (``private.safe``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SafePrivate:
    creator: str
    group: int
    element: int  # low byte of the element number (the ``xx`` of ``(gggg,xxee)``)
    vr: str
    name: str

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.creator.strip().upper(), self.group, self.element)


def _entries(creator: str, group: int, items: dict[int, tuple[str, str]]) -> list[SafePrivate]:
    return [SafePrivate(creator, group, el, vr, name) for el, (vr, name) in items.items()]


# Acquisition parameters only; VRs as in pydicom's private dictionary (checked by the tests).
SAFE_PRIVATE: tuple[SafePrivate, ...] = tuple(
    _entries("SIEMENS MR HEADER", 0x0019, {
        0x0A: ("US", "NumberOfImagesInMosaic"),
        0x0B: ("DS", "SliceMeasurementDuration"),
        0x0C: ("IS", "B_value"),
        0x0D: ("CS", "DiffusionDirectionality"),
        0x0E: ("FD", "DiffusionGradientDirection"),
        0x14: ("IS", "ImaRelTablePosition"),
        0x15: ("FD", "SlicePosition_PCS"),
        0x17: ("DS", "SliceResolution"),
        0x18: ("IS", "RealDwellTime"),
        0x27: ("FD", "B_matrix"),
        0x28: ("FD", "BandwidthPerPixelPhaseEncode"),
        0x29: ("FD", "MosaicRefAcqTimes"),
    })
    + _entries("GEMS_ACQU_01", 0x0019, {
        0x23: ("DS", "Table Speed [mm/rotation]"),
        0x24: ("DS", "Mid Scan Time [sec]"),
        0x27: ("DS", "Rotation Speed [msec]"),
    })
    + _entries("GEMS_PARM_01", 0x0043, {
        0x27: ("SH", "Scan Pitch Ratio"),
        0x39: ("IS", "Slop_int_6... slop_int_9 (b-value)"),
    })
    + _entries("Philips Imaging DD 001", 0x2001, {
        0x03: ("FL", "Diffusion B-Factor"),
        0x04: ("CS", "Diffusion Direction"),
    })
    + _entries("Philips MR Imaging DD 005", 0x2005, {
        0xB0: ("FL", "Diffusion Direction RL"),
        0xB1: ("FL", "Diffusion Direction AP"),
        0xB2: ("FL", "Diffusion Direction FH"),
    })
    + _entries("Philips PET Private Group", 0x7053, {
        0x00: ("DS", "SUV Factor"),
        0x09: ("DS", "Activity Concentration Scale Factor"),
    })
)


def safe_index(extra: tuple[SafePrivate, ...] = ()) -> dict[tuple[str, int, int], SafePrivate]:
    """``(CREATOR, group, element byte) -> entry`` for the built-in list plus ``extra``."""
    return {e.key: e for e in (*SAFE_PRIVATE, *extra)}


def parse_safe_tag(text: str) -> tuple[int, int]:
    """``"(0019,xx0C)"`` or ``"0019xx0C"`` -> ``(0x0019, 0x0C)``; the group must be odd."""
    t = text.strip().strip("()").replace(",", "").lower()
    if len(t) != 8 or t[4:6] != "xx":
        raise ValueError(f"private tag '{text}' must look like (gggg,xxee)")
    group, element = int(t[:4], 16), int(t[6:], 16)
    if not group & 1:
        raise ValueError(f"private tag '{text}' must have an odd group")
    return group, element
