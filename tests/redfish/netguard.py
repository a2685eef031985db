"""Keeps the DMTF tools on loopback: imported by the wrappers before the tools run.

- Unsets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE: requests lets them override a session's
  verify=False (Session.merge_environment_settings replaces a request-level verify=None with the
  bundle), so a self-signed service certificate would be rejected.
- Refuses, in this process, every socket connect()/sendto() whose address is not loopback
  (127.0.0.0/8, ::1) or one of the addresses of the service under test (--rhost, resolved
  once). Multicast (SSDP M-SEARCH to 239.255.255.250 / ff02::c) and downloads from dmtf.org
  therefore fail locally with an OSError instead of leaving the machine.
"""
import ipaddress
import os
import socket
import sys
from urllib.parse import urlsplit

for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)

_allowed = set()


def _is_allowed(address):
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like
    host = str(address[0]).split("%", 1)[0]
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        # a name passed straight to connect() (e.g. 'localhost'): judge every address it has
        try:
            ips = [ipaddress.ip_address(i[4][0].split("%", 1)[0]) for i in _orig_getaddrinfo(host, None)]
        except (OSError, ValueError):
            return False
    return bool(ips) and all(ip.is_loopback or str(ip) in _allowed for ip in ips)


def allow_rhost(rhost):
    """Also allows the addresses the service URL resolves to (e.g. a test host in a netns)."""
    if not rhost:
        return
    if "://" not in rhost:
        rhost = "https://" + rhost
    host = urlsplit(rhost).hostname
    if not host:
        return
    try:
        for info in _orig_getaddrinfo(host, None):
            _allowed.add(info[4][0].split("%", 1)[0])
    except OSError:
        pass


class _Refused(OSError):
    pass


_orig_getaddrinfo = socket.getaddrinfo
_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex
_orig_sendto = socket.socket.sendto


def _connect(self, address):
    if not _is_allowed(address):
        raise _Refused(f"netguard: refused connection to {address!r} (only loopback and the service)")
    return _orig_connect(self, address)


def _connect_ex(self, address):
    if not _is_allowed(address):
        raise _Refused(f"netguard: refused connection to {address!r} (only loopback and the service)")
    return _orig_connect_ex(self, address)


def _sendto(self, data, *args):
    address = args[-1]
    if not _is_allowed(address):
        raise _Refused(f"netguard: refused datagram to {address!r} (only loopback and the service)")
    return _orig_sendto(self, data, *args)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.socket.sendto = _sendto


def rhost_from_argv(argv):
    """Finds the --rhost/-r value (both tools use it) in a command line."""
    for i, a in enumerate(argv):
        if a in ("--rhost", "-r", "--ip", "-i") and i + 1 < len(argv):
            return argv[i + 1]
        for p in ("--rhost=", "--ip="):
            if a.startswith(p):
                return a[len(p):]
    return None


if __name__ == "__main__":
    sys.exit("netguard is a module")
