"""Writers shared by stages that hand images to people and their tools (DICOM for viewers and PACS)."""

from imgsynth.export.dicom import write_series

__all__ = ["write_series"]
