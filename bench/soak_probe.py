#!/usr/bin/env python3
"""soak_probe.py: the hostile-review probes against a running bootd, one
round each time it is run. Only loopback addresses are used.

  soak_probe.py TFTP_PORT NFS_PORT SYSLOG_PORT

Each probe is what once made bootd lose memory, sockets or files:
  - 16 netascii RRQs for the initrd with timeout=255, never acknowledged;
  - 40 NFS connections whose record mark promises 4 MiB, held 10 s;
  - 30 NFS connections at once from one address (over the per-client cap);
  - one syslog TCP connection sending 16 MiB without a newline, and lines
    with control characters;
  - 500 TFTP requests at once from one address (over the request rate);
  - a bare 19-byte RRQ, never acknowledged.
It prints one line per probe: what bootd answered.
"""
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def rrq(name, mode, *opts):
    b = struct.pack("!H", 1) + name.encode() + b"\0" + mode.encode() + b"\0"
    for o in opts:
        b += o.encode() + b"\0"
    return b


def tftp_netascii(port):
    socks = []
    for i in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.4", 0))
        s.sendto(rrq("images/soak/1/initrd.img", "netascii", "timeout", "255"), (HOST, port))
        socks.append(s)
    answered = 0
    for s in socks:
        s.settimeout(2)
        try:
            s.recvfrom(2048)
            answered += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    return "netascii never-ACKed: %d/16 answered (then abandoned by bootd)" % answered


def tftp_bare(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.5", 0))
    s.sendto(rrq("images/soak/1/vmlinuz", "octet"), (HOST, port))
    s.settimeout(5)
    n = 0
    end = time.time() + 12
    while time.time() < end:
        try:
            s.recvfrom(2048)
            n += 1
        except OSError:
            break
    s.close()
    return "bare RRQ never ACKed: block 1 sent %d times" % n


def tftp_flood(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.6", 0))
    for _ in range(500):
        s.sendto(rrq("no/such/file", "octet"), (HOST, port))
    s.settimeout(1)
    n = 0
    while True:
        try:
            s.recvfrom(2048)
            n += 1
        except OSError:
            break
    s.close()
    return "500 RRQs at once from one address: %d answered" % n


def nfs_promises(port):
    conns = []
    for _ in range(40):
        c = socket.create_connection((HOST, port), timeout=5)
        c.sendall(bytes([0x80, 0x40, 0, 0, 1, 2, 3, 4]))
        conns.append(c)
    time.sleep(10)
    for c in conns:
        c.close()
    return "40 NFS connections promising 4 MiB records: held 10 s"


def nfs_flood(port):
    conns, closed = [], 0
    for _ in range(30):
        c = socket.socket()
        c.bind(("127.0.0.7", 0))
        c.settimeout(5)
        c.connect((HOST, port))
        conns.append(c)
    time.sleep(0.5)
    for c in conns:
        c.settimeout(0.05)
        try:
            if c.recv(1) == b"":
                closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        c.close()
    return "30 NFS connections from one address: %d closed at once" % closed


def syslog_abuse(port):
    c = socket.create_connection((HOST, port), timeout=10)
    c.sendall(b"<13>soak: forged\nline\x1b[2J and a bell\x07\n")
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        for _ in range(16):
            c.sendall(chunk)
            sent += len(chunk)
        c.sendall(b"\n")
    except OSError:
        pass
    c.close()
    return "syslog: %d MiB without a newline sent" % (sent >> 20)


def main():
    tport, nport, sport = (int(a) for a in sys.argv[1:4])
    for probe in (lambda: tftp_netascii(tport), lambda: tftp_flood(tport), lambda: nfs_flood(nport),
                  lambda: syslog_abuse(sport), lambda: nfs_promises(nport), lambda: tftp_bare(tport)):
        try:
            print("probe: " + probe(), flush=True)
        except OSError as e:
            print("probe: failed: %s" % e, flush=True)


if __name__ == "__main__":
    main()
