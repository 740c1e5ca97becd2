#!/usr/bin/env python3
"""Talk to baresip's ctrl_tcp module (JSON in netstrings), stdlib only.

  baresip_ctl.py PORT COMMAND [PARAMS...]   send one command ("dial sip:x",
                                             "hangup", "message hi", ...), print
                                             the response's data, exit 0 if ok
  baresip_ctl.py PORT --serve FIFO LOGFILE  stay connected: every line written
                                             to FIFO is sent as a command;
                                             events and responses are appended
                                             to LOGFILE as JSON lines (first
                                             line: {"ctl": "connected"})

baresip 1.0's ctrl_tcp keeps a single connection (a new one replaces the
old), so a phone driven by baresip.sh sends every command through its
--serve process and never opens a second connection.
"""

import json
import os
import select
import socket
import sys
import time


def netstring(obj) -> bytes:
    b = json.dumps(obj).encode()
    return str(len(b)).encode() + b":" + b + b","


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while True:
            colon = self.buf.find(b":")
            if colon < 0:
                break
            try:
                n = int(self.buf[:colon])
            except ValueError:
                self.buf = b""  # not a netstring stream: resynchronise
                break
            if len(self.buf) < colon + 1 + n + 1:
                break
            payload = self.buf[colon + 1:colon + 1 + n]
            self.buf = self.buf[colon + 1 + n + 1:]
            try:
                out.append(json.loads(payload))
            except ValueError:
                out.append({"raw": payload.decode(errors="replace")})
        return out


def connect(port: int, timeout: float = 10.0):
    deadline = time.time() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def split_command(line: str):
    line = line.strip()
    if line.startswith("/"):
        line = line[1:]
    cmd, _, params = line.partition(" ")
    return cmd, params


def one_shot(port: int, line: str) -> int:
    s = connect(port)
    cmd, params = split_command(line)
    token = str(os.getpid())
    s.sendall(netstring({"command": cmd, "params": params, "token": token}))
    r = Reader(s)
    s.settimeout(5)
    while True:
        data = s.recv(65536)
        if not data:
            return 1
        for m in r.feed(data):
            if m.get("response") and m.get("token") == token:
                if m.get("data"):
                    print(m["data"])
                return 0 if m.get("ok") else 1


def serve(port: int, fifo: str, log: str) -> int:
    s = connect(port)
    r = Reader(s)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never sees EOF
    pending = b""
    n = 0
    with open(log, "a", buffering=1) as out:
        out.write(json.dumps({"ctl": "connected", "t": round(time.time(), 3)}) + "\n")
        while True:
            ready, _, _ = select.select([s, fd], [], [])
            if s in ready:
                data = s.recv(65536)
                if not data:
                    out.write(json.dumps({"ctl": "disconnected"}) + "\n")
                    return 0
                for m in r.feed(data):
                    m["t"] = round(time.time(), 3)
                    out.write(json.dumps(m) + "\n")
            if fd in ready:
                pending += os.read(fd, 65536)
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    n += 1
                    cmd, params = split_command(line.decode())
                    s.sendall(netstring({"command": cmd, "params": params, "token": f"c{n}"}))
                    out.write(json.dumps({"ctl": "sent", "command": cmd, "params": params, "token": f"c{n}",
                                          "t": round(time.time(), 3)}) + "\n")


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    if sys.argv[2] == "--serve" and len(sys.argv) == 5:
        return serve(port, sys.argv[3], sys.argv[4])
    return one_shot(port, " ".join(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
