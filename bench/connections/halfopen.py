#!/usr/bin/env python3
"""Server RSS with 2,000 half-open connections (issue 9 item 14).

Starts `casefile server` on a temporary data directory, opens N connections that send
nothing or only part of a request (a TLS record header over HTTPS, half an HTTP header
over plain HTTP), reads the server's VmRSS from /proc, and checks that a normal request
is still answered meanwhile. Informational: prints figures, fails only if the normal
request is not answered.

    python3 bench/connections/halfopen.py [--binary target/release/casefile] [--connections 2000]
"""
import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, context):
    start = time.monotonic()
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        body = response.read()
    return response.status, body, time.monotonic() - start


def run(binary, connections, plain):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        port = free_port()
        args = [binary, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}"]
        if plain:
            config = os.path.join(tmp, "casefile.toml")
            with open(config, "w") as f:
                f.write("[tls]\nplain_http = true\n")
            args += ["--config", config]
        server = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        try:
            scheme = "http" if plain else "https"
            url = f"{scheme}://127.0.0.1:{port}/healthz"
            context = None
            deadline = time.monotonic() + 60
            while True:
                try:
                    if not plain:
                        context = ssl.create_default_context(cafile=os.path.join(data, "tls", "ca.pem"))
                    get(url, context)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            idle_rss = rss_kib(server.pid)
            held = []
            for i in range(connections):
                s = socket.create_connection(("127.0.0.1", port))
                if i % 2 == 0:
                    s.sendall(b"\x16\x03\x01\x02" if not plain else b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            time.sleep(1)  # let the server accept them all before measuring
            held_rss = rss_kib(server.pid)
            status, _, seconds = get(url, context)
            label = "plain HTTP" if plain else "HTTPS"
            print(f"{label:10} idle RSS {idle_rss / 1024:6.1f} MiB; with {connections} half-open connections "
                  f"{held_rss / 1024:6.1f} MiB (+{(held_rss - idle_rss) / connections:.1f} KiB each); "
                  f"normal request meanwhile: {status} in {seconds * 1000:.0f} ms")
            for s in held:
                s.close()
            return status == 200
        finally:
            server.terminate()
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=None)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    binary = args.binary or next(
        (p for p in ["target/release/casefile", "target/debug/casefile"] if os.path.exists(p)), None)
    if binary is None:
        sys.exit("build casefile first: cargo build --release")
    print(f"binary {binary}")
    ok = run(binary, args.connections, plain=False) and run(binary, args.connections, plain=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
