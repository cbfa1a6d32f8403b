"""``python3 -m haos.mgmt``: the management daemon, haos-mgmtd (:mod:`haos.mgmt.daemon`)."""

from haos.mgmt.daemon import main

raise SystemExit(main())
