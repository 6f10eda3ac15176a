"""`audit`: the audit's report of a dataset (JSON), its contact sheet beside it, and a summary."""
from __future__ import annotations

import sys
from pathlib import Path

from maskpair.errors import DataError


def add_commands(commands) -> None:
    audit = commands.add_parser("audit", help="audit every pair without a model: JSON report, contact sheet, summary",
                                description="Check every pair for empty masks, missing classes, duplicates, "
                                            "misplaced masks and the description's domain checks.")
    audit.add_argument("data_dir", type=Path, help="the dataset folder")
    audit.add_argument("--json", dest="json_path", type=Path, default=None,
                       help="the report (default: audit.json beside DATA_DIR)")
    audit.add_argument("--sheet", type=Path, default=None, help="the contact sheet (default: the report's path, .png)")
    audit.set_defaults(run=audit_command, command_parser=audit)


def audit_command(args) -> int:
    from maskpair import audit

    json_path = args.json_path or args.data_dir.resolve().parent / "audit.json"
    try:
        report = audit.audit_dataset(args.data_dir)
        audit.write_report(report, json_path)
        sheet = audit.contact_sheet(report, args.data_dir, args.sheet or json_path.with_suffix(".png"))
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    print(audit.format_summary(report))
    print(f"report: {json_path}\ncontact sheet: {sheet}")
    return 0
