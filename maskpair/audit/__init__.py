"""The audit: findings about a dataset without a model (integrity, content, alignment, the description's domain
checks), as a JSON report and a contact sheet.

    report = audit.audit_dataset("data/spine-mri")      # or: maskpair audit DATA --json FILE
    audit.write_report(report, "outputs/audit.json"); audit.contact_sheet(report, "data/spine-mri", "sheet.png")
"""
from maskpair.audit.dataset import audit_arrays, audit_dataset, flagged_by_audit
from maskpair.audit.report import (
                                   DATASET_FINDING_CODES,
                                   FLAG_CODES,
                                   current_report,
                                   flag_counts,
                                   flagged,
                                   format_summary,
                                   write_report,
)
from maskpair.audit.sheet import contact_sheet

__all__ = ["DATASET_FINDING_CODES", "FLAG_CODES", "audit_arrays", "audit_dataset", "contact_sheet",
           "current_report", "flag_counts", "flagged", "flagged_by_audit", "format_summary", "write_report"]
