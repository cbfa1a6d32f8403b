"""QEMU guests of the appliance image, for tests and for trying clusters by hand.

* :mod:`~haoslab.vm.machine`: one guest (UEFI under TCG, a copy-on-write overlay of the image, two
  NICs, serial console log, report port, QMP and guest-agent sockets) and a cluster of them.
* :mod:`~haoslab.vm.hub`: the virtual Ethernet segments: a hub over unix datagram sockets, so no
  test traffic touches the host's network.
* :mod:`~haoslab.vm.qmp` and :mod:`~haoslab.vm.qga`: the QEMU monitor (kill, reset, link cuts,
  hot-plug) and the guest agent (run a command in the guest).
* :mod:`~haoslab.vm.reports`: the ``haos-report`` lines the guest writes to its report port.
"""
