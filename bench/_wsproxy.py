"""A byte-for-byte TCP relay that notes when each WebSocket frame from the server ends.

    python -m bench._wsproxy LISTEN_PORT UPSTREAM_PORT

Put between an account worker and the simulator, it gives the moment each tick frame
left the simulator and reached the worker's host, which the simulator itself does
not report. Nothing is changed or buffered: every chunk read is written on at once.
For each binary frame from the server it prints one line to stdout,

    frame <connection> <time.monotonic() when its last byte was read> <first token> <packets>

The clock is CLOCK_MONOTONIC, shared by every process of the machine, so the
benchmark can set these times against the arrival of the ticks on Redis.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

OPCODE_BINARY = 0x2


class _FrameReader:
    """Follows the server's side of one connection: the HTTP answer, then frames."""

    def __init__(self, connection: int) -> None:
        self.connection = connection
        self._head_done = False
        self._buffer = bytearray()
        self._remaining = 0  # payload bytes still to come of the current frame
        self._opcode = 0
        self._payload_start = bytearray()

    def feed(self, data: bytes, arrived: float) -> None:
        self._buffer += data
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self._buffer[: end + 4]
            self._head_done = True
        while self._buffer:
            if self._remaining:
                taken = min(self._remaining, len(self._buffer))
                if len(self._payload_start) < 8:
                    self._payload_start += self._buffer[: min(taken, 8 - len(self._payload_start))]
                del self._buffer[:taken]
                self._remaining -= taken
                if not self._remaining:
                    self._frame_done(arrived)
                continue
            header = self._header()
            if header is None:
                return
            self._opcode, self._remaining, size = header
            del self._buffer[:size]
            self._payload_start = bytearray()
            if not self._remaining:
                self._frame_done(arrived)

    def _header(self) -> tuple[int, int, int] | None:
        if len(self._buffer) < 2:
            return None
        first, second = self._buffer[0], self._buffer[1]
        length = second & 0x7F
        size = 2
        if length == 126:
            if len(self._buffer) < 4:
                return None
            (length,) = struct.unpack_from(">H", self._buffer, 2)
            size = 4
        elif length == 127:
            if len(self._buffer) < 10:
                return None
            (length,) = struct.unpack_from(">Q", self._buffer, 2)
            size = 10
        if second & 0x80:  # a masked frame (never from a server) carries a key
            size += 4
        if len(self._buffer) < size:
            return None
        return first & 0x0F, length, size

    def _frame_done(self, arrived: float) -> None:
        start = bytes(self._payload_start)
        if self._opcode != OPCODE_BINARY or len(start) < 8:
            return  # heartbeats and text frames
        (count,) = struct.unpack_from(">H", start, 0)
        (token,) = struct.unpack_from(">I", start, 4)
        sys.stdout.write(f"frame {self.connection} {arrived:.6f} {token} {count}\n")
        sys.stdout.flush()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                frames: _FrameReader | None) -> None:
    try:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            if frames is not None:
                frames.feed(data, time.monotonic())
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def _serve(listen_port: int, upstream_port: int) -> None:
    counter = 0

    async def relay(client_reader: asyncio.StreamReader,
                    client_writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        counter += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer, None),
            _pipe(upstream_reader, client_writer, _FrameReader(counter)),
        )

    server = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    try:
        asyncio.run(_serve(listen_port, upstream_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
