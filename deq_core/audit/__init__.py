"""Verifiable decision reports and the hash-chained audit log.

``build_report`` explains one case and records everything needed to re-run it
(``ReportRecord``, written as ``report.json`` beside a readable ``report.html``);
``issue`` records it in the ``AuditLog``, signs it with the deployment key
(``signing``) and writes it; ``verify_report`` re-runs it from the record alone
and checks it was issued. The modules by job: ``hashing``, ``signing``, ``record``,
``report`` (build, write, issue), ``files`` (names, checkpoints, files vs log),
``html``, ``verify``, ``log`` and ``cli``. Threat model: ``docs/audit.md``.
"""

from deq_core.audit.hashing import record_sha256, tensor_sha256
from deq_core.audit.html import render_html
from deq_core.audit.log import AuditLog, default_url
from deq_core.audit.record import ReportRecord
from deq_core.audit.report import HTML_NAME, JSON_NAME, DecisionReport, ReportSettings, build_report, issue, log_report
from deq_core.audit.signing import Checkpoint, SigningKey, load_deployment_key
from deq_core.audit.files import check_files, read_checkpoint, safe_name
from deq_core.audit.verify import ReportVerification, verify_report
from deq_core.audit.cli import main

__all__ = [
    "AuditLog", "Checkpoint", "DecisionReport", "HTML_NAME", "JSON_NAME", "ReportRecord", "ReportSettings",
    "ReportVerification", "SigningKey", "build_report", "check_files", "default_url", "issue", "load_deployment_key",
    "log_report", "main", "read_checkpoint", "record_sha256", "render_html", "safe_name", "tensor_sha256",
    "verify_report",
]
