"""`harness schema`: the JSON Schema of a suite file, for editors (docs/guide.md)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "schema", help="print the JSON Schema of a suite file",
        description="Print the JSON Schema of a suite file (draft 2020-12), for an editor to complete and check "
                    "suites: save it and put `# yaml-language-server: $schema=PATH` on a suite's first line.")
    parser.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    parser.set_defaults(func=main)


def main(args) -> int:
    from harness.spec.schema import suite_schema

    text = json.dumps(suite_schema(), indent=2) + "\n"
    if args.out:
        from harness.results.atomic import write_text_atomic

        write_text_atomic(args.out, text)
    else:
        print(text, end="")
    return 0
