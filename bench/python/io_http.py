#!/usr/bin/env python3
"""The Python course's downloads done for real: HTTP GETs over loopback from the server that
`bench_io_http --triad_serve` runs, with urllib on threads and processes and raw asyncio streams
on the event loop (the standard library has no async HTTP client; the Python course used aiohttp).
Workloads match bench/bench_io_http.cpp. Usage: io_http.py --port N [--quick]
"""
import asyncio
import multiprocessing as mp
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, check, cpu_count, emit, option

WORKLOADS = [("http_20", 20, 10, 16 * 1024), ("http_200", 200, 10, 16 * 1024)]
if not QUICK:
    WORKLOADS += [("http_1000", 1000, 10, 16 * 1024), ("http_large_bodies", 20, 0, 4 << 20)]
PORT = int(option("port", "0"))


def url(delay_ms, size):
    return f"http://127.0.0.1:{PORT}/delay/{delay_ms}/bytes/{size}"


def fetch(address):
    with urllib.request.urlopen(address, timeout=60) as response:
        return len(response.read())


async def fetch_async(delay_ms, size, limit):
    async with limit:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT, limit=1 << 20)
        writer.write(f"GET /delay/{delay_ms}/bytes/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return len(data) - (data.index(b"\r\n\r\n") + 4)


async def fetch_all(n, delay_ms, size):
    limit = asyncio.Semaphore(1000)  # as the C++ loop client: at most 1,000 sockets open
    return await asyncio.gather(*(fetch_async(delay_ms, size, limit) for _ in range(n)))


def timed(workload, executor, n, size, go, config=""):
    start = time.perf_counter()
    received = sum(go())
    seconds = time.perf_counter() - start
    check(received == n * size, f"{workload} on {executor}: {received} of {n * size} bytes")
    emit(workload, executor, seconds, n, config)


def main():
    if PORT == 0:
        raise SystemExit("io_http.py: --port is required (start `bench_io_http --triad_serve`)")
    ctx = mp.get_context("fork")
    for name, n, delay_ms, size in WORKLOADS:
        address = url(delay_ms, size)
        if n <= 20:
            timed(name, "python_sequential", n, size, lambda: [fetch(address) for _ in range(n)])
        threads = min(n, 256)
        with ThreadPoolExecutor(threads) as pool:
            timed(name, "python_threads", n, size, lambda: pool.map(fetch, [address] * n),
                  f"workers:{threads}")
        if n <= 200:
            workers = 2 * cpu_count()
            with ctx.Pool(workers) as pool:
                timed(name, "python_multiprocessing", n, size,
                      lambda: pool.map(fetch, [address] * n, chunksize=1), f"workers:{workers}")
        timed(name, "python_asyncio", n, size, lambda: asyncio.run(fetch_all(n, delay_ms, size)))


if __name__ == "__main__":
    main()
