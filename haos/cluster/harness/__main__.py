"""``python -m haos.cluster.harness cleanup|up|soak``: see :mod:`haos.cli.harness`."""

from haos.cli.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
