"""`llm-gateway policy check DIR`: validate a policy directory offline, as CI does."""

from __future__ import annotations

import argparse
import sys

from policy.issues import PolicyError
from policy.loader import load_directory


def main(argv: list[str]) -> int:
    """Check the directory named in `argv`; print every error as `file:line: key: message`.

    Returns 0 when the policy is valid, 1 when it is not (2 for a usage error, from argparse).
    """
    parser = argparse.ArgumentParser(
        prog="llm-gateway policy check",
        description="Validate a policy directory (defaults.yaml plus one file per department).",
    )
    parser.add_argument("directory", help="the policy directory to check")
    args = parser.parse_args(argv)
    try:
        policy = load_directory(args.directory)
    except PolicyError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        print(f"{args.directory}: {len(err.issues)} error(s); policy rejected", file=sys.stderr)
        return 1
    names = ", ".join(sorted(policy.departments)) or "none"
    print(f"{args.directory}: OK, version {policy.version}, departments: {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
