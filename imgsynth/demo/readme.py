"""``OUT_DIR/README.txt``: what each folder of the demo holds, how to re-run a stage, the figures."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from imgsynth.demo.steps import Context, Step
from imgsynth.utils.io import atomic_write_text

if TYPE_CHECKING:
    from imgsynth.demo.runner import DemoResult

WIDTH = 96


def _para(text: str, indent: str = "") -> str:
    return textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=indent, subsequent_indent=indent)


def _entry(name: str, text: str) -> str:
    lines = textwrap.wrap(" ".join(text.split()), WIDTH - 22)
    head = f"{name:<21} {lines[0] if lines else ''}"
    return "\n".join([head, *(" " * 22 + line for line in lines[1:])])


def folder_entries(ctx: Context) -> list[tuple[str, str]]:
    """(name, explanation) of every folder and file of the demo, in order."""
    mode = ctx.mode
    entries = [
        ("private/", "PRIVATE: deid.key, the secret key of the de-identification (keyed pseudonyms, UIDs, date "
         "shifts). Never share this folder or copy it next to the data: whoever holds the key can link the "
         "pseudonyms back. Keep it to give a later batch the same pseudonyms (--key-file), or delete it. "
         "Everything else in OUT_DIR holds no key and may be handed on."),
        ("1-deid/", "De-identified DICOM (PS3.15 Annex E Basic Profile, config deid_basic) of pydicom's test "
         "files and pydicom-data's files, named by their new Study/Series/Instance UIDs. audit.jsonl: one "
         "line per input (named by a keyed hash, never by its path); quarantine.jsonl: the inputs that were not "
         "de-identified, with the reason (malformed files, DICOMDIRs, non-DICOM files, images that may hold "
         "burned-in text); report.json: counts, options, key fingerprint, config."),
        ("1-deid-verify.json", "Result of 'imgsynth deid verify': every identifying value of the inputs "
         "searched in every output file (tags, raw bytes, file names); the demo stops unless it finds none."),
        ("2-dataset/", f"Dataset folder (config {mode.preprocess_config}) made from nilearn's MNI152 T1 template: "
         "2D slices of the three planes, manifest.csv + dataset.json + items/*.npy (values in [-1, 1]), with "
         "the conditions plane (axial/coronal/sagittal), position (relative slice level 0..1) and tissue (the "
         "grey- and white-matter probability maps as a 2-channel mask, masks/tissue/). Splits: with one "
         "subject, each plane's slices are cut into contiguous blocks of slice positions and whole blocks go "
         "to train/val/test; training slices next to a held-out block are dropped, so no test slice is a "
         "neighbour of a training slice."),
        ("requests/", "The conditions CSVs given to 'imgsynth generate --conditions-csv': one row per validation "
         f"slice (its plane, position and GM/WM maps), {mode.samples_per_condition} samples each. Validation "
         "slices were never trained on, so memorization is measured fairly, and they are not the test slices "
         "that the evaluation and the reader study compare with, so nothing of the test set leaks into the "
         "samples."),
    ]
    for model in mode.models:
        name = {"ldm": "latent diffusion model", "stylegan2": "StyleGAN2-ADA"}[model]
        entries.append((f"3-run-{model}/", f"Run folder of the {name} (config {mode.train_configs[model]}): "
                        "config.yaml, model.json, metrics.jsonl, weights/*.safetensors (latest and EMA), "
                        "checkpoints/, samples/ (preview grids), provenance.json."))
    for model in mode.models:
        masks = "masks/ (the tissue maps the samples were conditioned on), " if model == "ldm" else ""
        entries.append((f"4-samples-{model}/", "Sample set (a dataset folder, split 'synthetic'): items/*.npy, "
                        f"png/, nifti/ (physical units), dicom/ (marked as synthetic), {masks}manifest.csv with "
                        "each sample's conditions and seed, MODEL_CARD.md."))
    for model in mode.models:
        extra = " and the autoencoder's reconstruction SSIM / MS-SSIM (--run)" if model == "ldm" else ""
        entries.append((f"5-eval-{model}/", "Evaluation folder: report.json (every number with its recipe and "
                        "its real-vs-real floor) and report.html (open it in a browser): domain-encoder FD/KD, "
                        "precision/recall, MS-SSIM diversity, memorization against the training slices, "
                        f"intensity validators, TSTR/TRTR on predicting the plane{extra}."))
    entries += [
        ("6-review/", "Blinded reader study of the LDM samples against real test slices: readers/R01/ and "
         "readers/R02/ (hand one package to each reader; index.html opens offline, answers come back as "
         "answers.csv), key.csv beside readers/ (which case is real: never give it to a reader), review.json. "
         "Score the answers with 'imgsynth review score 6-review/key.csv answers-R01.csv answers-R02.csv OUT'."),
        ("cache/", "The evaluation's domain-encoder cache (safe to delete)."),
        ("demo.json", "The demo's record: mode, and per step its status, time and key figures. Running the "
         "same command again skips the steps recorded complete whose folders still pass their contract check "
         "and resumes an interrupted one."),
    ]
    return entries


WHY_NOT_DICOM = (
    "Why the de-identified CT/MR images are not added to the dataset as a further category: pydicom's "
    "and pydicom-data's files exist to test DICOM decoding, not to describe anatomy. The images among them "
    "are a few dozen slices, most of them the same handful of pictures in different encodings (tiny 16x16 "
    "and 64x64 MR/CT test images, a few 512x512 CT slices, radiographs, ultrasound), with unrelated body "
    "parts, sizes and units. As a category they would add a few near-duplicate images that no model can "
    "learn from, would have no slice plane, position or grey/white-matter maps to condition on, and would "
    "make the evaluation's numbers mix two unrelated populations. So the demo shows de-identification on "
    "those real files (stage 1) and synthesis on a real brain MRI whose conditions are meaningful (stages "
    "2-6); with your own CT or MR series the same stages chain directly: imgsynth preprocess 1-deid OUT."
)

CITATIONS = [
    "MNI152 template: MNI ICBM152 2009a nonlinear symmetric T1 template with its grey/white-matter "
    "probability maps, as shipped inside nilearn (mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz). Fonov VS, "
    "Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average age-appropriate brain templates "
    "from birth to adulthood. NeuroImage 47 (2009) S102. Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, "
    "Collins DL. Unbiased average age-appropriate atlases for pediatric studies. NeuroImage 54 (2011) 313-327. "
    "Collins DL, Zijdenbos AP, Baare WFC, Evans AC. ANIMAL+INSECT: improved cortical structure segmentation. "
    "IPMI 1999.",
    "DICOM files: pydicom's test files (pydicom, MIT licence) and pydicom-data 1.x (MIT licence).",
]


def write_readme(ctx: Context, steps: list[Step], result: DemoResult | None) -> None:
    mode = ctx.mode
    title = f"imgsynth demo ({mode.name}): what is in this folder"
    parts = [title, "=" * len(title), ""]
    parts.append(_para(
        f"Made by 'imgsynth demo {ctx.shown_root}{' --quick' if mode.name == 'quick' else ''}' from real data "
        "that installed packages ship (nothing is downloaded): the DICOM test files of pydicom and pydicom-data, "
        "and the MNI152 T1 brain template with its tissue maps shipped with nilearn. Each numbered folder is the "
        "output of one stage and the input of the next, in the folder formats of imgsynth/contracts.py."))
    parts.append("")
    parts += [_entry(name, text) for name, text in folder_entries(ctx)]
    parts += ["README.txt".ljust(21) + " This file.", ""]
    parts += [_para(WHY_NOT_DICOM), ""]
    parts.append("Re-run one stage alone on these folders (each resumes or finds its work done):")
    for step in steps:
        for command in step.commands(ctx):
            parts.append(f"  {command}")
    parts.append("")
    if result is not None:
        parts.append(f"Results ({result.total_seconds:.0f} s in all; this invocation {result.seconds:.0f} s):")
        for r in result.results:
            parts.append(f"  {r.step.stage}. {r.step.title} ({r.seconds:.0f} s): " + "; ".join(r.figures.lines))
        parts.append("")
        parts.append(_para(
            "These figures come from a model trained for minutes on one template brain: they show that the "
            "stages fit together and what each measures, not what imgsynth reaches on a real cohort."))
        parts.append("")
    parts.append("Data sources:")
    parts += [_para(c, "  ") for c in CITATIONS]
    atomic_write_text(ctx.layout.readme, "\n".join(parts) + "\n")


def summary_rows(result: DemoResult) -> list[tuple[str, str, str, str]]:
    """(stage, time, figures, folder) rows of the summary table."""
    rows = []
    for r in result.results:
        time_text = f"{r.seconds:.0f} s" + ("*" if r.skipped else "")
        rows.append((f"{r.step.stage}. {r.step.title}", time_text, r.figures.text, f"{r.folder.name}/"))
    return rows
