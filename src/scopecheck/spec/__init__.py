"""The SCOPE data model, the standard contracts, validation and the JSON Schema."""

from scopecheck.spec.jsonio import schema, schema_errors, to_json
from scopecheck.spec.model import Claim, Contract, Document, Scope, Selector
from scopecheck.spec.standard import STANDARD, standard_scope
from scopecheck.spec.validate import Resolved, contract_kind, resolve, validate

__all__ = ["Claim", "Contract", "Document", "Resolved", "STANDARD", "Scope", "Selector", "contract_kind", "resolve",
           "schema", "schema_errors", "standard_scope", "to_json", "validate"]
