"""The contract language: Lark grammar, parser to spec, canonical formatter."""

from scopecheck.dsl.format import format_document, format_documents, format_text
from scopecheck.dsl.parser import grammar_text, parse_file, parse_layout, parse_text

__all__ = ["format_document", "format_documents", "format_text", "grammar_text", "parse_file", "parse_layout",
           "parse_text"]
