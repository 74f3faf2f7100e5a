"""`scopecheck.runtime.templates.html_templates`: the one Jinja environment of the run report
and the audit table, autoescaped and strict about undefined names."""

from __future__ import annotations

import jinja2
import pytest

from scopecheck.runtime.templates import html_templates


@pytest.mark.parametrize("package, template", [("scopecheck.report", "report.html.j2"),
                                               ("scopecheck.audit", "table.html.j2")])
def test_each_renderers_templates_load_escaped_and_strict(package, template):
    env = html_templates(package)
    assert env.get_template(template).filename.endswith(template)
    page = env.from_string("<p>{{ text }}</p>\n")
    assert page.render(text='<script>alert("x")</script> & co') == (
        "<p>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co</p>\n")   # trailing newline kept
    with pytest.raises(jinja2.UndefinedError):
        page.render()
    assert env.from_string("{% if a %}\n  yes\n{% endif %}\n").render(a=True) == "  yes\n"   # blocks trimmed
