#!/usr/bin/env python3
"""Drives a command through a real pseudo-terminal, as a person at a
terminal would: `pty_drive.py STEPS_JSON -- COMMAND...`.

The command starts on a new terminal of 24 rows and 80 columns. STEPS is a
JSON list of steps, run in order:

  ["expect", REGEX, SECONDS]   wait until the output since the last match
                               matches REGEX (Python syntax), else fail
  ["send", TEXT]               type TEXT
  ["resize", ROWS, COLS]       resize the terminal (the command gets SIGWINCH)
  ["sleep", SECONDS]
  ["until", TEXT, REGEX, SECONDS, [ROWS, COLS]]
                               type TEXT, and again each second, until the
                               output since the last match matches REGEX;
                               fail after SECONDS. With a size, resize the
                               terminal to it first and, before each retry,
                               again by way of one column more, since a
                               command that was not yet listening for
                               SIGWINCH (docker's CLI sets its handler up
                               only after the start request returns) never
                               hears of a resize to the size it already has
  ["within", SECONDS]          the previous expect came this soon after the
                               send before it, else fail

Cursor position queries (ESC [ 6 n) are answered as a terminal would.

Then it waits (at most 30 s) for the command to exit and prints one JSON
line: {"code": EXIT_CODE, "output": ALL_OUTPUT}. A failed step prints
{"error": WHAT, "output": ...} and exits 1 after killing the command.
"""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main():
    split = sys.argv.index("--")
    steps = json.loads(sys.argv[1])
    command = sys.argv[split + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        set_size(0, 24, 80)
        os.execvp(command[0], command)
    output = b""
    seen = 0
    last_send = time.monotonic()
    last_match = 0.0

    def read_some(deadline):
        nonlocal output
        left = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                return False
            output += data
            # Answer cursor position queries as a terminal would (busybox's
            # line editing asks after each prompt).
            for _ in range(data.count(b"\x1b[6n")):
                os.write(fd, b"\x1b[1;1R")
        return True

    def fail(what):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        print(json.dumps({"error": what, "output": output.decode("utf-8", "replace")}))
        sys.exit(1)

    for step in steps:
        kind = step[0]
        if kind == "expect":
            pattern = re.compile(step[1].encode())
            deadline = time.monotonic() + step[2]
            while True:
                m = pattern.search(output, seen)
                if m:
                    seen = m.end()
                    last_match = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    fail(f"no {step[1]!r} within {step[2]} s")
                if not read_some(deadline):
                    m = pattern.search(output, seen)
                    if m:
                        seen = m.end()
                        last_match = time.monotonic()
                        break
                    fail(f"the command ended before {step[1]!r}")
        elif kind == "send":
            os.write(fd, step[1].encode())
            last_send = time.monotonic()
        elif kind == "until":
            pattern = re.compile(step[2].encode())
            deadline = time.monotonic() + step[3]
            size = step[4] if len(step) > 4 else None
            if size:
                set_size(fd, size[0], size[1])
            while True:
                os.write(fd, step[1].encode())
                last_send = time.monotonic()
                attempt_end = min(deadline, last_send + 1.0)
                m = None
                while time.monotonic() < attempt_end:
                    if not read_some(attempt_end):
                        fail(f"the command ended before {step[2]!r}")
                    m = pattern.search(output, seen)
                    if m:
                        break
                if m:
                    seen = m.end()
                    last_match = time.monotonic()
                    break
                if time.monotonic() >= deadline:
                    fail(f"no {step[2]!r} within {step[3]} s of typing {step[1]!r}")
                if size:
                    set_size(fd, size[0], size[1] + 1)
                    time.sleep(0.05)
                    set_size(fd, size[0], size[1])
        elif kind == "resize":
            set_size(fd, step[1], step[2])
        elif kind == "sleep":
            time.sleep(step[1])
        elif kind == "within":
            took = last_match - last_send
            if took > step[1]:
                fail(f"the last expect took {took:.1f} s, more than {step[1]} s")
        else:
            fail(f"unknown step {kind!r}")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            while read_some(time.monotonic() + 0.1):
                pass
            code = os.waitstatus_to_exitcode(status)
            print(json.dumps({"code": code, "output": output.decode("utf-8", "replace")}))
            return
        read_some(time.monotonic() + 0.2)
    fail("the command did not exit within 30 s")


if __name__ == "__main__":
    main()
