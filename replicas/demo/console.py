"""`tillmesh demo`'s run: its live terminal view and its summary.

On a terminal the demo draws one live screen (phase banner, a table of replicas,
an event ticker) rather than scrolling logs; when stdout is not a terminal (CI, a
pipe) it prints one plain line per phase, then the same summary.

`--lan` runs the site on emulated machines (`replicas.demo.lan`): it needs root, and is
refused (exit 2, nothing made) where network namespaces cannot be made. Its `--keep`
keeps everything running in the foreground until Ctrl-C, as the network lives only as
long as this process; the plain demo's `--keep` leaves the replicas running and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from broker.subjects import HQ
from replicas.demo.lan.story import LanDemo, describe_uplink
from replicas.demo.story import MARKER, Demo, DemoError
from replicas.site import SITE_FILE

__all__ = ["prepare_data", "render_live", "render_summary", "run_demo"]

_STATE_STYLE = {"running": "green", "net frozen": "yellow", "killed": "red", "starting": "cyan"}


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo the parsed `tillmesh demo` flags describe (checked by the command)."""
    console = Console(highlight=False)
    if not console.is_terminal:  # CI logs: wide enough that tables do not wrap
        console = Console(highlight=False, width=110)
    demo = (LanDemo if args.lan else Demo)(
        args.data,
        seed=args.seed,
        duration=args.duration,
        stores=args.stores,
        tills=args.tills,
        catalog_size=args.products,
        keep=args.keep,
        **({"hq_db": args.hq_db} if args.hq_db else {}),
    )
    try:
        return _run_and_report(demo, console, args.data)
    finally:
        if isinstance(demo, LanDemo) and demo.keep:  # its network goes with this process
            asyncio.run(demo.shutdown())


def _run_and_report(demo: Demo, console: Console, data: Path) -> int:
    error = None
    try:
        prepare_data(data)
        asyncio.run(_run(demo, console))
    except DemoError as e:
        error = str(e)
    except KeyboardInterrupt:
        console.print("interrupted: every process the demo started is stopped")
        return 130
    if hasattr(demo, "workload"):
        console.print(render_summary(demo))
    if error is None and not demo.ok:
        error = "the replicas do not match what the API acknowledged"
    console.print(f"[bold red]FAILED[/]: {error}" if error else _success_line(demo), soft_wrap=True)
    if isinstance(demo, LanDemo) and demo.keep and hasattr(demo, "fleet"):
        _keep_lan(console, demo)
    elif demo.keep and hasattr(demo, "fleet"):
        _print_keep(console, demo)
    return 1 if error else 0


def prepare_data(root: Path) -> None:
    """An empty data folder; a previous demo's is wiped, anything else is refused."""
    if root.exists() and any(root.iterdir()):
        if not ((root / SITE_FILE).is_file() and (root / MARKER).is_file()):
            raise DemoError(
                f"{root} exists and was not made by `tillmesh demo`; "
                "choose another --data or empty it yourself"
            )
        alive = _previous_pids(root)
        if alive:
            pids = " ".join(map(str, alive))
            raise DemoError(f"a previous demo in {root} still runs; stop it first: kill {pids}")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def _previous_pids(root: Path) -> list[int]:
    """Replica processes a `--keep` run left behind (same pid *and* our command line)."""
    try:
        pids = json.loads((root / MARKER).read_text()).get("pids", {})
    except (OSError, ValueError):
        return []
    alive = []
    for pid in pids.values():
        with contextlib.suppress(psutil.Error):
            if str(root.resolve()) in psutil.Process(pid).cmdline():
                alive.append(pid)
    return alive


async def _run(demo: Demo, console: Console) -> None:
    if not console.is_terminal:
        demo.on_phase = lambda title, detail: console.print(
            f"[{time.monotonic() - demo.t0:5.1f}s] {title}: {detail}", soft_wrap=True
        )
        await demo.run()
        return
    with Live(render_live(demo), console=console, refresh_per_second=4, transient=False) as live:
        task = asyncio.create_task(demo.run())
        while not task.done():
            live.update(render_live(demo))
            await asyncio.wait([task], timeout=0.25)
        live.update(render_live(demo))
        await task


# --- live view ----------------------------------------------------------------------------


def render_live(demo: Demo) -> Group:
    title, detail = demo.phase
    clock = time.monotonic() - demo.t0
    banner = Panel(
        Text(detail),
        title=f"[bold]{title or 'tillmesh demo'}[/]",
        subtitle=f"{clock:5.1f} s  seed {demo.seed}",
        border_style="blue",
    )
    ticker = Text("\n".join(f"{t:6.1f}s  {msg}" for t, msg in list(demo.ticker)[:8]) or " ")
    return Group(banner, _replica_table(demo), Panel(ticker, title="events", border_style="dim"))


def _replica_table(demo: Demo) -> Table:
    table = Table(expand=False)
    for name in (
        "replica",
        "process",
        "pid",
        "link to HQ",
        "events",
        "sales",
        "not at HQ",
        "digest",
    ):
        table.add_column(
            name, justify="right" if name in ("events", "sales", "not at HQ") else "left"
        )
    fleet = getattr(demo, "fleet", None)
    if fleet is None:
        return table
    majority = _majority_digests(demo)
    for rid, proc in fleet.procs.items():
        st = demo.status.get(rid, {})
        digest = st.get("digest") or ""
        store = rid.split("/")[0]
        dstyle = "green" if digest and digest == majority.get(store) else "yellow"
        table.add_row(
            rid,
            Text(proc.state, style=_STATE_STYLE.get(proc.state, "dim")),
            str(proc.pid or "-"),
            _link(demo, rid),
            str(st.get("events", "-")),
            str(st.get("sales", {}).get("sales", "-")),
            "-" if rid == HQ else str(st.get("unsynced_to_hq", "-")),
            Text(digest[:10], style=dstyle if rid != HQ else "dim"),
            style=None if proc.state in ("running", "net frozen") else "dim",  # last known
        )
    return table


def _link(demo: Demo, rid: str) -> Text:
    """What the nats-server itself reports (/leafz): proof a cut is real, not simulated."""
    n = demo.leaf.get(rid)
    if demo.fleet.procs[rid].state not in ("running", "net frozen"):
        return Text("-", style="dim")
    if n is None:
        return Text("no answer", style="yellow")
    if rid == HQ:
        return Text(f"{n} tills", style="green" if n else "yellow")
    uplink = getattr(demo, "uplink", {}).get(rid)  # which uplink, which HQ machine (--lan)
    label = describe_uplink(uplink) if n and uplink else "leaf up" if n else "leaf down"
    return Text(label, style="green" if n else "red")


def _majority_digests(demo: Demo) -> dict[str, str]:
    out: dict[str, str] = {}
    for store, tills in demo.site.stores.items():
        digests = [demo.status.get(f"{store}/{t}", {}).get("digest") for t in tills]
        known = [d for d in digests if d]
        if known:
            out[store] = max(set(known), key=known.count)
    return out


# --- summary -----------------------------------------------------------------------------------


def render_summary(demo: Demo) -> Group:
    parts: list[Any] = [_summary_replicas(demo)]
    if demo.card_split:
        parts.append(_summary_cards(demo))
    if demo.catchups:
        parts.append(_summary_catchups(demo))
    parts.append(_summary_totals(demo))
    if demo.metrics:
        parts.append(_summary_metrics(demo))
    failed = [c for c in demo.checks if not c.ok]
    if failed:
        table = Table(title="FAILED checks", expand=False)
        for col in ("check", "detail"):
            table.add_column(col)
        for c in failed:
            table.add_row(Text(c.name, style="red"), c.detail)
        parts.append(table)
    return Group(*parts)


def _mark(demo: Demo, subject: str, what: str) -> Text:
    found = [c for c in demo.checks if c.subject == subject and c.what == what]
    if not found:
        return Text("-", style="dim")
    ok = all(c.ok for c in found)
    return Text("ok" if ok else "FAILED", style="green" if ok else "bold red")


def _summary_replicas(demo: Demo) -> Table:
    t = Table(
        title="replicas, checked against the model of what the API acknowledged", expand=False
    )
    cols = (
        "replica",
        "events",
        "sales",
        "conflicts",
        "digest",
        "same digest",
        "each sale once",
        "stock",
        "money",
        "prices",
        "cards",
    )
    for col in cols:
        t.add_column(col, justify="right" if col in ("events", "sales", "conflicts") else "left")
    for rid in demo.site.replicas:
        st = demo.status.get(rid, {})
        conflicts = demo.conflicts.get(rid)
        store = rid.split("/")[0]
        kinds = ", ".join(f"{n} {k}" for k, n in sorted((conflicts or {}).items()))
        t.add_row(
            rid,
            str(st.get("events", "-")),
            str(st.get("sales", {}).get("sales", "-")),
            "-" if conflicts is None else kinds or "0",
            (st.get("digest") or "")[:12] if rid != HQ else "(all stores)",
            _mark(demo, store, "digest") if rid != HQ else Text("per store", style="dim"),
            _mark(demo, rid, "sales"),
            _mark(demo, rid, "stock"),
            _mark(demo, rid, "money"),
            _mark(demo, rid, "prices"),
            _mark(demo, rid, "cards"),
        )
    return t


def _summary_cards(demo: Demo) -> Table:
    """HQ's payments report for cards, split by settlement, and each store's peak of
    offline card payments not yet captured."""
    t = Table(title="card payments at HQ (payments report)", expand=False, show_header=False)
    t.add_column("what")
    t.add_column("amount", justify="right")
    split = demo.card_split
    for what, key in (("authorised online", "online"), ("deferred, then captured", "captured"),
                      ("deferred, then declined", "declined"), ("deferred, expired", "expired"),
                      ("deferred, outstanding", "outstanding")):  # fmt: skip
        t.add_row(what, f"{split.get(key, 0) / 100:,.2f}")
    n = demo.workload.model.counts
    t.add_row("refused offline over the floor limits (paid cash)", str(n["card_refused_409"]))
    t.add_row("declined online (paid cash)", str(n["card_refused_402"]))
    for store, (payments, amount, phase) in sorted(demo.exposure_peak.items()):
        t.add_row(f"peak offline exposure {store}", f"{payments} for {amount / 100:,.2f} ({phase})")
    return t


def _summary_catchups(demo: Demo) -> Table:
    t = Table(title="catch-up after each heal", expand=False)
    for col in ("after", "events made meanwhile", "caught up in"):
        t.add_column(col, justify="left" if col == "after" else "right")
    for c in demo.catchups:
        took = "-" if c.took is None else f"{c.took:.1f} s"
        if c.took is not None and c.startup is not None:
            took += f"  (start-up {c.startup:.1f} s)"
        t.add_row(c.label, str(c.backlog) if c.backlog else "-", took)
    return t


def _summary_metrics(demo: Demo) -> Table:
    t = Table(title="each replica's own GET /metrics (Prometheus text)", expand=False)
    cols = (
        "replica",
        "appended",
        "ingested",
        "commits",
        "commit p99",
        "pulls failed",
        "quarantined",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "replica" else "right")
    for rid, m in demo.metrics.items():
        p99 = "-" if m.commit_p99_ms is None else f"<= {m.commit_p99_ms:g} ms"
        t.add_row(rid, str(m.appended), str(m.ingested), str(m.commits), p99,
                  str(m.pulls_failed), str(m.quarantined))  # fmt: skip
    return t


def _summary_totals(demo: Demo) -> Table:
    m = demo.workload.model
    n = m.counts
    money = {k: sum(v.get(k, 0) for v in m.money.values()) for k in ("gross", "voided", "refunded")}
    net = money["gross"] - money["voided"] - money["refunded"]
    t = Table(title="acknowledged by the tills' API", expand=False, show_header=False)
    t.add_column("what")
    t.add_column("how many", justify="right")
    rows = [
        ("products (HQ catalog)", n["products"]),
        ("HQ price changes", n["price_changes"]),
        ("store price overrides", n["store_overrides"]),
        ("stock deliveries", n["deliveries"]),
        ("sales", n["sales"]),
        ("  paid cash", n["cash"]),
        ("  paid card, authorised online", n["card_online"]),
        ("  paid card, deferred (offline)", n["card_deferred"]),
        ("refunds", n["refunds"]),
        ("voids", n["voids"]),
        ("net takings", f"{net / 100:,.2f}"),
        ("total runtime", f"{demo.elapsed:.1f} s"),
    ]
    if demo.converge_took is not None:
        rows.insert(-1, ("final convergence", f"{demo.converge_took:.1f} s"))
    for what, value in rows:
        t.add_row(what, str(value))
    return t


def _success_line(demo: Demo) -> str:
    n = demo.workload.model.counts
    # A till reports its store's conflicts: count each store once (HQ sums stores' stock).
    conflicts = sum(
        sum(demo.conflicts.get(f"{s}/{t[0]}", {}).values()) for s, t in demo.site.stores.items()
    )
    what = (
        "stock, money, prices and card settlements"
        if demo.card_split
        else ("stock, money and prices")
    )
    return (
        f"[bold green]CONVERGED[/]: {len(demo.site.replicas)} replicas, {n['sales']} sales, "
        f"one digest per store (HQ included), every acknowledged sale exactly once, {what}"
        f" equal to the model everywhere ({len(demo.checks)} checks), "
        f"{conflicts} conflict{'' if conflicts == 1 else 's'} flagged for review"
    )


def _print_keep(console: Console, demo: Demo) -> None:
    console.print("\n[bold]Still running[/] (--keep):")
    pids = []
    for rid, proc in demo.fleet.procs.items():
        if proc.pid is not None and proc.alive():
            pids.append(str(proc.pid))
            console.print(f"  {rid:6} {demo.site.api_url(rid)}/   pid {proc.pid}")
    console.print(f"  e.g. tillmesh status --data {demo.root} --replica s1/t1")
    if demo.postgres is not None and (pg := demo.postgres.postmaster_pid()) is not None:
        console.print(f"  HQ's PostgreSQL {demo.postgres.dsn}   pid {pg}")
        console.print(f"  e.g. tillmesh report sales {demo.postgres.dsn} --by store")
        pids.append(str(pg))
    console.print(f"Stop them with:  kill {' '.join(pids)}   (each stops its own nats-server)")


def _keep_lan(console: Console, demo: LanDemo) -> None:
    """Until Ctrl-C (or SIGTERM): the emulated machines live only as long as this process."""
    console.print("\n[bold]Still running[/] (--keep --lan) until Ctrl-C, which stops it all:")
    for rid, proc in demo.fleet.procs.items():
        if proc.pid is not None and proc.alive():
            ns = demo.machines.host(rid).ns
            console.print(f"  {rid:6} {demo.site.api_url(rid)}/  machine {ns}  pid {proc.pid}")
    rid = next(r for r in demo.site.replicas if r != HQ)
    token = demo.api.tokens[rid]
    console.print(
        f"  e.g. ip netns exec {demo.machines.host(rid).ns} env TILLMESH_TOKEN={token} "
        f"tillmesh status --data {demo.root} --replica {rid}",
        soft_wrap=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    console.print("stopping every process and removing the emulated machines")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
