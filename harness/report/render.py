"""The report's blocks rendered as Markdown (for GitHub: folded details moved to an appendix at the end) and
as one self-contained HTML page (figures inlined, details folded in place).

A block is a tuple whose first item says what it is: ``("h1"|"h2"|"h3", text)``, ``("p", text)``,
``("verdict", verdict, reason)``, ``("summary"|"table", frame)``, ``("facts", [(name, text)])``,
``("toc", [(title, anchor)])``, ``("figure", path, caption)``, ``("code", text)`` and
``("details", title, [block, ...])``."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def _md_cell(value) -> str:
    return html.escape(str(value).replace("|", "\\|").replace("\n", " "), quote=False)


def _md_text(text: str) -> str:
    """Text from a run (a suite's description, a reason) shown as text by Markdown renderers that would
    otherwise pass HTML through."""
    return html.escape(text, quote=False)


def _md_table(frame: pd.DataFrame) -> str:
    table = frame.map(_md_cell) if not frame.empty else frame
    return tabulate(table, headers=[_md_cell(c) for c in frame.columns], tablefmt="github", showindex=False,
                    disable_numparse=True)


def render_markdown(blocks: list[tuple]) -> str:
    out, appendix = [], []

    def render(block, sink):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            sink.append("#" * int(kind[1]) + " " + _md_text(block[1]))
        elif kind == "p":
            sink.append(_md_text(block[1]))
        elif kind == "verdict":
            sink.append(f"**Verdict: {block[1]}.** {_md_text(block[2])}")
        elif kind in ("table", "summary"):
            sink.append(_md_table(block[1]))
        elif kind == "facts":
            sink.append("\n".join(f"- **{k}**: {_md_text(v)}" for k, v in block[1]))
        elif kind == "toc":
            sink.append("Contents: " + " · ".join(f"[{t}](#{a})" for t, a in block[1]))
        elif kind == "figure":
            sink.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        elif kind == "code":
            sink.append(f"```bash\n{block[1]}\n```")
        elif kind == "details":
            # Folded away in HTML; in Markdown moved to the end, so that the answer reads first.
            heading = f"Appendix: {block[1]}"
            sink.append(f"Details: [{block[1]}](#{slug(heading)}).")
            appendix.append("### " + _md_text(heading))
            for inner in block[2]:
                render(inner, appendix)

    for block in blocks:
        render(block, out)
    return "\n\n".join(out + appendix) + "\n"


_CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 1em auto;
       padding: 0 0.8em; color: #222; line-height: 1.4; font-size: 15px; }
h1 { font-size: 1.45em; margin: 0.3em 0; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.84em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.summary td { font-size: 1.05em; } table.summary td:nth-child(3) { white-space: nowrap; }
table.summary td:last-child { min-width: 16em; }
@media (max-width: 720px) {  /* the answers stacked, one card per claim, rather than scrolled sideways */
  table.summary thead { display: none; }
  table.summary, table.summary tbody, table.summary tr, table.summary td { display: block; min-width: 0; }
  table.summary tr { border: 1px solid #ccc; margin-bottom: 0.5em; } table.summary td { border: none; }
  table.summary td:first-child { font-weight: bold; }
}
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
ul.facts { font-size: 0.85em; padding-left: 1.2em; margin: 0.5em 0; } ul.facts li { overflow-wrap: anywhere; }
nav { font-size: 0.9em; margin: 0.6em 0; } nav a { margin-right: 0.8em; }
details { margin: 0.5em 0; } summary { cursor: pointer; color: #0453a0; }
p { overflow-wrap: anywhere; }
.verdict { font-weight: bold; padding: 0.05em 0.45em; border-radius: 0.3em; white-space: nowrap; }
.supported { background: #d4edda; } .not-supported { background: #f8d7da; } .inconclusive { background: #fff3cd; }
"""


def _inline_html(text: str) -> str:
    """Escape, then show `code` spans as in the Markdown."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _verdict_span(verdict: str) -> str:
    return f'<span class="verdict {verdict.replace(" ", "-")}">{html.escape(verdict)}</span>'


def _html_table(frame: pd.DataFrame, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            text = _verdict_span(str(value)) if column == "verdict" else html.escape(str(value))
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table{f" class={chr(34)}{css}{chr(34)}" if css else ""}><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    def render(block) -> str:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            return f'<{kind} id="{slug(block[1])}">{html.escape(block[1])}</{kind}>'
        if kind == "p":
            return f"<p>{_inline_html(block[1])}</p>"
        if kind == "verdict":
            return f"<p>{_verdict_span(block[1])} {html.escape(block[2])}</p>"
        if kind == "summary":
            return _html_table(block[1], "summary")
        if kind == "table":
            return _html_table(block[1])
        if kind == "facts":
            return '<ul class="facts">' + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                                  for k, v in block[1]) + "</ul>"
        if kind == "toc":
            return "<nav>Contents: " + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for t, a in block[1]) + "</nav>"
        if kind == "figure":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            caption = html.escape(block[2])
            return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}" loading="lazy">'
                    f"<figcaption>{caption}</figcaption></figure>")
        if kind == "code":
            return f"<pre><code>{html.escape(block[1])}</code></pre>"
        if kind == "details":
            inner = "\n".join(render(b) for b in block[2])
            return f'<details id="{slug("Appendix: " + block[1])}"><summary>{html.escape(block[1])}</summary>\n{inner}\n</details>'
        return ""

    body = [render(b) for b in blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
