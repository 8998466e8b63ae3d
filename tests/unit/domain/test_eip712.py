from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.eip712 import (
    Domain,
    SignatureError,
    StructType,
    address_of_key,
    recover,
    sign_digest,
    typed_digest,
)

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
T = StructType(
    "Thing",
    (
        ("address", "who"),
        ("uint256", "amount"),
        ("bytes32", "id"),
        ("uint64", "deadline"),
        ("string", "memo"),
        ("bool", "ok"),
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    who=st.binary(min_size=20, max_size=20),
    amount=st.integers(0, 2**256 - 1),
    ident=st.binary(min_size=32, max_size=32),
    deadline=st.integers(0, 2**64 - 1),
    memo=st.text(max_size=20),
    ok=st.booleans(),
    chain_id=st.integers(1, 2**32),
)
def test_digest_equals_eth_account(
    who: bytes, amount: int, ident: bytes, deadline: int, memo: str, ok: bool, chain_id: int
) -> None:
    domain = Domain(chain_id=chain_id, verifying_contract="0x" + "ab" * 20)
    values = {
        "who": "0x" + who.hex(),
        "amount": amount,
        "id": "0x" + ident.hex(),
        "deadline": deadline,
        "memo": memo,
        "ok": ok,
    }
    ours = typed_digest(domain, T, values)
    msg = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Thing": T.to_eip712_types(),
            },
            "primaryType": "Thing",
            "domain": domain.to_json(),
            "message": {**values, "id": ident},
        }
    )
    signed = Account.sign_message(msg, KEY)
    sig = sign_digest(KEY, ours)
    assert recover(ours, sig) == Account.from_key(KEY).address == address_of_key(KEY)
    assert recover(ours, signed.signature) == Account.from_key(KEY).address


def test_malformed_and_high_s_signatures_are_refused() -> None:
    d = b"\x11" * 32
    sig = bytes.fromhex(sign_digest(KEY, d)[2:])
    for bad in ("0x1234", "zz" * 65, sig[:64] + bytes([5])):
        try:
            recover(d, bad)
        except SignatureError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (n - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    try:
        recover(d, flipped)
    except SignatureError:
        return
    raise AssertionError("high-s signature accepted")


def test_other_digest_recovers_other_address() -> None:
    sig = sign_digest(KEY, b"\x01" * 32)
    assert recover(b"\x02" * 32, sig) != address_of_key(KEY)
