#!/usr/bin/env python3
"""hold_proxy.py -- an HTTP proxy in front of Asterisk's ARI that holds some requests.

For scripts/faults.sh slow-hangup: voicebot1's [ari] url points here, and one in N of the
requests whose method and path match is held for a while before it goes on to Asterisk, which
itself stays healthy. Everything else (and the event WebSocket, relayed as raw bytes after its
upgrade) passes through untouched.

    hold_proxy.py --listen 127.0.0.1:8090 --upstream 127.0.0.1:8088 \
        --method DELETE --path-prefix /ari/channels/ --every 5 --hold-ms 3000

Loopback only. Standard library only (asyncio). Prints one line per held request.
"""

import argparse
import asyncio
import sys

MAX_HEAD = 64 * 1024


async def read_head(reader):
    """Reads an HTTP head (up to the blank line); b"" at EOF."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        return e.partial if e.partial else b""
    except asyncio.LimitOverrunError:
        return b""


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return 0
    return 0


def is_upgrade(head):
    return any(line.lower().startswith(b"upgrade:") for line in head.split(b"\r\n")[1:])


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


class Proxy:
    def __init__(self, args):
        self.args = args
        self.seen = 0
        self.held = 0

    def should_hold(self, head):
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = first.split(" ")
        if len(parts) < 2:
            return False
        method, path = parts[0], parts[1]
        if method != self.args.method or not path.startswith(self.args.path_prefix):
            return False
        self.seen += 1
        return self.seen % self.args.every == 0

    async def client(self, c_reader, c_writer):
        host, port = self.args.upstream.rsplit(":", 1)
        try:
            u_reader, u_writer = await asyncio.open_connection(host, int(port), limit=MAX_HEAD)
        except OSError:
            c_writer.close()
            return
        try:
            while True:
                head = await read_head(c_reader)
                if not head:
                    break
                body = await c_reader.readexactly(content_length(head)) if content_length(head) else b""
                if self.should_hold(head):
                    self.held += 1
                    first = head.split(b"\r\n", 1)[0].decode("latin-1")
                    print(f"holding {first} for {self.args.hold_ms} ms ({self.held} held)", flush=True)
                    await asyncio.sleep(self.args.hold_ms / 1000)
                u_writer.write(head + body)
                await u_writer.drain()
                if is_upgrade(head):
                    # The event WebSocket: raw bytes both ways from here on.
                    await asyncio.gather(pipe(u_reader, c_writer), pipe(c_reader, u_writer))
                    return
                resp = await read_head(u_reader)
                if not resp:
                    break
                rbody = await u_reader.readexactly(content_length(resp)) if content_length(resp) else b""
                c_writer.write(resp + rbody)
                await c_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (u_writer, c_writer):
                try:
                    w.close()
                except Exception:
                    pass


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--listen", default="127.0.0.1:8090")
    p.add_argument("--upstream", default="127.0.0.1:8088")
    p.add_argument("--method", default="DELETE")
    p.add_argument("--path-prefix", default="/ari/channels/")
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--hold-ms", type=int, default=3000)
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost") and not host.startswith("127."):
        sys.exit("hold_proxy.py listens on loopback only")
    proxy = Proxy(args)
    server = await asyncio.start_server(proxy.client, host, int(port), limit=MAX_HEAD)
    print(f"hold_proxy: {args.listen} -> {args.upstream}, holding 1 in {args.every} {args.method} {args.path_prefix}* for {args.hold_ms} ms", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
