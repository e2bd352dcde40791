"""`python -m xcagw_devstack up|sandbox`: the local stack launcher and the NHS sandbox."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xcagw_devstack.launcher import Stack, run_forever


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "sandbox":
        from xcagw_devstack.sandbox.cli import main as sandbox_main

        sandbox_main(args[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m xcagw_devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Redis, the NHS sandbox and every service")
    up.add_argument("--env-file", type=Path, default=None, help="defaults file (dev.env)")
    up.add_argument("--workdir", type=Path, default=None, help="state and logs (.devstack)")
    up.add_argument("--free-ports", action="store_true", help="ignore ports in dev.env")
    sub.add_parser("sandbox", help="run the NHS sandbox alone")
    ns = parser.parse_args(args)
    if ns.command == "up":
        stack = Stack(workdir=ns.workdir, env_file=ns.env_file, free_ports=ns.free_ports)
        raise SystemExit(run_forever(stack))


if __name__ == "__main__":
    main()
