"""Audit published attribution claims (DESIGN section 1, use 3).

A claim file states what a paper computed, the question its text answers and the numbers
it reports. The audit reports

* which SCOPE elements the claim leaves unstated, after filling from ``use`` and from the
  named toolkit's usual contract (and says which came from the toolkit);
* the contract kind computed vs the question asked, naming the self-attribution fallacy
  and writing out the contract that would answer the question;
* reported numbers outside their mathematical range;
* whether the method can compute the stated contract;

and gives a :class:`Verdict` (``supported`` | ``unsupported`` | ``underspecified``). With a
model and a prompt, :func:`audit_dynamic` re-runs the claim under its own contract and
under the answering one and reports both maps and the mass that moves between them.

Modules: :mod:`.static` (no model), :mod:`.verdict`, :mod:`.dynamic` (runs the engine),
:mod:`.render` (``audit_paths``, ``exit_code``, text / markdown / HTML / JSON per claim),
:mod:`.table` (the audit table: one row per claim and a summary; JSON with a published schema)
and :mod:`.table_render` (the table as Markdown and as one HTML page).
"""

from scopecheck.audit.dynamic import DynamicAudit, MapView, ReportedAgreement, TokenView, audit_dynamic, spearman
from scopecheck.audit.render import (
    AuditReport,
    audit_claim,
    audit_paths,
    exit_code,
    render_html,
    render_markdown,
    render_text,
    to_json,
)
from scopecheck.audit.static import (
    PROMPT_QUESTIONS,
    QUESTION_ACCEPTS,
    QUESTION_CONTRACT,
    ImpossibleNumber,
    StaticAudit,
    audit_static,
)
from scopecheck.audit.table import AuditTable, Summary, TableRow, build_table, table_json, table_schema
from scopecheck.audit.table_render import render_table_html, render_table_markdown
from scopecheck.audit.verdict import ExpectOutcome, Verdict, evaluate_expectations, judge

__all__ = [
    "AuditReport",
    "AuditTable",
    "DynamicAudit",
    "ExpectOutcome",
    "ImpossibleNumber",
    "MapView",
    "PROMPT_QUESTIONS",
    "QUESTION_ACCEPTS",
    "QUESTION_CONTRACT",
    "ReportedAgreement",
    "StaticAudit",
    "Summary",
    "TableRow",
    "TokenView",
    "Verdict",
    "audit_claim",
    "audit_dynamic",
    "audit_paths",
    "audit_static",
    "build_table",
    "evaluate_expectations",
    "exit_code",
    "judge",
    "render_html",
    "render_markdown",
    "render_table_html",
    "render_table_markdown",
    "render_text",
    "spearman",
    "table_json",
    "table_schema",
    "to_json",
]
