"""`crossbook`: the command line for traders, testers and operators.

Thin: each command parses its options and calls a service in scripts/, app/ or
settlement/. Errors that a user can fix print one line naming the cause and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from app.manifest import Manifest, ManifestError
from app.settings import get_settings

if TYPE_CHECKING:
    from scripts.devnet.devnet import Devnet

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Crossbook: cross-chain liquidity aggregator")
devnet_app = typer.Typer(no_args_is_help=True, help="Multi-chain Anvil devnet for testers")
app.add_typer(devnet_app, name="devnet")
# soft_wrap: errors stay on one line, whatever the terminal width (scripts grep them).
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ChainOpt = Annotated[int, typer.Option("--chain", help="chain id")]


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _state_dir() -> Path:
    return get_settings().state_dir / "devnet"


def _progress(msg: str) -> None:
    err.print(f"[cyan]•[/] {msg}")


@devnet_app.command("up")
def devnet_up(
    chains: Annotated[int, typer.Option(help="number of chains")] = 3,
    config: Annotated[Path | None, typer.Option(help="devnet TOML config file")] = None,
    base_port: Annotated[int | None, typer.Option(help="chain k listens on base-port + k (0: free ports)")] = None,
    foreground: Annotated[bool, typer.Option(help="stay attached; Ctrl-C stops the devnet")] = False,
) -> None:
    """Start an N-chain devnet with tokens, pools, funded accounts; write the manifest."""
    from scripts.devnet.config import ConfigError, load_config
    from scripts.devnet.devnet import Devnet, DevnetError, DevnetState, ensure_anvil

    try:
        ensure_anvil()
        cfg = load_config(config or get_settings().devnet_config, chains=chains, base_port=base_port)
        existing = DevnetState.load(_state_dir())
        if existing and any(_alive(p["pid"]) for p in existing.pids):
            _fail("a devnet is already running (`crossbook devnet down` first)")
        net = Devnet(cfg, _state_dir(), detached=not foreground)
        net.start(progress=_progress)
    except (ConfigError, DevnetError) as e:
        _fail(str(e))
        return
    out.print_json(json.dumps({"manifest": str(net.manifest_path), "chains": [
        {"chainId": c.chain_id, "rpcUrl": c.rpc_url} for c in net.manifest.chains  # type: ignore[union-attr]
    ]}))
    if foreground:
        from scripts.stack import wait_for_signal

        try:
            wait_for_signal()
        finally:
            net.stop()


def _alive(pid: int) -> bool:
    from scripts.devnet.devnet import _pid_alive

    return _pid_alive(int(pid))


@devnet_app.command("down")
def devnet_down() -> None:
    """Stop every process `devnet up` started."""
    from scripts.devnet.devnet import stop_detached

    stopped = stop_detached(_state_dir())
    out.print(f"stopped {len(stopped)} process(es)")


def _manifest() -> Manifest:
    try:
        return Manifest.load(get_settings().manifest)
    except ManifestError as e:
        _fail(str(e))
        raise


@devnet_app.command("status")
def devnet_status(as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False) -> None:
    """Height, finalized height, block time, depth and pool reserves per chain."""
    from scripts.devnet.status import devnet_status as status

    doc = status(_manifest(), _state_dir() / "control.json")
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    from rich.table import Table

    for c in doc["chains"]:
        head = f"{c['name']} (chain {c['chainId']}) {c['rpcUrl']}"
        if not c.get("available"):
            out.print(f"[red]{head}: unavailable[/] {c.get('error', '')}")
            continue
        out.print(
            f"[bold]{head}[/] height {c['height']} finalized {c['finalizedHeight']} "
            f"block {c['blockTime']}s depth {c['finalityDepth']}" + (" [red]HALTED[/]" if c["halted"] else "")
        )
        t = Table("pool", "kind", "fee", "reserve0", "reserve1")
        for p in c["pools"]:
            t.add_row(f"{p['pair']} {p['address'][:10]}…", p["kind"], f"{p['feeBps']}bps", p["reserve0"], p["reserve1"])
        out.print(t)


def _controller() -> Devnet:
    from scripts.devnet.config import load_config
    from scripts.devnet.devnet import Devnet

    net = Devnet(load_config(get_settings().devnet_config), _state_dir())
    net.manifest = _manifest()
    if not net.control_path.exists():
        _fail("no devnet control file: is a devnet running?")
    return net


def _control(action: Callable[[Devnet], None], done: str) -> None:
    """Run one block-production change on the running devnet; errors name the cause."""
    from scripts.devnet.devnet import DevnetError

    try:
        action(_controller())
    except DevnetError as e:
        _fail(str(e))
    out.print(done)


@devnet_app.command("halt")
def devnet_halt(chain: ChainOpt) -> None:
    """Stop block production on a chain."""
    _control(lambda net: net.halt(chain), f"chain {chain} halted")


@devnet_app.command("resume")
def devnet_resume(chain: ChainOpt) -> None:
    """Restart block production on a halted chain."""
    _control(lambda net: net.resume(chain), f"chain {chain} resumed")


@devnet_app.command("slow")
def devnet_slow(chain: ChainOpt, block_time: Annotated[float, typer.Option(help="new block time in seconds")]) -> None:
    """Change a chain's block time (slow finality)."""
    _control(lambda net: net.set_block_time(chain, block_time), f"chain {chain} block time {block_time}s")


@devnet_app.command("reorg")
def devnet_reorg(
    chain: ChainOpt,
    depth: Annotated[int, typer.Option(help="blocks to replace")] = 1,
    from_block: Annotated[int | None, typer.Option(help="replace every block from this one to the head (overrides --depth)")] = None,
) -> None:
    """Reorganise the last DEPTH blocks of a chain (anvil_reorg), or every block from
    FROM_BLOCK on; their transactions are dropped."""
    from scripts.devnet.devnet import DevnetError, reorg, reorg_from

    m = _manifest()
    try:
        rpc = m.chain(chain).rpc_url
        res = reorg(rpc, depth) if from_block is None else reorg_from(rpc, from_block)
    except KeyError:
        _fail(f"unknown chain id {chain}; chains: {list(m.chain_ids)}")
        return
    except DevnetError as e:
        _fail(str(e))
        return
    out.print_json(json.dumps(res))


@app.command("up")
def up(
    chains: Annotated[int, typer.Option(help="number of chains")] = 3,
    config: Annotated[Path | None, typer.Option(help="devnet TOML config file")] = None,
    base_port: Annotated[int | None, typer.Option(help="chain k listens on base-port + k (0: free ports)")] = None,
) -> None:
    """Start everything: Redis (embedded if REDIS_URL does not answer), the devnet, and the services. Ctrl-C stops all."""
    from scripts.stack import Stack, StackError

    stack = Stack(get_settings(), chains=chains, config=config, base_port=base_port, progress=_progress)
    try:
        stack.run()
    except StackError as e:
        _fail(str(e))


@app.command("api")
def api(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Run the HTTP API alone (reads the devnet manifest; needs Redis at REDIS_URL)."""
    import uvicorn

    s = get_settings()
    if not s.manifest.exists():
        _fail(f"no manifest at {s.manifest}: start a devnet with `crossbook devnet up`")
    uvicorn.run(
        "app.api.main:create_app",
        factory=True,
        host=host or s.api_host,
        port=port or s.api_port,
        workers=workers,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # served directly; X-Forwarded-* from clients is not trusted
    )


def _api_url(api_url: str | None) -> str:
    s = get_settings()
    return api_url or f"http://{s.api_host}:{s.api_port}"


def _trader(name: str) -> tuple[str, str]:
    m = _manifest()
    for acct in (*m.traders, *m.makers):
        if acct.name == name or acct.address.lower() == name.lower():
            return acct.address, acct.private_key
    _fail(f"no devnet account {name!r}; traders: {[a.name for a in m.traders]}")
    raise AssertionError


def _amount(value: str) -> int:
    if not value.isdigit():
        _fail("amounts are integers in base units (e.g. 1000000000000000000 for 1 WETH)")
    return int(value)


@app.command("worker")
def worker(
    queues: Annotated[str, typer.Option(help="Celery queues to consume")] = "settle,prove",
    concurrency: Annotated[int, typer.Option(help="worker slots (1: solo pool)")] = 1,
) -> None:
    """A settlement worker: cuts batches, proves, submits, follows finality (Celery, Redis broker)."""
    from settlement.celery_app import run_worker

    run_worker(queues=queues, concurrency=concurrency, loglevel=get_settings().log_level)


@app.command("beat")
def beat() -> None:
    """The settlement scheduler: per-chain ticks and reconciliation."""
    from settlement.celery_app import run_beat

    s = get_settings()
    s.state_dir.mkdir(parents=True, exist_ok=True)
    run_beat(loglevel=s.log_level, schedule_file=str(s.state_dir / "celerybeat-schedule"))


@app.command("quote")
def quote_cmd(
    sell_chain: Annotated[int, typer.Option(help="chain id to sell on")],
    sell: Annotated[str, typer.Option(help="asset symbol or token address to sell")],
    buy_chain: Annotated[int, typer.Option(help="chain id to receive on")],
    buy: Annotated[str, typer.Option(help="asset symbol or token address to buy")],
    amount: Annotated[str, typer.Option(help="sell amount in base units")],
    trader: Annotated[str, typer.Option(help="devnet account name or address")] = "trader1",
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL")] = None,
) -> None:
    """Quote a swap with a devnet trader as taker."""
    from app.client import ApiCallError, CrossbookClient

    addr, _ = _trader(trader)
    try:
        q = CrossbookClient(_api_url(api_url)).quote(sell_chain, sell, buy_chain, buy, taker=addr, sell_amount=_amount(amount))
    except ApiCallError as e:
        _fail(str(e))
        return
    out.print_json(json.dumps(q))


@app.command("swap")
def swap_cmd(
    sell_chain: Annotated[int, typer.Option(help="chain id to sell on")],
    sell: Annotated[str, typer.Option(help="asset symbol or token address to sell")],
    buy_chain: Annotated[int, typer.Option(help="chain id to receive on")],
    buy: Annotated[str, typer.Option(help="asset symbol or token address to buy")],
    amount: Annotated[str, typer.Option(help="sell amount in base units")],
    trader: Annotated[str, typer.Option(help="devnet account name or address")] = "trader1",
    slippage_bps: Annotated[int, typer.Option(help="slippage tolerance")] = 50,
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL")] = None,
) -> None:
    """Quote, sign the order with a devnet trader's key, and confirm it; prints the receipt."""
    from app.client import ApiCallError, CrossbookClient

    addr, key = _trader(trader)
    client = CrossbookClient(_api_url(api_url))
    try:
        q = client.quote(sell_chain, sell, buy_chain, buy, taker=addr, sell_amount=_amount(amount), slippageBps=slippage_bps)
        receipt = client.swap(q, key)
    except ApiCallError as e:
        _fail(str(e))
        return
    out.print_json(json.dumps(receipt))


@app.command("order")
def order_cmd(
    order_id: Annotated[str, typer.Argument(help="order id (0x…)")],
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL")] = None,
) -> None:
    """An order's state, legs, confirmations and receipt."""
    from app.client import ApiCallError, CrossbookClient

    try:
        out.print_json(json.dumps(CrossbookClient(_api_url(api_url)).order(order_id)))
    except ApiCallError as e:
        _fail(str(e))


@app.command("demo")
def demo(
    orders: Annotated[int, typer.Option(help="orders to send")] = 20,
    rate: Annotated[float, typer.Option(help="orders per second")] = 2.0,
    wait: Annotated[float, typer.Option(help="seconds to follow them towards finality")] = 180.0,
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL")] = None,
) -> None:
    """Send a stream of realistic orders from the devnet traders and watch them finalize."""
    import statistics

    from scripts.demo_orders import run_demo

    res = run_demo(_api_url(api_url), _manifest(), orders=orders, rate=rate, wait=wait, show=lambda line: out.print(line, highlight=False))
    done = sum(1 for st in res.states.values() if st == "finalized")
    summary = {
        "sent": res.sent,
        "refused": res.refused,
        "finalized": done,
        "notTerminal": sum(1 for st in res.states.values() if st not in ("finalized", "failed", "refunded")),
        "confirmMsMedian": round(statistics.median(res.confirm_ms), 1) if res.confirm_ms else None,
        "trustWindowSecondsMedian": round(statistics.median(res.trust_window_s.values()), 1) if res.trust_window_s else None,
    }
    out.print_json(json.dumps(summary))


@app.command("bench")
def bench(
    which: Annotated[list[str] | None, typer.Argument(help="benchmarks to run (default: all)")] = None,
    quick: Annotated[bool, typer.Option(help="small sizes, for CI smoke runs")] = False,
) -> None:
    """Run benchmarks; prints one JSON document."""
    from bench.runner import run_benchmarks

    doc = run_benchmarks(which or [], quick=quick)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


# -- settlement operator commands --------------------------------------------------------

settlement_app = typer.Typer(
    no_args_is_help=True, help="Settlement pipeline: status of each chain, unblock a stuck one, switch the fast tier"
)
app.add_typer(settlement_app, name="settlement")


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(get_settings().redis_url or "redis://127.0.0.1:6379/0", decode_responses=True, socket_timeout=10)


def _settlement_chains(chain: int | None) -> list[int]:
    m = _manifest()
    if chain is not None and chain not in m.chain_ids:
        _fail(f"unknown chain id {chain}; chains: {list(m.chain_ids)}")
    return [chain] if chain is not None else list(m.chain_ids)


def _fast_limits(chain: int) -> Any:
    """The chain's fast-tier limits as the settle worker applies them (None: no fast tier)."""
    from settlement.tier import load_rules

    return load_rules(get_settings().manifest, enabled=get_settings().fast_tier_enabled).limits.get(chain)


def _fast_tier_line(f: dict[str, Any]) -> str:
    from settlement.tier import usd_text

    if not f["configured"]:
        return f"  fast tier: none ({f['reason']})"
    lim, loss = f["limits"], f["losses"]
    state = "[green]on[/]" if f["on"] else f"[bold red]OFF[/] ({f['switch']['by']}: {f['reason']})"
    trader_cap = "none" if lim["traderCapUsd6"] is None else usd_text(int(lim["traderCapUsd6"]))
    budget = "none" if lim["lossBudgetUsd6"] is None else usd_text(int(lim["lossBudgetUsd6"]))
    return (
        f"  fast tier: {state}; up to {usd_text(int(lim['maxValueUsd6']))} USD per order; exposure "
        f"{usd_text(int(f['exposureUsd6']))} of {usd_text(int(lim['exposureCapUsd6']))} USD, {f['traders']} trader(s), "
        f"cap {trader_cap} each; losses {usd_text(int(loss['inWindowUsd6']))} USD ({loss['inWindow']}) in "
        f"{lim['lossWindowSeconds'] / 3600:g} h, {usd_text(int(loss['countedUsd6']))} counted of the budget {budget}"
    )


@settlement_app.command("status")
def settlement_status(
    chain: Annotated[int | None, typer.Option("--chain", help="chain id (default: every chain)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    recent: Annotated[int, typer.Option(help="last batches to show")] = 5,
) -> None:
    """Backlog, batch in flight, last batches, reverts, backoff, vault inventory, last reconciliation, fast tier."""
    import redis

    from settlement.operator import chain_report
    from settlement.tasks import context

    r = _redis()
    docs = []
    try:
        for cid in _settlement_chains(chain):
            try:
                ctx = context(cid)
            except RuntimeError as e:  # no vault in the manifest: Redis side only
                err.print(f"[yellow]chain {cid}:[/] {e}")
                ctx = None
            docs.append(chain_report(r, cid, ctx, recent=recent, fast=_fast_limits(cid)))
    except redis.RedisError as e:
        _fail(f"Redis at {get_settings().redis_url or 'redis://127.0.0.1:6379/0'}: {e}")
    except OSError as e:  # the chain's RPC does not answer
        _fail(f"chain RPC: {e}")
    if as_json:
        sys.stdout.write(json.dumps({"chains": docs}, indent=2) + "\n")
        return
    for d in docs:
        flight = f"{d['inFlight']} ({d.get('inFlightState')})" if d["inFlight"] else "none"
        out.print(
            f"[bold]chain {d['chainId']}[/] log {d['logLength']} settled {d['settled']} backlog {d['backlog']} "
            f"in flight {flight} open {d['openBatches']} confirms pending {d['pendingConfirms']}",
            highlight=False,
        )
        if d.get("onChain"):
            oc = d["onChain"]
            out.print(f"  vault cursor {oc['cursor']} at block {oc['block']}, {oc['pending']} legs pending", highlight=False)
            for x in oc["inventory"]:
                short = f" [red]SHORT {x['shortfall']}[/]" if x["shortfall"] != "0" else ""
                out.print(f"  {x['symbol']}: vault {x['balance']} payouts pending {x['needed']}{short}", highlight=False)
        for b in d["batches"]:
            extra = f" reason: {b['reason'][:120]}" if b.get("reason") else ""
            out.print(
                f"  batch {b['number']} [{b['start']},+{b['count']}) {b['state']} cap {b.get('capacity')} "
                f"proof {b.get('proofSeconds')}s block {b.get('block')} gas {b.get('gasUsed')}{extra}",
                highlight=False,
            )
        if d["reverts"]:
            out.print(f"  reverts by range start: {d['reverts']}", highlight=False)
        if d["backoff"]:
            out.print(f"  [red]backing off[/]: range {d['backoff']['start']}, {d['backoff']['secondsLeft']}s left", highlight=False)
        rec = d.get("reconcile")
        if rec:
            out.print(f"  reconcile: {rec.get('status')} ({rec.get('ageSeconds')}s ago)", highlight=False)
        if d["stuck"]:
            out.print(f"  [bold red]STUCK[/]: {d['stuck']}", highlight=False)
        out.print(_fast_tier_line(d["fastTier"]), highlight=False)


@settlement_app.command("clear-backoff")
def settlement_clear_backoff(
    chain: ChainOpt,
    force: Annotated[bool, typer.Option(help="clear even if the vault still looks short")] = False,
) -> None:
    """After fixing the cause (e.g. topping up the vault): drop the revert pause so the chain cuts again now."""
    import redis

    from settlement.operator import chain_report, clear_backoff
    from settlement.tasks import context

    _settlement_chains(chain)
    r = _redis()
    try:
        if not force:
            try:
                ctx = context(chain)
            except RuntimeError as e:
                _fail(str(e))
                return
            short = [x for x in chain_report(r, chain, ctx)["onChain"]["inventory"] if x["shortfall"] != "0"]
            if short:
                names = ", ".join(f"{x['shortfall']} {x['symbol']}" for x in short)
                _fail(f"chain {chain}: the vault is still short of {names} (base units) for the pending payouts; top it up first, or --force")
        res = clear_backoff(r, chain)
    except redis.RedisError as e:
        _fail(f"Redis: {e}")
        return
    sys.stdout.write(json.dumps(res.to_json()) + "\n")


@settlement_app.command("fast-tier")
def settlement_fast_tier(
    chain: ChainOpt,
    enable: Annotated[bool, typer.Option("--enable", help="turn it on (again after the loss budget turned it off)")] = False,
    disable: Annotated[bool, typer.Option("--disable", help="turn it off: new orders settle standard")] = False,
    reason: Annotated[str, typer.Option(help="why, kept with the switch")] = "",
) -> None:
    """Switch the chain's fast settlement tier (payouts before pulls, for pulls on this chain); no flag: show it."""
    import redis

    from settlement.operator import fast_tier_report, set_fast_tier

    if enable and disable:
        _fail("--enable or --disable, not both")
    _settlement_chains(chain)
    limits = _fast_limits(chain)
    if enable and limits is None:
        _fail(f"chain {chain} has no fast tier to enable (its manifest fastTier.maxValueUsd6 is 0, or CROSSBOOK_FAST_TIER_ENABLED=false)")
    r = _redis()
    try:
        if enable or disable:
            set_fast_tier(r, chain, enable, reason)
        doc = fast_tier_report(r, chain, limits)
    except redis.RedisError as e:
        _fail(f"Redis: {e}")
        return
    sys.stdout.write(json.dumps({"chainId": chain, **doc}) + "\n")



def main() -> None:
    app()


if __name__ == "__main__":
    main()
