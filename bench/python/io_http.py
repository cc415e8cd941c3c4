#!/usr/bin/env python3
"""The Python course's downloads done for real: HTTP GETs over loopback from the server that
`bench_io_http --triad_serve` runs, with urllib on threads and processes and raw asyncio streams
on the event loop (the standard library has no async HTTP client; the Python course used aiohttp):
a BufferedProtocol, which receives into one buffer as the blocking clients' readinto does.
Workloads and pool sizes match bench/bench_io_http.cpp: one thread per request up to 256, 2x
cpu_count() processes for up to 200 requests, at most 1,000 requests in flight on the loop, a
sequential row for up to 20. Pools and the event loop are made before the first repetition and
reused, and every row runs once untimed first (urllib imports its parsers at the first reply).
The server's CPU time and memory count in every row's cost, as they do in C++, where the server
is a thread of the benchmark's own process.
Usage: io_http.py --port N [--quick] [--repetitions=N]
"""
import asyncio
import multiprocessing as mp
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, Row, cpu_count, measure, option, pids_of, start_threads

WORKLOADS = [("http_20", 20, 10, 16 * 1024), ("http_200", 200, 10, 16 * 1024)]
if not QUICK:
    WORKLOADS += [("http_1000", 1000, 10, 16 * 1024), ("http_large_bodies", 20, 0, 4 << 20)]
PORT = int(option("port", "0"))


def url(delay_ms, size):
    return f"http://127.0.0.1:{PORT}/delay/{delay_ms}/bytes/{size}"


def server_pid(port):
    """The process listening on 127.0.0.1:port: the socket's inode from /proc/net/tcp, then the
    process holding it (None when it cannot be told)."""
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                inode = fields[9]
    if inode is None:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    return None


# Every client counts the body through a buffer of 64 KiB, as the C++ clients do, rather than
# keeping it: 20 bodies of 4 MiB kept at once are 80 MiB of fresh pages per round, whose first
# touch (20-30 us a page on the VM the report ran on) measured the host, not the executors.
CHUNK = 64 * 1024


def fetch(address):
    buffer = memoryview(bytearray(CHUNK))
    received = 0
    with urllib.request.urlopen(address, timeout=60) as response:
        while n := response.readinto(buffer):
            received += n
    return received


class CountingClient(asyncio.BufferedProtocol):
    """Sends one GET and counts the body's bytes until the server closes the connection. The
    loop receives into this protocol's buffer; asyncio's streams instead allocate a new bytes
    object of up to 256 KiB per receive and copy it twice more, and with them 20 GETs of 4 MiB
    took 3 to 35 ms per request from one run to the next on the 2-core VM (this client: 3 to 4
    ms, as the threads' urllib). The cause of the swing was not pinned down; fresh heap pages
    are the suspect, as in the C++ clients' case."""

    def __init__(self, request, done):
        self.request, self.done = request, done
        self.buffer = bytearray(CHUNK)
        self.headers = b""  # until the blank line that ends them; None after
        self.received = 0

    def connection_made(self, transport):
        transport.write(self.request)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, n):
        if self.headers is None:
            self.received += n
            return
        self.headers += self.buffer[:n]
        end = self.headers.find(b"\r\n\r\n")
        if end >= 0:
            self.received = len(self.headers) - (end + 4)
            self.headers = None

    def eof_received(self):
        if not self.done.done():
            self.done.set_result(self.received)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the end of the body"))


async def fetch_async(delay_ms, size, limit):
    async with limit:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        request = (f"GET /delay/{delay_ms}/bytes/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Connection: close\r\n\r\n").encode()
        transport, _ = await loop.create_connection(lambda: CountingClient(request, done),
                                                    "127.0.0.1", PORT)
        try:
            return await done
        finally:
            transport.close()


async def fetch_all(n, delay_ms, size):
    limit = asyncio.Semaphore(1000)  # as the C++ loop client: at most 1,000 sockets open
    return await asyncio.gather(*(fetch_async(delay_ms, size, limit) for _ in range(n)))


def main():
    if PORT == 0:
        raise SystemExit("io_http.py: --port is required (start `bench_io_http --triad_serve`)")
    ctx = mp.get_context("fork")
    processes = 2 * cpu_count()
    server = [pid for pid in [server_pid(PORT)] if pid is not None]
    loop = asyncio.new_event_loop()
    # The process pool first: forking a process that already runs a thread pool copies its locks.
    with ctx.Pool(processes) as process_pool:
        for name, n, delay_ms, size in WORKLOADS:
            address = url(delay_ms, size)

            def row(executor, run, config="", parallelism=None, workers=lambda: ()):
                return Row(name, executor, n, lambda: sum(run()),
                           lambda received: received == n * size, config, parallelism,
                           lambda: [*server, *workers()])

            threads = min(n, 256)
            with ThreadPoolExecutor(threads) as thread_pool:
                start_threads(thread_pool, threads)
                rows = []
                if n <= 20:
                    rows.append(row("python_sequential",
                                    lambda: [fetch(address) for _ in range(n)]))
                rows.append(row("python_threads", lambda: thread_pool.map(fetch, [address] * n),
                                f"workers:{threads}", threads))
                if n <= 200:
                    rows.append(row("python_multiprocessing",
                                    lambda: process_pool.map(fetch, [address] * n, chunksize=1),
                                    f"workers:{processes}", processes,
                                    lambda: pids_of(process_pool)))
                rows.append(row("python_asyncio",
                                lambda: loop.run_until_complete(fetch_all(n, delay_ms, size)),
                                "", min(n, 1000)))
                measure(rows, warm_up=True)
    loop.close()


if __name__ == "__main__":
    main()
