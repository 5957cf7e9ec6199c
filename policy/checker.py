"""`llm-gateway policy check DIR`: validate a policy directory offline, as CI does."""

from __future__ import annotations

import argparse
import sys

from policy.issues import Issue, PolicyError
from policy.loader import load_directory
from policy.parse_register import MODELS_FILE, PURPOSES_FILE


def main(argv: list[str]) -> int:
    """Check the directory named in `argv`; print every error as `file:line: key: message`.

    Returns 0 when the policy is valid, 1 when it is not (2 for a usage error, from argparse).
    """
    parser = argparse.ArgumentParser(
        prog="llm-gateway policy check",
        description="Validate a policy directory (defaults.yaml plus one file per department).",
    )
    parser.add_argument("directory", help="the policy directory to check")
    parser.add_argument(
        "--require-register",
        action="store_true",
        help=f"fail unless the directory has both {MODELS_FILE} and {PURPOSES_FILE} (production)",
    )
    args = parser.parse_args(argv)
    try:
        policy = load_directory(args.directory)
        register = policy.register
        if args.require_register and (register.models is None or register.purposes is None):
            missing = [
                name
                for name, value in (
                    (MODELS_FILE, register.models),
                    (PURPOSES_FILE, register.purposes),
                )
                if value is None
            ]
            raise PolicyError(
                Issue(f"{args.directory}/{name}", 0, "-", "missing; --require-register needs it")
                for name in missing
            )
    except PolicyError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        print(f"{args.directory}: {len(err.issues)} error(s); policy rejected", file=sys.stderr)
        return 1
    names = ", ".join(sorted(policy.departments)) or "none"
    print(f"{args.directory}: OK, version {policy.version}, departments: {names}")
    if register.models is not None:
        print(f"  models registered: {', '.join(sorted(register.models)) or 'none'}")
    if register.purposes is not None:
        print(
            f"  purposes registered: {', '.join(sorted(register.purposes)) or 'none'} "
            f"(retention floor {register.retention_floor_days} days)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
