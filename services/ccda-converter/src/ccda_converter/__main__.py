"""`ccda-converter`: convert / render on the command line, or (default, `serve`) the gRPC server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ccda_converter.bundle import BundleError
from ccda_converter.convert import convert_bundle
from ccda_converter.model import ConvertOptions
from ccda_converter.render import RenderError, render_html


def _convert(args: argparse.Namespace) -> int:
    try:
        data = Path(args.bundle).read_bytes()
    except OSError as exc:
        print(f"ccda-converter: cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        result = convert_bundle(
            data, options=ConvertOptions(document_id_root=args.document_id_root)
        )
    except BundleError as exc:
        print(f"ccda-converter: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.output:
        Path(args.output).write_bytes(result.ccd_xml)
    else:
        sys.stdout.buffer.write(result.ccd_xml)
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    print(f"document id: {result.document_id}", file=sys.stderr)  # noqa: T201
    for line in result.coverage_lines():
        print(line, file=sys.stderr)  # noqa: T201
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)  # noqa: T201
    return 0


def _render(args: argparse.Namespace) -> int:
    try:
        page = render_html(Path(args.ccd).read_bytes())
    except OSError as exc:
        print(f"ccda-converter: cannot read {args.ccd}: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return 2
    except RenderError as exc:
        print(f"ccda-converter: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.output:
        Path(args.output).write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


def _serve() -> int:
    from ccda_converter.server import run

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccda-converter", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    conv = sub.add_parser(
        "convert", help="GP Connect STU3 Bundle JSON -> C-CDA R2.1 CCD (stdout or -o)"
    )
    conv.add_argument("bundle")
    conv.add_argument("-o", "--output")
    conv.add_argument("--document-id-root", default="", help="OID for ClinicalDocument/id/@root")
    conv.set_defaults(func=_convert)
    rend = sub.add_parser("render", help="CCD XML -> printable HTML")
    rend.add_argument("ccd")
    rend.add_argument("-o", "--output")
    rend.set_defaults(func=_render)
    sub.add_parser("serve", help="run the gRPC server (the default)")
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        return _serve()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
