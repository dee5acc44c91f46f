"""Throughput of the synthesis client against a loopback server that answers after a fixed delay.

    .venv/bin/python bench/bench_synth_client.py [--delay 1.0] [--rounds 8] [--concurrency 1 8 32 64]

With the server's delay d and the client's concurrency c, the ideal is c / d requests per second;
the ratio measured / ideal shows what the client's own overhead (asyncio, openai, httpx, JSON) costs.
Target: >= 0.9 at concurrency 32. The server is a minimal asyncio HTTP/1.1 keep-alive server on
127.0.0.1, in its own process, that waits d and returns a fixed chat completion (a threaded Python
server adds its own scheduling delay under load, which is not the client's). Every request is
distinct, so each goes out; ``--cache`` also writes each answer to a disk cache, as a real run does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time

from medsage.chat import ChatClient as SynthClient, ClientConfig, Message

REPLY = json.dumps({"id": "bench", "object": "chat.completion", "created": 0, "model": "bench",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}).encode()

async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """One keep-alive connection: read a request, wait ``delay``, answer; repeat until the client closes."""
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(REPLY)).encode() + b"\r\n\r\n" + REPLY)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(response)  # one write: no Nagle stall between headers and body
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(delay: float, port_out) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _handle(r, w, delay), "127.0.0.1", 0, backlog=1024)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def serve(delay: float) -> tuple[multiprocessing.Process, int]:
    """The server in its own process: a real endpoint does not share the client's interpreter (GIL)."""
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(delay, port), daemon=True)
    proc.start()
    return proc, port.get(timeout=60)


async def measure(base_url: str, concurrency: int, n: int, cache_dir: str | None) -> tuple[float, float]:
    """Requests per second and the client's CPU milliseconds per request."""
    client = SynthClient(ClientConfig(base_url=base_url, model="bench", concurrency=concurrency, max_retries=0,
                                      cache_dir=cache_dir))
    # Warm-up: one burst opens the pool's ``concurrency`` keep-alive connections; set-up is not measured.
    await asyncio.gather(*(client.chat([Message("user", f"warm-up {i}")]) for i in range(concurrency)))
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client.chat([Message("user", f"request {i}")]) for i in range(n)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.aclose()
    assert client.usage.calls == n + concurrency and not client.usage.failures
    return n / elapsed, 1000 * cpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 1 s is on the fast side for one LLM stage call; try --delay 0.25 for a harsher test of client overhead.
    ap.add_argument("--delay", type=float, default=1.0, help="server delay per request, seconds")
    ap.add_argument("--rounds", type=int, default=8, help="requests per run = rounds x concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--cache", action="store_true", help="write every answer to a disk cache (as a real run does)")
    args = ap.parse_args()
    proc, port = serve(args.delay)
    base_url = f"http://127.0.0.1:{port}/v1"
    load = os.getloadavg()[0]
    print(f"delay {args.delay}s, {args.rounds} rounds per run, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'ideal':>8} {'ratio':>6} {'client CPU ms/req':>18}")
    for c in args.concurrency:
        n = args.rounds * c
        with tempfile.TemporaryDirectory() as tmp:
            rps, cpu_ms = asyncio.run(measure(base_url, c, n, tmp if args.cache else None))
        ideal = c / args.delay
        print(f"{c:>11} {n:>8} {rps:>8.1f} {ideal:>8.1f} {rps / ideal:>6.3f} {cpu_ms:>18.2f}")
    proc.terminate()


if __name__ == "__main__":
    main()
