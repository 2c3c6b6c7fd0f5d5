#!/usr/bin/env python3
"""A stand-in for Firecracker and Cloud Hypervisor where they cannot run: it serves their
REST API on the Unix socket it is given, logs every call (one JSON line each, to
`fake-vmm.log` in its working directory), checks that the files a VM would open are there
(relative to its working directory, as the real ones open them), writes snapshot files where
the calls say, and once the VM "boots" serves the hybrid vsock: `CONNECT <port>\\n`, a line
`OK 1\\n`, then it echoes what it gets (standing in for the guest agent).

It tests the drivers' process handling and call sequence; what each body may hold is
checked against the real specifications in specs.rs."""

import json
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

state = {"vm": "Not started", "vsock": None, "config": None}


def log(entry):
    with open("fake-vmm.log", "a") as f:
        f.write(json.dumps(entry) + "\n")


def serve_vsock(path):
    if state["vsock"]:
        return
    state["vsock"] = path
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(8)

    def conn(c):
        line = b""
        while not line.endswith(b"\n"):
            b = c.recv(1)
            if not b:
                return
            line += b
        if not line.startswith(b"CONNECT "):
            c.close()
            return
        c.sendall(b"OK 1\n")
        while True:
            data = c.recv(4096)
            if not data:
                break
            c.sendall(data)

    def accept():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def missing(paths):
    return [p for p in paths if p and not os.path.exists(p)]


class Api(BaseHTTPRequestHandler):
    def address_string(self):
        return "uds"

    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        if data:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def fault(self, message):
        self.answer(400, {"fault_message": message})

    def do_GET(self):
        log({"method": "GET", "path": self.path})
        if self.path in ("/", "/api/v1/vm.info"):
            self.answer(200, {"state": state["vm"]})
        else:
            self.fault("no such path")

    def do_PATCH(self):
        self.handle_call("PATCH")

    def do_PUT(self):
        self.handle_call("PUT")

    def handle_call(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        log({"method": method, "path": self.path, "body": body})
        p, b = self.path, body or {}
        # Firecracker
        if p == "/boot-source":
            gone = missing([b.get("kernel_image_path"), b.get("initrd_path")])
            if gone:
                return self.fault(f"no such file: {gone}")
        elif p.startswith("/drives/"):
            if missing([b.get("path_on_host")]):
                return self.fault(f"no such file: {b.get('path_on_host')}")
        elif p == "/vsock":
            state["config"] = b
        elif p == "/actions" and b.get("action_type") == "InstanceStart":
            state["vm"] = "Running"
            serve_vsock(state["config"]["uds_path"])
        elif p == "/vm":
            state["vm"] = "Paused" if b.get("state") == "Paused" else "Running"
        elif p == "/snapshot/create":
            if state["vm"] != "Paused":
                return self.fault("the VM must be paused")
            for f in (b["snapshot_path"], b["mem_file_path"]):
                with open(f, "wb") as out:
                    out.write(b"saved " + f.encode())
        elif p == "/snapshot/load":
            gone = missing([b["snapshot_path"], b["mem_backend"]["backend_path"]])
            if gone:
                return self.fault(f"no such file: {gone}")
            state["vm"] = "Running" if b.get("resume_vm") else "Paused"
            serve_vsock("vsock.sock")
        # Cloud Hypervisor
        elif p == "/api/v1/vm.create":
            payload = b.get("payload", {})
            gone = missing(
                [payload.get("kernel"), payload.get("initramfs")]
                + [d["path"] for d in b.get("disks", [])]
            )
            if gone:
                return self.fault(f"no such file: {gone}")
            state["config"] = b
            state["vm"] = "Created"
        elif p == "/api/v1/vm.boot":
            state["vm"] = "Running"
            serve_vsock(state["config"]["vsock"]["socket"])
        elif p == "/api/v1/vm.pause":
            state["vm"] = "Paused"
        elif p == "/api/v1/vm.resume":
            state["vm"] = "Running"
        elif p == "/api/v1/vm.snapshot":
            d = b["destination_url"].removeprefix("file://")
            with open(os.path.join(d, "config.json"), "w") as out:
                json.dump(state["config"], out)
            for f in ("state.json", "memory-ranges"):
                with open(os.path.join(d, f), "w") as out:
                    out.write("saved")
        elif p == "/api/v1/vm.restore":
            d = b["source_url"].removeprefix("file://")
            with open(os.path.join(d, "config.json")) as f:
                state["config"] = json.load(f)
            state["vm"] = "Paused"
            serve_vsock(state["config"]["vsock"]["socket"])
        self.answer(204)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    args = sys.argv[1:]
    sock = None
    for i, a in enumerate(args):
        if a == "--api-sock":
            sock = args[i + 1]
        elif a == "--api-socket":
            sock = args[i + 1].removeprefix("path=")
    if sock is None:
        print("no API socket given", file=sys.stderr)
        sys.exit(2)
    if os.path.exists(sock):
        os.unlink(sock)
    Server(sock, Api).serve_forever()


if __name__ == "__main__":
    main()
