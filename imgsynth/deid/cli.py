"""``imgsynth deid run`` and ``imgsynth deid verify`` (heavy imports inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgsynth.utils.log import console


def register(app: typer.Typer) -> None:
    deid_app = typer.Typer(
        help="De-identify DICOM per PS3.15 Annex E, and scan outputs for residual identifying values.",
        no_args_is_help=True,
    )
    app.add_typer(deid_app, name="deid")
    deid_app.command("run")(run)
    deid_app.command("verify")(verify)


def run(
    paths: Annotated[list[Path], typer.Argument(help="IN_DIR... OUT_DIR: input folders (or files), output folder last.",
                                               metavar="IN_DIR... OUT_DIR")],
    config: Annotated[str, typer.Option("--config", "-c", help="Built-in config name or YAML path.")] = "deid_basic",
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Profile option to add (repeatable): retain_safe_private, retain_uids, retain_device_identity, "
        "retain_institution_identity, retain_patient_characteristics, retain_long_full_dates, "
        "retain_long_modified_dates, clean_descriptors, clean_structured_content, clean_graphics.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config value: key.sub=value.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="File holding the secret key (else $IMGSYNTH_DEID_KEY).")] = None,
    new_key: Annotated[Path | None, typer.Option(help="Create a new key file here (outside OUT_DIR) and use it.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: the config's, 1).")] = None,
    layout: Annotated[str | None, typer.Option(
        help="uid: outputs named by new Study/Series/Instance UIDs (default); mirror: keep input relative paths "
        "(only for trees whose names identify no one).")] = None,
    mapping: Annotated[Path | None, typer.Option(help="Write input -> output and original -> pseudonym CSV here "
                                                       "(identifying: outside OUT_DIR).")] = None,
    quarantine_dir: Annotated[Path | None, typer.Option(help="Copy inputs that were not de-identified here "
                                                             "(outside OUT_DIR) for review.")] = None,
) -> int:
    """De-identify every DICOM file under IN_DIR... into OUT_DIR (exit 3 if some were quarantined)."""
    from imgsynth.deid.tree import anonymize_tree
    from imgsynth.errors import UsageError

    if len(paths) < 2:
        raise UsageError("give IN_DIR... OUT_DIR (at least one input folder, then the output folder)")
    summary = anonymize_tree(
        paths[:-1], paths[-1], config=config, options=option or (), overrides=set_ or (), key_file=key_file,
        new_key=new_key, workers=workers, layout=layout, mapping=mapping, quarantine_dir=quarantine_dir,
    )
    c = summary.counts
    console.print(
        f"deid: {c['done']} of {c['inputs']} inputs de-identified ({c['written']} files written, "
        f"{c['identical_not_rewritten']} identical not rewritten, {c['resumed']} done earlier), "
        f"{c['quarantined']} quarantined -> {summary.out_dir} (key fingerprint {summary.key_fingerprint})",
        highlight=False, soft_wrap=True,
    )
    for reason, n in list(summary.quarantine_reasons.items())[:8]:
        console.print(f"  quarantined {n:5d}: {reason}", highlight=False, soft_wrap=True)
    if c["quarantined"]:
        console.print(f"  reasons per input: {summary.out_dir / 'quarantine.jsonl'}", highlight=False, soft_wrap=True)
    return summary.exit_code


def verify(
    paths: Annotated[list[Path], typer.Argument(help="OUT_DIR (further folders after --against are inputs too).",
                                               metavar="OUT_DIR")],
    against: Annotated[list[Path] | None, typer.Option(
        "--against", help="Input folder the outputs were made from (repeatable).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the hits as JSON here.")] = None,
    show: Annotated[int, typer.Option(help="Hits to print.")] = 50,
) -> int:
    """Scan OUT_DIR for any identifying value of the inputs (exit 1 when something is found)."""
    from imgsynth.deid.verify import verify_tree
    from imgsynth.errors import UsageError

    inputs = [*(against or []), *paths[1:]]
    if not inputs:
        raise UsageError("give the input folders with --against IN_DIR")
    result = verify_tree(paths[0], inputs, report=report)
    for hit in result.hits[:show]:
        console.print(f"  {hit.line()}", highlight=False, soft_wrap=True)
    verdict = "no identifying value found" if result.ok else f"{len(result.hits)} hit(s)"
    console.print(
        f"deid verify: {result.outputs_scanned} outputs scanned for {sum(result.values.values())} identifying values "
        f"of {result.inputs_scanned} inputs: {verdict}",
        highlight=False, soft_wrap=True,
    )
    return 0 if result.ok else 1
