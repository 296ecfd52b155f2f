"""Multi-process start-up for every command: one `weightspace` process per host
(TPU pods, multi-GPU hosts) or several on one machine (CPU devices, gloo).

    weightspace --distributed COMMAND ...            # TPU pods, SLURM: detected
    weightspace --coordinator HOST:PORT --num-processes N --process-id I COMMAND ...

The options may also follow the command's name. Every process runs the same
command line; the chains' and the data's arrays span all processes' devices
(a ("chain", "data") mesh over them), each process loads only its rows, and
only process 0 writes files (run directories, results, figures), apart from
each process's own shards of the sampler checkpoints, which orbax writes.
A run directory must therefore be on a filesystem every process sees.

A process that dies (killed, out of memory, a lost host) leaves the others
waiting in a collective that never completes. Every process therefore beats
a heartbeat into the job's coordination service and watches the others'
(`PeerWatch`): when a peer has shown no sign of life for `--peer-timeout`
seconds (or the coordinator, process 0, cannot be reached), the process
prints one line naming the lost peer and exits with status 3. What the run
directory committed stays; starting every process again with the same
command resumes the run exactly.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
import traceback

from weightspace.cli.arguments import CommandError, positive_float

__all__ = ["PEER_TIMEOUT_S", "PeerWatch", "add_options", "start"]

PEER_TIMEOUT_S = 60.0  # no heartbeat for this long: the peer is lost
BEAT_S = 1.0           # a heartbeat every second
LOST_STATUS = 3        # exit status of a process whose peer was lost


def add_options(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_argument_group("multi-process runs")
    group.add_argument("--distributed", action="store_true", default=default,
                       help="start a multi-process job whose coordinator, process count "
                            "and index JAX detects (TPU pods, SLURM, Kubernetes)")
    group.add_argument("--coordinator", metavar="HOST:PORT", default=default,
                       help="the address of process 0 for a multi-process job; with "
                            "--num-processes and --process-id (CPU processes use gloo)")
    group.add_argument("--num-processes", type=int, metavar="N", default=default,
                       help="how many processes the job has (with --coordinator)")
    group.add_argument("--process-id", type=int, metavar="I", default=default,
                       help="this process's index, 0 to N-1 (with --coordinator)")
    group.add_argument("--peer-timeout", type=positive_float, metavar="SECONDS",
                       default=default,
                       help=f"exit with an error naming the peer when another process "
                            f"of the job has shown no sign of life for this long (default "
                            f"{PEER_TIMEOUT_S:g})")


def _check(coordinator, num_processes, process_id) -> None:
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        named = ", ".join(f"{k} {v}" for k, v in given.items() if v is not None)
        raise CommandError(f"{named} needs {' and '.join(missing)} too: a multi-process job "
                           f"is started with all three (or with --distributed, where JAX "
                           f"detects them)")
    if not isinstance(coordinator, str) or not coordinator.rpartition(":")[2].isdigit():
        raise CommandError(f"--coordinator {coordinator!r} is not allowed: it must be "
                           f"HOST:PORT, the address of process 0")
    if num_processes < 1:
        raise CommandError(f"--num-processes {num_processes} is not allowed: it must be "
                           f"at least 1")
    if not 0 <= process_id < num_processes:
        raise CommandError(f"--process-id {process_id} is not allowed: it must be in "
                           f"[0, {num_processes - 1}] for --num-processes {num_processes}")


class PeerWatch:
    """Heartbeats of this process into the coordination service's key-value
    store, and a watch on the other processes' (a daemon thread). A process
    that finished its command says so (`done`) and is no longer expected to
    beat. On a lost peer: one line on stderr, then os._exit(LOST_STATUS),
    since the main thread may be blocked in a collective for good."""

    _commands = 0  # commands watched in this process so far (every process runs the same)

    def __init__(self, client, process_id: int, num_processes: int, timeout: float,
                 command: str, coordinator: str | None):
        PeerWatch._commands += 1
        self.prefix = f"weightspace/{PeerWatch._commands}"  # this command's keys
        self.client, self.me, self.n = client, process_id, num_processes
        self.timeout, self.command, self.coordinator = timeout, command, coordinator
        self.peers = [p for p in range(num_processes) if p != process_id]  # still watched
        self.last_beat: dict = {}   # peer -> the last heartbeat value seen
        self.beat_times: dict = {}  # peer -> times its last heartbeats were seen
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="weightspace-peer-watch",
                                       daemon=True)

    def start(self) -> PeerWatch:
        self.thread.start()
        return self

    def done(self) -> None:
        """This process finished its command: the others stop watching it."""
        self.stopped.set()
        try:
            self.client.key_value_set(f"{self.prefix}/done/{self.me}", "1",
                                      allow_overwrite=True)
        except Exception:  # noqa: BLE001  (the job is ending anyway)
            pass

    def fail(self, err: BaseException) -> None:
        """The command raised `err` in this process of a multi-process job; this
        never returns. A peer's death often surfaces first as an error in a
        collective here: if some peer stops beating, the watch names it and
        exits. Once every peer has beaten twice since `err`, the fault is this
        process's own: its traceback and one line, then exit status 1. Either
        way without JAX's shutdown barrier, which would wait for a dead peer."""
        failed = time.monotonic()
        deadline = failed + self.timeout + 3 * BEAT_S
        while time.monotonic() < deadline:  # the watch thread may os._exit meanwhile
            alive = [p for p in self.peers if self.beats_since(p, failed) >= 2]
            if len(alive) == len(self.peers):
                break
            time.sleep(BEAT_S / 4)
        traceback.print_exception(err, file=sys.stderr)
        print(f"weightspace {self.command}: error: process {self.me} of {self.n} failed: "
              f"{type(err).__name__}: {_first_line(err)}", file=sys.stderr, flush=True)
        os._exit(1)

    def beats_since(self, peer: int, when: float) -> int:
        """Heartbeats seen from `peer` after time `when` (monotonic)."""
        return sum(1 for t in self.beat_times.get(peer, ()) if t > when)

    def _lost(self, what: str) -> None:
        job = f"{self.n}" + (f", coordinator {self.coordinator}" if self.coordinator else "")
        print(f"weightspace {self.command}: error: {what}. This process (process {self.me} "
              f"of {job}) stops. The run directory keeps what was committed; start every "
              f"process again with the same command to resume.", file=sys.stderr, flush=True)
        os._exit(LOST_STATUS)

    def _run(self) -> None:
        beat = 0
        start = last_ok = time.monotonic()
        while not self.stopped.wait(BEAT_S):
            now = time.monotonic()
            try:
                beat += 1
                self.client.key_value_set(f"{self.prefix}/alive/{self.me}", str(beat),
                                          allow_overwrite=True)
                for p in list(self.peers):
                    if _try_get(self.client, f"{self.prefix}/done/{p}") is not None:
                        self.peers.remove(p)
                        continue
                    value = _try_get(self.client, f"{self.prefix}/alive/{p}")
                    if value is not None and self.last_beat.get(p) != value:
                        self.last_beat[p] = value
                        self.beat_times.setdefault(p, collections.deque(maxlen=4)).append(now)
                last_ok = time.monotonic()
            except Exception as err:  # noqa: BLE001  (the coordination service is gone)
                if time.monotonic() - last_ok > self.timeout:
                    self._lost(f"lost the job's coordinator (process 0"
                               f"{', ' + self.coordinator if self.coordinator else ''}): "
                               f"{_first_line(err)}")
                continue
            for p in self.peers:
                since = now - self.beat_times.get(p, (start,))[-1]
                if since > self.timeout:
                    self._lost(f"lost process {p} of the job: no sign of life from it "
                               f"for {since:.0f} s (--peer-timeout {self.timeout:g})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except Exception as err:  # noqa: BLE001
        if "NOT_FOUND" in str(err) or "not found" in str(err).lower():
            return None
        raise


def start(args) -> PeerWatch | None:
    """Join the multi-process job the options describe, if any, before any
    JAX computation, and watch its other processes (a PeerWatch, whose
    `done` the caller calls when the command has finished). Bad options are a
    CommandError."""
    coordinator = getattr(args, "coordinator", None)
    num_processes = getattr(args, "num_processes", None)
    process_id = getattr(args, "process_id", None)
    distributed = getattr(args, "distributed", False)
    explicit = (coordinator, num_processes, process_id) != (None, None, None)
    timeout = getattr(args, "peer_timeout", None)
    if not (explicit or distributed):
        if timeout is not None:
            raise CommandError(f"--peer-timeout {timeout:g} is only for a multi-process job "
                               f"(--distributed, or --coordinator ...)")
        return None
    if explicit and distributed:
        raise CommandError("--distributed is not allowed with --coordinator, "
                           "--num-processes or --process-id: give one or the other")
    from weightspace import sharding

    if explicit:
        _check(coordinator, num_processes, process_id)
        if num_processes == 1:
            return None
    timeout = PEER_TIMEOUT_S if timeout is None else timeout
    try:
        # JAX's own heartbeat check aborts every process some time after one
        # dies; PeerWatch's, earlier, says which and exits cleanly.
        sharding.initialize(coordinator, num_processes, process_id,
                            heartbeat_timeout_seconds=int(max(2 * timeout, 100)))
    except Exception as err:  # JAX's own errors say what failed (timeout, address)
        raise CommandError(f"could not join the multi-process job (coordinator "
                           f"{coordinator or 'detected'}, process {process_id}): "
                           f"{_first_line(err)}") from None
    import jax
    from jax._src import distributed  # the job's client, as orbax's multihost reaches it

    return PeerWatch(distributed.global_state.client, jax.process_index(),
                     jax.process_count(), timeout, args.command, coordinator).start()
