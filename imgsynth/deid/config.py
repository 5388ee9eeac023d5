"""Config schema of the ``deid`` stage (kind ``deid``; pydantic and stdlib only)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from imgsynth.config import ConfigBase, register_config
from imgsynth.deid.private import parse_safe_tag
from imgsynth.deid.profile import Option

Action = Literal["X", "Z", "D", "K", "C", "U"]
_ATTRIBUTE = re.compile(r"^(\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)|[A-Za-z][A-Za-z0-9]*)$")

# SOP classes whose pixels commonly carry burned-in text, or whose content cannot be checked.
RISKY_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image (retired)
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF (document content)
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA (document content)
]
RISKY_MODALITIES = ["US", "IVUS", "ES", "XC", "GM", "SC"]


class DatesConfig(ConfigBase):
    """Date offsets for the Modified Dates option: whole days in [-max_shift_days, -min_shift_days]."""

    min_shift_days: int = Field(365, ge=1)
    max_shift_days: int = Field(3650, ge=1)

    @model_validator(mode="after")
    def _order(self) -> DatesConfig:
        if self.max_shift_days < self.min_shift_days:
            raise ValueError("dates.max_shift_days must be >= dates.min_shift_days")
        return self


class SafePrivateEntry(ConfigBase):
    """A private attribute to keep under Retain Safe Private, besides the built-in list."""

    creator: str
    tag: str  # "(gggg,xxee)"
    vr: str
    name: str = ""

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        parse_safe_tag(v)
        return v

    @field_validator("vr")
    @classmethod
    def _vr(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{2}", v):
            raise ValueError(f"'{v}' is not a VR (two capital letters, e.g. DS)")
        return v


class PrivateConfig(ConfigBase):
    safe: list[SafePrivateEntry] = Field(default_factory=list)


class CleanRule(ConfigBase):
    """Rectangles to blank (Clean Pixel Data) for images matching every field given."""

    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None
    rectangles: list[tuple[int, int, int, int]]  # [x0, y0, x1, y1]: columns x0..x1-1, rows y0..y1-1

    @field_validator("rectangles")
    @classmethod
    def _rects(cls, v: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        if not v:
            raise ValueError("give at least one rectangle [x0, y0, x1, y1]")
        for x0, y0, x1, y1 in v:
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"rectangle {[x0, y0, x1, y1]} needs 0 <= x0 < x1 and 0 <= y0 < y1")
        return v


class PixelsConfig(ConfigBase):
    """Burned-in text: risky images are quarantined unless allowed or cleaned by a rule."""

    burned_in: Literal["quarantine", "allow"] = "quarantine"
    risky_modalities: list[str] = Field(default_factory=lambda: list(RISKY_MODALITIES))
    risky_sop_classes: list[str] = Field(default_factory=lambda: list(RISKY_SOP_CLASSES))
    clean: list[CleanRule] = Field(default_factory=list)


@register_config("deid")
class DeidConfig(ConfigBase):
    """De-identification per DICOM PS3.15 Annex E (Basic Profile + options)."""

    options: list[Option] = Field(default_factory=list)
    # Per-attribute overrides of the table (keyword or "(gggg,eeee)" -> X Z D K C U).
    actions: dict[str, Action] = Field(default_factory=dict)
    # Standard text attributes outside Table E.1-1: "clean" keeps them without the file's
    # identifying values; "remove" removes them (may make files non-conformant).
    unlisted_text: Literal["clean", "remove"] = "clean"
    pseudonym_prefix: str = "ANON"
    dates: DatesConfig = Field(default_factory=DatesConfig)
    private: PrivateConfig = Field(default_factory=PrivateConfig)
    pixels: PixelsConfig = Field(default_factory=PixelsConfig)
    layout: Literal["uid", "mirror"] = "uid"
    workers: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[Option]) -> list[Option]:
        if Option.RETAIN_LONG_FULL_DATES in v and Option.RETAIN_LONG_MODIFIED_DATES in v:
            raise ValueError("retain_long_full_dates and retain_long_modified_dates exclude each other")
        return list(dict.fromkeys(v))

    @field_validator("actions")
    @classmethod
    def _actions(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ATTRIBUTE.match(key):
                raise ValueError(f"'{key}' is neither a keyword nor a tag (gggg,eeee)")
        return v

    @field_validator("pseudonym_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]{0,8}", v):
            raise ValueError("pseudonym_prefix must be 0-8 capital letters or digits")
        return v
