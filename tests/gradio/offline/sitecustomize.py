"""Put on PYTHONPATH of the app under test: with OPENSORA_TEST_NETWORK_LOG set, every connection to a
host other than this machine is refused and written to that file, so a test can check that the demo
calls no outside service (analytics, version checks, font or model downloads)."""

import ipaddress
import os
import socket

_LOG = os.environ.get("OPENSORA_TEST_NETWORK_LOG")


def _is_local(host: object) -> bool:
    if host in (None, "", "localhost", b"localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host))
    except ValueError:
        return False  # a name: looking it up is already an outside call
    return address.is_loopback or address.is_unspecified


def _refuse(what: object) -> None:
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(f"{what!r}\n")
    raise ConnectionRefusedError(f"the test forbids outside connections ({what!r})")


def _guard_connect(connect):
    def guarded(self, address):
        if isinstance(address, tuple) and not _is_local(address[0]):  # not a tuple: a Unix socket path
            _refuse(address)
        return connect(self, address)

    return guarded


def _guard_lookup(getaddrinfo):
    def guarded(host, *args, **kwargs):
        if not _is_local(host):
            _refuse(host)
        return getaddrinfo(host, *args, **kwargs)

    return guarded


if _LOG:
    socket.socket.connect = _guard_connect(socket.socket.connect)
    socket.socket.connect_ex = _guard_connect(socket.socket.connect_ex)
    socket.getaddrinfo = _guard_lookup(socket.getaddrinfo)
