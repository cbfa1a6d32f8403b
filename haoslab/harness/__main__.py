"""``python -m haoslab.harness cleanup|up|soak``: see :mod:`haoslab.cli.harness`."""

from haoslab.cli.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
