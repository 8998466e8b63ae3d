"""TestToken: ERC-20 transfers and allowances, minter-only minting, EIP-2612 permit."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3
from web3.contract import Contract

from tests.integration.contracts.chain import (
    MAX_UINT,
    accounts,
    deploy,
    error_selector,
    events,
    revert_data,
    send,
)

pytestmark = pytest.mark.integration

OWNER = Account.from_key(b"\x11" * 32)  # a key we hold, to sign permits off-chain


def _permit_signature(
    token: Contract, chain_id: int, spender: str, value: int, nonce: int, deadline: int
) -> tuple[int, bytes, bytes]:
    message = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": token.functions.name().call(),
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": token.address,
        },
        "message": {
            "owner": OWNER.address,
            "spender": spender,
            "value": value,
            "nonce": nonce,
            "deadline": deadline,
        },
    }
    signed = OWNER.sign_message(encode_typed_data(full_message=message))
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


def test_erc20_and_minting(w3: Web3) -> None:
    minter, alice, bob, carol = accounts(w3)[:4]
    token = deploy(w3, "TestToken", "USD Coin", "USDC", 6, minter)
    assert token.functions.name().call() == "USD Coin"
    assert token.functions.symbol().call() == "USDC"
    assert token.functions.decimals().call() == 6
    assert token.functions.minter().call() == minter

    receipt = send(token.functions.mint(alice, 5_000_000), minter)
    (ev,) = events(token, "Transfer", receipt)
    assert dict(ev["args"]) == {"from": "0x" + "00" * 20, "to": alice, "value": 5_000_000}
    assert revert_data(token.functions.mint(alice, 1), alice).startswith(
        error_selector("NotMinter(address)")
    )

    send(token.functions.transfer(bob, 1_000_000), alice)
    assert token.functions.balanceOf(bob).call() == 1_000_000
    assert revert_data(token.functions.transfer(bob, 10**12), alice).startswith(
        error_selector("InsufficientBalance(address,uint256,uint256)")
    )

    # A finite allowance is spent; the maximum one never is.
    send(token.functions.approve(carol, 300), alice)
    send(token.functions.transferFrom(alice, carol, 200), carol)
    assert token.functions.allowance(alice, carol).call() == 100
    assert revert_data(token.functions.transferFrom(alice, carol, 101), carol).startswith(
        error_selector("InsufficientAllowance(address,address,uint256,uint256)")
    )
    send(token.functions.approve(carol, MAX_UINT), alice)
    send(token.functions.transferFrom(alice, carol, 1000), carol)
    assert token.functions.allowance(alice, carol).call() == MAX_UINT
    assert token.functions.totalSupply().call() == 5_000_000

    receipt = send(token.functions.setMinter(bob), minter)
    assert dict(events(token, "MinterChanged", receipt)[0]["args"]) == {
        "previousMinter": minter,
        "newMinter": bob,
    }
    send(token.functions.mint(carol, 7), bob)
    assert revert_data(token.functions.mint(carol, 7), minter).startswith(
        error_selector("NotMinter(address)")
    )


def test_permit(w3: Web3) -> None:
    minter, spender = accounts(w3)[:2]
    token = deploy(w3, "TestToken", "Wrapped Ether", "WETH", 18, minter)
    send(token.functions.mint(OWNER.address, 10**18), minter)
    chain_id = w3.eth.chain_id
    deadline = w3.eth.get_block("latest")["timestamp"] + 3600

    domain = token.functions.eip712Domain().call()
    assert domain[1:5] == ["Wrapped Ether", "1", chain_id, token.address]

    v, r, s = _permit_signature(token, chain_id, spender, 10**17, 0, deadline)
    # Anyone may submit the signed permit; here the spender pays the gas.
    send(token.functions.permit(OWNER.address, spender, 10**17, deadline, v, r, s), spender)
    assert token.functions.allowance(OWNER.address, spender).call() == 10**17
    assert token.functions.nonces(OWNER.address).call() == 1
    # Replaying the same signature fails: the nonce moved on.
    assert revert_data(
        token.functions.permit(OWNER.address, spender, 10**17, deadline, v, r, s), spender
    ) == error_selector("InvalidSignature()")
    # Expired.
    v, r, s = _permit_signature(token, chain_id, spender, 1, 1, deadline - 7200)
    assert revert_data(
        token.functions.permit(OWNER.address, spender, 1, deadline - 7200, v, r, s), spender
    ).startswith(error_selector("PermitExpired(uint256)"))
    send(token.functions.transferFrom(OWNER.address, spender, 10**17), spender)
    assert token.functions.balanceOf(spender).call() == 10**17
