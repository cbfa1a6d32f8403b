"""COpCo: operation locks on sub-trees of the containment tree.

:mod:`.leases` is the pure core (a lock is a lease: owner, kind, reason, expiry; the
decisions to acquire, renew, release, break and drop); :mod:`.scope` says which sub-trees an
operator command changes. The adapter over the CCR is :mod:`haos.services.oplocks`.
"""
