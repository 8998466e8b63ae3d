"""Settlement gas: what a settled swap costs on chain, beside a direct pool swap.

Prints one JSON document. One Anvil chain with the devnet contracts and the Settlement
vault (verifiers for capacities 16, 32, 64; the 64-slot key setup runs once if not
cached), real proofs, receipt `gasUsed` (intrinsic gas and calldata included):

- **cross-chain swap**: its pull on chain A plus its payout on chain B. Measured as a
  batch of n PULLs and a batch of n PAYOUTs on the same vault (a leg's gas does not
  depend on which chain it runs on): per swap = (gas(pulls) + gas(payouts)) / n.
- **same-chain swap**: a batch of n legs, n/2 pulls each linked to its payout in the
  batch: per swap = gas / (n/2).
- **per leg kind**: the marginal gas of one more leg, (gas(32 legs) - gas(8 legs)) / 24,
  and the fixed cost per batch (proof verification, cursor, base transaction).
- **direct pool swap**: `ConstantProductPool.swap` by a trader, same chain, same run.
- **several batches in one transaction** (`settleMany`, one `verifyBatch`: k proofs, k + 3
  pairings): k = 2 and 4 consecutive batches of 32 pulls (and of 32 payouts), settled from
  one snapshot once as k `settle` transactions and once as one `settleMany`; per
  cross-chain swap = (gas(pulls) + gas(payouts)) / (32 k) either way.

Steady state: every trader has settled an order before (its nonce bitmap word exists)
and every recipient holds the token; `first_order_extra` is what a trader's very first
order adds (a new nonce word).

    python -m bench.settlement_gas
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from web3 import Web3

from scripts.build_contracts import load_artifact
from settlement.vault import (
    SignedOrder,
    payout_leg,
    pull_leg,
    settle_call,
    settle_many_call,
    vault_domain,
)
from settlement.zk.batch import Batch
from settlement.zk.legs import Leg, LegKind
from tests.integration.settlement.harness import GAS, VaultChain, prove, vault_chain

OTHER_CHAIN = 31002
GOAL = 60_000
CAPACITY = {8: 16, 32: 32, 64: 64}
E6 = 10**6


def _log(msg: str) -> None:
    print(f"[settlement_gas] {msg}", file=sys.stderr, flush=True)


def _settle(chain: VaultChain, batch: Batch, orders: list[SignedOrder], **kw: Any) -> int:
    cap = CAPACITY.get(batch.count) or min(c for c in (16, 32, 64) if c >= batch.count)
    t = time.perf_counter()
    proof = prove(batch, cap)
    _log(f"{batch.count} legs: proof {time.perf_counter() - t:.1f}s (capacity {cap})")
    rc = chain.settle(settle_call(batch, cap, proof, orders, **kw))
    return int(rc["gasUsed"])


def _pulls(chain: VaultChain, n: int, cross: bool = True) -> tuple[list[Leg], list[SignedOrder]]:
    legs, orders = [], []
    for k in range(n):
        trader = chain.traders[k % len(chain.traders)]
        signed, h = chain.order(
            trader, "USDC", 100 * E6 + k, buy_chain=OTHER_CHAIN if cross else None
        )
        legs.append(pull_leg(signed.order, chain.index["USDC"], h))
        orders.append(signed)
    return legs, orders


def pull_batch(chain: VaultChain, n: int) -> int:
    legs, orders = _pulls(chain, n)
    return _settle(chain, chain.batch(legs), orders)


def _payouts(chain: VaultChain, n: int) -> tuple[list[Leg], list[SignedOrder]]:
    legs = [
        Leg(
            LegKind.PAYOUT,
            int(chain.traders[k % len(chain.traders)].address, 16),
            chain.index["WETH"],
            10**16 + k,
            10**16,
            k + 1,
        )
        for k in range(n)
    ]
    return legs, []


def payout_batch(chain: VaultChain, n: int) -> int:
    legs, _ = _payouts(chain, n)
    return _settle(chain, chain.batch(legs), [])


def many_vs_separate(
    chain: VaultChain, make: Callable[[VaultChain, int], tuple[list[Leg], list[SignedOrder]]], k: int, n: int = 32
) -> tuple[int, int]:
    """k consecutive batches of n legs from `make`: gas of k `settle` transactions and of
    one `settleMany`, both from the same chain state (a snapshot). Leaves them settled."""
    index, head = chain.cursor()
    calls = []
    for _ in range(k):
        legs, orders = make(chain, n)
        batch = Batch(chain.chain_id, index, head, tuple(legs))
        t = time.perf_counter()
        calls.append(settle_call(batch, CAPACITY[n], prove(batch, CAPACITY[n]), orders))
        _log(f"{n} legs at {index}: proof {time.perf_counter() - t:.1f}s")
        index, head = batch.end_index, batch.new_head
    snap = chain.snapshot()
    separate = sum(int(chain.settle(c)["gasUsed"]) for c in calls)
    chain.revert(snap)
    fn = chain.vault.functions.settleMany(*settle_many_call(calls).args())
    rc = chain.w3.eth.wait_for_transaction_receipt(fn.transact({"from": chain.operator, "gas": GAS}), timeout=60)
    assert rc["status"] == 1, "settleMany reverted"
    assert chain.cursor() == (index, head)
    return separate, int(rc["gasUsed"])


def same_chain_batch(chain: VaultChain, n: int) -> int:
    legs: list[Leg] = []
    orders: list[SignedOrder] = []
    links: dict[int, int] = {}
    for k in range(n // 2):
        trader = chain.traders[k % len(chain.traders)]
        signed, h = chain.order(trader, "USDC", 100 * E6 + k, min_buy=10**16)
        legs.append(pull_leg(signed.order, chain.index["USDC"], h))
        orders.append(signed)
    for k in range(n // 2):
        signed = orders[k]
        h = signed.order.digest(vault_domain(chain.chain_id, chain.vault.address))
        links[k] = n // 2 + k
        legs.append(payout_leg(signed.order, chain.index["WETH"], 10**16 + k, h))
    return _settle(chain, chain.batch(legs), orders, links=links)


def maker_batch(chain: VaultChain, n: int, kind: LegKind) -> int:
    legs = [
        Leg(
            kind,
            int(chain.makers[k % len(chain.makers)].address, 16),
            chain.index["DAI"],
            10**18 + k,
            0,
            k + 1,
        )
        for k in range(n)
    ]
    return _settle(chain, chain.batch(legs), [])


def direct_pool_swap(chain: VaultChain) -> int:
    """A trader's own ConstantProductPool.swap (WETH/USDC), steady state."""
    pool_info = next(
        p
        for p in chain.info.pools
        if p.kind == "constant_product" and {p.symbol0, p.symbol1} == {"WETH", "USDC"}
    )
    pool = chain.w3.eth.contract(
        address=Web3.to_checksum_address(pool_info.address),
        abi=load_artifact("ConstantProductPool")["abi"],
    )
    trader = chain.traders[0].address
    usdc = chain.tokens["USDC"]
    chain.transact(usdc.functions.approve(pool.address, 2**256 - 1), trader)
    chain.transact(pool.functions.swap(usdc.address, 100 * E6, 0, trader), trader)  # warm-up
    rc = chain.transact(pool.functions.swap(usdc.address, 100 * E6, 0, trader), trader)
    return int(rc["gasUsed"])


def main() -> None:
    t0 = time.perf_counter()
    with vault_chain(capacities=(16, 32, 64), reclaim_timeout=3600) as chain:
        n_traders = len(chain.traders)
        # First orders: every trader's nonce word is new (zero -> non-zero).
        first = pull_batch(chain, n_traders)
        warm = pull_batch(chain, n_traders)
        first_extra = (first - warm) // n_traders
        out: dict[str, Any] = {"batches": {}}
        gas: dict[tuple[str, int], int] = {}
        for n in (8, 32, 64):
            gas["pull", n] = pull_batch(chain, n)
            gas["payout", n] = payout_batch(chain, n)
            gas["same", n] = same_chain_batch(chain, n)
            cross = (gas["pull", n] + gas["payout", n]) / n
            out["batches"][str(n)] = {
                "capacity": CAPACITY[n],
                "pullBatchGas": gas["pull", n],
                "payoutBatchGas": gas["payout", n],
                "crossChainPerSwap": round(cross),
                "sameChainBatchGas": gas["same", n],
                "sameChainPerSwap": round(gas["same", n] / (n / 2)),
            }
        for kind in (LegKind.MAKER_IN, LegKind.MAKER_OUT):
            for n in (8, 32):
                gas[kind.name, n] = maker_batch(chain, n, kind)
        marginal = {
            k: round((gas[k, 32] - gas[k, 8]) / 24)
            for k in ("pull", "payout", "MAKER_IN", "MAKER_OUT")
        }
        fixed = round(gas["payout", 8] - 8 * marginal["payout"])
        out["perLeg"] = {
            "PULL": marginal["pull"],
            "PAYOUT": marginal["payout"],
            "MAKER_IN": marginal["MAKER_IN"],
            "MAKER_OUT": marginal["MAKER_OUT"],
            "samechainPullPlusLinkedPayout": round((gas["same", 32] - gas["same", 8]) / 12),
        }
        out["fixedPerBatch"] = fixed
        out["firstOrderExtra"] = first_extra
        out["directPoolSwap"] = {"ConstantProductPool": direct_pool_swap(chain)}
        many: dict[str, Any] = {}
        for k in (2, 4):
            sep_pull, one_pull = many_vs_separate(chain, _pulls, k)
            sep_pay, one_pay = many_vs_separate(chain, _payouts, k)
            swaps = 32 * k
            many[f"k{k}"] = {
                "batches": k,
                "batchSize": 32,
                "pullGas": {"separate": sep_pull, "oneTransaction": one_pull},
                "payoutGas": {"separate": sep_pay, "oneTransaction": one_pay},
                "crossChainPerSwap": {
                    "separate": round((sep_pull + sep_pay) / swaps),
                    "oneTransaction": round((one_pull + one_pay) / swaps),
                },
                # What each batch after the first saves (mean of the pull and payout runs).
                "savedPerExtraBatch": round((sep_pull - one_pull + sep_pay - one_pay) / 2 / (k - 1)),
            }
        out["settleMany"] = many
        at32 = out["batches"]["32"]["crossChainPerSwap"]
        out["goal"] = {"crossChainPerSwapAtBatch32": at32, "limit": GOAL, "met": at32 <= GOAL}
        out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
