"""Runs a suite's cells as Ray tasks, on this machine or across a Ray cluster.

Each cell is one Ray task that trains the cell exactly as the local executor does: a fresh
``harness.worker`` process started by ``run_cell_process`` on the node, its output captured and sent back
with the record. The driver (``run_suite``) alone writes the results folder, as cells finish.

Placement keeps timings clean. The driver knows the alive nodes and what its own tasks hold on each, and
sends every task to one node (hard node affinity) with a resource request that Ray enforces:

- a CUDA cell asks for one whole GPU and ``run.threads`` CPUs (1 when unset);
- a CPU cell asks, by default, for *all* CPUs of its node, so no other task of the cluster (no other cell,
  no CUDA cell's host thread) shares its cores while it is timed; with ``exclusive_nodes=False``
  (``--share-nodes``) it asks for ``run.threads`` CPUs only (the whole node when unset), for runs where
  only perplexities matter.

Asking for a node's CPU count rather than a fixed number lets clusters mix machine sizes; choosing the node
in the driver also means every record, even one whose worker died, names the node it ran on. A cell that
no alive node can serve (CUDA without a GPU in the cluster, more threads than any node has CPUs) is
recorded as ``skipped`` with the reason instead of waiting forever, as Ray would.
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from harness.errors import HarnessError
from harness.host.machine import cpu_model
from harness.grid.cell_process import failure_record, run_cell_process
from harness.spec.suite import GridCell

POLL_SECONDS = 0.5
NODE_INFO_TIMEOUT = 60.0


# --- deciding where a cell may run (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """An alive node of the cluster and its total resources, as Ray reports them."""

    node_id: str
    hostname: str
    cpus: float
    gpus: float = 0.0


def cluster_nodes(raw_nodes: list[dict]) -> list[Node]:
    """The alive nodes of ``ray.nodes()``, in a stable order (host name, then node id)."""
    nodes = [Node(node_id=n["NodeID"], hostname=n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"),
                  cpus=float(n.get("Resources", {}).get("CPU", 0.0)),
                  gpus=float(n.get("Resources", {}).get("GPU", 0.0)))
             for n in raw_nodes if n.get("Alive", n.get("alive"))]
    return sorted(nodes, key=lambda n: (n.hostname, n.node_id))


def resource_request(cell: GridCell, node: Node, exclusive_nodes: bool, cells_per_gpu: int = 1) -> dict[str, float]:
    """What the cell's task asks Ray for on ``node`` (``num_cpus``, ``num_gpus``). A CUDA cell takes a whole
    GPU, or 1 / ``cells_per_gpu`` of one so that several small cells keep a GPU busy between each other's
    kernel launches (each in its own process)."""
    threads = cell.config.threads
    if cell.config.device == "cuda":
        return {"num_cpus": float(threads or 1), "num_gpus": 1.0 / cells_per_gpu}
    if exclusive_nodes or not threads:
        # Unset threads means torch uses every core, so the cell takes the node even when sharing.
        return {"num_cpus": node.cpus, "num_gpus": 0.0}
    return {"num_cpus": float(threads), "num_gpus": 0.0}


def unservable_reason(cell: GridCell, nodes: list[Node]) -> str | None:
    """Why no alive node can ever run ``cell`` (None when some node can)."""
    if not nodes:
        return "the Ray cluster has no alive node"
    threads = cell.config.threads or 1
    largest = max(n.cpus for n in nodes)
    if cell.config.device == "cuda":
        gpu_nodes = [n for n in nodes if n.gpus >= 1]
        if not gpu_nodes:
            return "CUDA cell: no node of the Ray cluster has a GPU"
        if not any(n.cpus >= threads for n in gpu_nodes):
            return (f"run.threads = {threads}: no GPU node of the Ray cluster has that many CPUs "
                    f"(largest: {max(n.cpus for n in gpu_nodes):g})")
        return None
    if largest < threads:
        return f"run.threads = {threads}: no node of the Ray cluster has that many CPUs (largest: {largest:g})"
    return None


def choose_node(cell: GridCell, nodes: list[Node], in_use: dict[str, dict[str, float]],
                exclusive_nodes: bool, cells_per_gpu: int = 1) -> tuple[Node, dict[str, float]] | None:
    """The first node whose resources not held by this run's tasks (``in_use``: node id -> held
    ``num_cpus``/``num_gpus``) fit the cell's request now, with that request; None when the cell must wait.
    CPU cells try nodes without GPUs first, keeping GPU nodes free for CUDA cells."""
    if cell.config.device == "cpu":
        nodes = sorted(nodes, key=lambda n: n.gpus)  # stable: otherwise the cluster's order
    for node in nodes:
        request = resource_request(cell, node, exclusive_nodes, cells_per_gpu)
        if node.cpus < (cell.config.threads or 1):
            continue  # smaller than the cell's threads (a CPU cell's whole-node request would be too)
        held = in_use.get(node.node_id, {})
        fits_cpus = held.get("num_cpus", 0.0) + request["num_cpus"] <= node.cpus + 1e-9
        fits_gpus = held.get("num_gpus", 0.0) + request["num_gpus"] <= node.gpus + 1e-9
        if fits_cpus and fits_gpus:
            return node, request
    return None


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at ``HOST:PORT`` (Ray itself retries for minutes). Ray's other
    address forms (``auto``, ``ray://...``) are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HarnessError(f"--address {address}: expected HOST:PORT of a Ray head node, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise HarnessError(f"--address {address}: no Ray head node answers there ({exc.strerror or exc}); "
                           "start one with `ray start --head`") from None


# --- what runs on the nodes --------------------------------------------------------------------------


def describe_this_node() -> dict:
    """Host name, processor model and first GPU of the machine this runs on. The GPU is read with
    nvidia-smi, which sees the node's GPUs whatever CUDA_VISIBLE_DEVICES Ray set for this task."""
    gpu = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and names:
            gpu = names[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"hostname": socket.gethostname(), "cpu_model": cpu_model(), "gpu_name": gpu}


@ray.remote(num_cpus=0, max_retries=0)
def _describe_node_task() -> dict:
    return describe_this_node()


@ray.remote(max_retries=0)
def _run_cell_task(cell: GridCell, malloc: str = "keep-freed", checkpoint: str | None = None) -> tuple[dict, str]:
    """Train one cell on this node, exactly as the local executor does; return its record and log."""
    log = io.StringIO()
    record = run_cell_process(cell, log, malloc=malloc, checkpoint=Path(checkpoint) if checkpoint else None)
    return record, log.getvalue()


def checkpoint_for(run_dir, cell: GridCell, node: Node, driver_hostname: str) -> str | None:
    """The checkpoint file of ``cell`` run on ``node``: in the run folder when the node is the driver's own
    machine; none on another machine, which cannot reach that folder (an interrupted cell there starts
    afresh). Absolute: a Ray worker's working folder need not be the driver's."""
    return str(run_dir.checkpoint_path(cell.cell_id).absolute()) if node.hostname == driver_hostname else None


# --- the executor (driver side) ----------------------------------------------------------------------


@dataclass
class _Flight:
    cell: GridCell
    node: Node
    request: dict[str, float]
    started: float


def submission_order(cells: list[GridCell], estimates: dict[str, float],
                     started: set[str] | frozenset[str] = frozenset()) -> list[GridCell]:
    """The cells that go on from a checkpoint (``started``) first, then seed by seed, in the order the seeds
    first appear in the grid, and within a seed the longest cells first (ties in grid order). Started
    first: they hold work done, and a run stopped again before they finish would only add to them. Whole
    seeds next: a long run stopped part-way (and resumed in another session) holds every configuration at
    its first seeds rather than every seed of its costliest configurations. Longest first: with several
    cells training at once, a long cell started last would train alone at the end while the other slots
    stand idle."""
    seed_rank: dict[int, int] = {}
    for cell in cells:
        seed_rank.setdefault(cell.config.seed, len(seed_rank))
    return sorted(cells, key=lambda cell: (cell.cell_id not in started, seed_rank[cell.config.seed],
                                           -estimates.get(cell.cell_id, 0.0)))


class RayExecutor:
    """Runs cells as Ray tasks. ``address`` names a running cluster (``ray start``); without it a local
    Ray instance is started for the run (``num_cpus``: its CPUs, default all) and stopped after it.
    If this process is already connected to Ray, that connection is used and left open."""

    malloc = "keep-freed"  # the run's malloc setting (harness.host.malloc), set by run_suite

    def __init__(self, address: str | None = None, exclusive_nodes: bool = True, num_cpus: int | None = None,
                 cells_per_gpu: int = 1):
        if address:
            check_reachable(address)  # before the run writes anything
        self.address = address
        self.exclusive_nodes = exclusive_nodes
        self.num_cpus = num_cpus
        self.cells_per_gpu = cells_per_gpu
        # Shared nodes or GPUs give perplexities but not clean timings: say so in run.json and cells.csv.
        self.name = "ray" if exclusive_nodes and cells_per_gpu == 1 else "ray-shared"
        self._connected_here = False
        self._node_probes: dict[str, ray.ObjectRef] = {}
        self._node_info: dict[str, dict] = {}

    # connection

    def connect(self) -> None:
        if ray.is_initialized():
            return
        options = dict(logging_level=logging.WARNING, log_to_driver=False)
        main_thread = threading.current_thread() is threading.main_thread()
        # ray.init replaces the driver's SIGTERM handler (with a plain exit): keep the harness's, which
        # stops the run with its message. The processes of a local instance start with SIGUSR1 blocked
        # (they inherit the mask), so that a SIGUSR1 sent to the run's whole process group, which asks
        # the run to finish its cells in flight, does not kill Ray under them; one sent to the driver
        # meanwhile waits until the mask is restored.
        sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
        blocked = hasattr(signal, "pthread_sigmask") and hasattr(signal, "SIGUSR1")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1}) if blocked else None
        try:
            if self.address:
                ray.init(address=self.address, **options)
            else:
                # "local": a new instance even when `ray start` left a cluster running on this machine.
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"--address {self.address}" if self.address else "a local Ray instance"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = (" (a cluster with token authentication needs RAY_AUTH_MODE=token and its token here)"
                    if self.address else "")
            raise HarnessError(f"{where}: cannot start or reach Ray: {first_line}{hint}") from None
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        self._connected_here = True

    def close(self) -> None:
        """Disconnect if ``connect`` connected (a local instance it started stops with it)."""
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
        self._connected_here = False

    # nodes

    def _alive_nodes(self) -> list[Node]:
        nodes = cluster_nodes(ray.nodes())
        for node in nodes:
            if node.node_id not in self._node_probes:
                strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                self._node_probes[node.node_id] = _describe_node_task.options(scheduling_strategy=strategy).remote()
        return nodes

    def _describe(self, node: Node) -> dict:
        if node.node_id not in self._node_info:
            try:
                self._node_info[node.node_id] = ray.get(self._node_probes[node.node_id], timeout=NODE_INFO_TIMEOUT)
            except (ray.exceptions.RayError, KeyError):
                return {"hostname": node.hostname, "cpu_model": None, "gpu_name": None}
        return self._node_info[node.node_id]

    # the grid

    def execute(self, cells: list[GridCell], run_dir, progress, stop: threading.Event,
                drain: threading.Event) -> Iterator[tuple[GridCell, dict]]:
        self.connect()
        pending = submission_order(cells, progress.estimates, set(progress.started_epochs))
        in_flight: dict[ray.ObjectRef, _Flight] = {}
        try:
            while pending or in_flight:
                if stop.is_set():
                    raise KeyboardInterrupt
                if drain.is_set():
                    pending.clear()  # the cells in flight finish; none starts
                    if not in_flight:
                        break
                nodes = self._alive_nodes()
                for cell in list(pending):
                    reason = unservable_reason(cell, nodes)
                    if reason:
                        pending.remove(cell)
                        yield cell, self._finish(cell, run_dir, failure_record(cell, "skipped", reason, []),
                                                 f"skipped: {reason}\n", node=None)
                in_use = _held(in_flight.values())
                for cell in list(pending):
                    if drain.is_set():
                        break  # asked while this pass ran: the next pass lets the cells in flight finish
                    placed = choose_node(cell, nodes, in_use, self.exclusive_nodes, self.cells_per_gpu)
                    if placed is None:
                        continue
                    node, request = placed
                    ref = _run_cell_task.options(
                        **request, scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                    ).remote(cell, self.malloc, checkpoint_for(run_dir, cell, node, socket.gethostname()))
                    in_flight[ref] = _Flight(cell, node, request, time.monotonic())
                    held = in_use.setdefault(node.node_id, {"num_cpus": 0.0, "num_gpus": 0.0})
                    for key, value in request.items():
                        held[key] += value
                    pending.remove(cell)
                    progress.start_cell(cell)
                if not in_flight:
                    time.sleep(POLL_SECONDS)  # nodes are busy with other jobs or still joining
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    flight = in_flight.pop(ref)
                    yield flight.cell, self._collect(ref, flight, run_dir)
        finally:
            for ref in in_flight:
                # A plain cancel raises KeyboardInterrupt in the task, which stops the cell's process;
                # best effort, as Ray may already be going away.
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            self.close()

    def _collect(self, ref, flight: _Flight, run_dir) -> dict:
        try:
            record, log_text = ray.get(ref)
        except ray.exceptions.RayError as exc:
            # The task's worker process or its node died, or the task could not run there.
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            summary = f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"[:500]
            record = failure_record(flight.cell, "failed", f"Ray task failed on {flight.node.hostname}: {summary}", [])
            record["total_sec"] = time.monotonic() - flight.started
            log_text = f"Ray task failed on node {flight.node.hostname} ({flight.node.node_id}):\n{exc}\n"
        return self._finish(flight.cell, run_dir, record, log_text, self._describe(flight.node))

    def _finish(self, cell: GridCell, run_dir, record: dict, log_text: str, node: dict | None) -> dict:
        run_dir.log_path(cell.cell_id).write_text(log_text)
        record = dict(record)
        record["node"] = node
        record["executor"] = self.name
        if "total_sec" not in record:
            record["total_sec"] = None
        return record


def _held(flights) -> dict[str, dict[str, float]]:
    held: dict[str, dict[str, float]] = {}
    for flight in flights:
        node = held.setdefault(flight.node.node_id, {"num_cpus": 0.0, "num_gpus": 0.0})
        for key, value in flight.request.items():
            node[key] += value
    return held

