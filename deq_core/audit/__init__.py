"""Verifiable decision reports and the hash-chained audit log.

``build_report`` explains one case and records everything needed to re-run it
(``ReportRecord``, written as ``report.json`` beside a readable ``report.html``);
``verify_report`` re-runs it from the record alone; every report written is
appended to the ``AuditLog``. The modules by job: ``hashing``, ``record``,
``report`` (build, write, log), ``html``, ``verify``, ``log`` and ``cli``.
"""

from deq_core.audit.hashing import record_sha256, tensor_sha256
from deq_core.audit.html import render_html
from deq_core.audit.log import AuditLog, default_url
from deq_core.audit.record import ReportRecord
from deq_core.audit.report import HTML_NAME, JSON_NAME, DecisionReport, ReportSettings, build_report, log_report
from deq_core.audit.verify import ReportVerification, verify_report
from deq_core.audit.cli import main

__all__ = [
    "AuditLog", "DecisionReport", "HTML_NAME", "JSON_NAME", "ReportRecord", "ReportSettings", "ReportVerification",
    "build_report", "default_url", "log_report", "main", "record_sha256", "render_html", "tensor_sha256",
    "verify_report",
]
