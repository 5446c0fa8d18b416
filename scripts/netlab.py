#!/usr/bin/env python3
"""A small lab network for Cairn's real-network tests: one Linux network
namespace per host, each with a TUN device on a private /24, joined by this
process, which forwards every IPv4 packet between them with a delay, jitter
and loss of its own (this kernel has no sch_netem, so a userspace link does
what `tc netem` would).

The test's own namespace joins too, as host .254, so the test can reach the
hosts' admin ports (through the same links).

    netlab.py --prefix cl123 --subnet 10.77.5 --hosts 4 \
              [--delay-ms 5 --jitter-ms 2 --loss 0.01 --seed 7]

It prints "ready" once every namespace is up, then reads commands on stdin,
one per line, and answers "ok" (or "error: ...") to each:

    down I        take host I's link down (ip link set tun0 down): a cut
    up I          bring it back up
    drop A B      drop every packet from host A to host B (a one-way cut)
    pass A B      stop dropping them
    stats         one line of JSON: packets forwarded, lost, dropped

Hosts are numbered from 1; host I has address SUBNET.I and namespace
PREFIX-I. End of input (the test exited) or "quit" removes every namespace.
Needs root. Only the standard library.
"""

import argparse
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import struct
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
OPERATOR = 254

libc = ctypes.CDLL(None, use_errno=True)


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, text=True)


def open_tun(name, netns=None):
    """Opens TUN device `name` in namespace `netns` (or this one)."""
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if netns is not None:
            target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(target, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(target)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
        return fd
    finally:
        if netns is not None:
            libc.setns(here, CLONE_NEWNET)
        os.close(here)


class Lab:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.namespaces = []
        self.tun_of = {}  # host number -> fd
        self.host_of = {}  # fd -> host number
        self.root_tun = f"{a.prefix}-op"[:15]
        self.dropped_pairs = set()
        self.queue = []
        self.seq = 0
        self.last_due = {}  # (src, dst) -> time the last packet leaves (FIFO links)
        self.stats = {"forwarded": 0, "lost": 0, "dropped": 0, "down": 0}

    def ns(self, i):
        return f"{self.a.prefix}-{i}"

    def setup(self):
        s = self.a.subnet
        for i in range(1, self.a.hosts + 1):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            fd = open_tun("tun0", ns)
            self.tun_of[i] = fd
            self.host_of[fd] = i
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{s}.{i}/24", "dev", "tun0")
            sh("ip", "-n", ns, "link", "set", "tun0", "up")
        fd = open_tun(self.root_tun)
        self.tun_of[OPERATOR] = fd
        self.host_of[fd] = OPERATOR
        sh("ip", "addr", "add", f"{s}.{OPERATOR}/24", "dev", self.root_tun)
        sh("ip", "link", "set", self.root_tun, "up")

    def teardown(self):
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for fd in self.tun_of.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def command(self, line):
        words = line.split()
        if not words:
            return "ok"
        op, args = words[0], words[1:]
        if op in ("down", "up"):
            i = int(args[0])
            sh("ip", "-n", self.ns(i), "link", "set", "tun0", op)
            if op == "up":
                # The route to the subnet comes back with the link; make sure.
                subprocess.run(
                    ["ip", "-n", self.ns(i), "route", "replace", f"{self.a.subnet}.0/24", "dev", "tun0"],
                    capture_output=True,
                )
            return "ok"
        if op in ("drop", "pass"):
            pair = (int(args[0]), int(args[1]))
            (self.dropped_pairs.add if op == "drop" else self.dropped_pairs.discard)(pair)
            return "ok"
        if op == "stats":
            return json.dumps(self.stats)
        return f"error: unknown command {op!r}"

    def receive(self, fd):
        src = self.host_of[fd]
        while True:
            try:
                pkt = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                return
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                continue  # IPv4 only
            dst = pkt[19]
            if dst not in self.tun_of:
                continue
            if (src, dst) in self.dropped_pairs:
                self.stats["dropped"] += 1
                continue
            # The operator's own traffic crosses a clean link.
            lossy = OPERATOR not in (src, dst)
            if lossy and self.rng.random() < self.a.loss:
                self.stats["lost"] += 1
                continue
            now = time.monotonic()
            delay = 0.0
            if lossy:
                delay = max(0.0, self.a.delay_ms + self.rng.uniform(-1, 1) * self.a.jitter_ms) / 1e3
            # A link does not reorder: a packet never leaves before the one ahead of it.
            due = max(now + delay, self.last_due.get((src, dst), 0.0))
            self.last_due[(src, dst)] = due
            self.seq += 1
            heapq.heappush(self.queue, (due, self.seq, dst, pkt))

    def deliver(self):
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _, _, dst, pkt = heapq.heappop(self.queue)
            try:
                os.write(self.tun_of[dst], pkt)
                self.stats["forwarded"] += 1
            except OSError:
                self.stats["down"] += 1  # its link is down

    def run(self):
        stdin = sys.stdin.fileno()
        print("ready", flush=True)
        buf = b""
        while True:
            timeout = max(0.0, self.queue[0][0] - time.monotonic()) if self.queue else 0.5
            readable, _, _ = select.select([stdin, *self.host_of], [], [], timeout)
            for fd in readable:
                if fd != stdin:
                    self.receive(fd)
                    continue
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode().strip()
                    if line == "quit":
                        return
                    try:
                        answer = self.command(line)
                    except Exception as e:  # a bad command never kills the lab
                        answer = f"error: {e}"
                    print(answer, flush=True)
            self.deliver()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", required=True)
    p.add_argument("--subnet", required=True, help="the first three octets, e.g. 10.77.5")
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if not 1 <= a.hosts <= 250:
        sys.exit("error: --hosts must be 1 to 250")
    lab = Lab(a)
    try:
        lab.setup()
        lab.run()
    except Exception as e:
        print(f"error: {e}", flush=True)
        sys.exit(1)
    finally:
        lab.teardown()


if __name__ == "__main__":
    main()
