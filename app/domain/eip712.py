"""EIP-712 typed data for Crossbook's flat structs (quotes, orders, receipts).

Only what the protocol needs: structs whose fields are `address`, `uintN`, `bytes32`,
`bool` or `string`. Hashing is a few keccaks over fixed 32-byte words, so it costs
microseconds where a generic encoder costs a millisecond; a unit test checks every
digest against eth-account's reference encoder. Signing and recovery use libsecp256k1
(coincurve). Domain: name "Crossbook", version "1", the chain id and the verifying
contract of the chain the signature is used on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak as _keccak

__all__ = [
    "Domain",
    "SignatureError",
    "StructType",
    "address_of_key",
    "recover",
    "sign_digest",
    "typed_digest",
]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def keccak(data: bytes) -> bytes:
    """Keccak-256. pycryptodome directly: eth-hash's wrapper checks its argument through
    two decorators on every call, which costs more than hashing 200 bytes."""
    return bytes(_keccak.new(digest_bits=256, data=data).digest())


class SignatureError(ValueError):
    """A signature that is malformed or does not recover to a valid key."""


# No slots: cached_property needs an instance dict (these are few, long-lived values).
@dataclass(frozen=True)
class StructType:
    name: str
    fields: tuple[tuple[str, str], ...]  # (type, name)

    @cached_property
    def encode_type(self) -> str:
        return f"{self.name}(" + ",".join(f"{t} {n}" for t, n in self.fields) + ")"

    @cached_property
    def type_hash(self) -> bytes:
        return keccak(self.encode_type.encode())

    @cached_property
    def _encoders(self) -> tuple[tuple[str, Callable[[Any], bytes]], ...]:
        return tuple((name, _encoder(typ)) for typ, name in self.fields)

    def hash_struct(self, values: dict[str, Any]) -> bytes:
        words = [self.type_hash]
        for name, encode in self._encoders:
            words.append(encode(values[name]))
        return keccak(b"".join(words))

    def to_eip712_types(self) -> list[dict[str, str]]:
        return [{"name": n, "type": t} for t, n in self.fields]


def _encoder(typ: str) -> Callable[[Any], bytes]:
    """The 32-byte word encoder of a field type, chosen once per struct type (a quote's
    digest encodes twelve words per request)."""
    if typ == "address":

        def address(v: Any) -> bytes:
            raw = bytes.fromhex(v[2:]) if isinstance(v, str) else bytes(v)
            if len(raw) != 20:
                raise ValueError(f"bad address {v!r}")
            return raw.rjust(32, b"\0")

        return address
    if typ.startswith("uint"):
        bound = 1 << int(typ[4:] or 256)

        def uint(v: Any) -> bytes:
            n = int(v)
            if n < 0 or n >= bound:
                raise ValueError(f"{typ} out of range: {v}")
            return n.to_bytes(32, "big")

        return uint
    if typ == "bytes32":

        def bytes32(v: Any) -> bytes:
            raw = bytes.fromhex(v[2:]) if isinstance(v, str) else bytes(v)
            if len(raw) != 32:
                raise ValueError(f"bad bytes32 {v!r}")
            return raw

        return bytes32
    if typ == "bool":
        return lambda v: (1 if v else 0).to_bytes(32, "big")
    if typ == "string":
        return lambda v: keccak(str(v).encode())
    raise ValueError(f"unsupported EIP-712 field type {typ}")


DOMAIN_TYPE = StructType(
    "EIP712Domain",
    (
        ("string", "name"),
        ("string", "version"),
        ("uint256", "chainId"),
        ("address", "verifyingContract"),
    ),
)


@dataclass(frozen=True)
class Domain:
    chain_id: int
    verifying_contract: str
    name: str = "Crossbook"
    version: str = "1"

    @cached_property
    def separator(self) -> bytes:
        return DOMAIN_TYPE.hash_struct(
            {
                "name": self.name,
                "version": self.version,
                "chainId": self.chain_id,
                "verifyingContract": self.verifying_contract,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def typed_digest(domain: Domain, struct: StructType, values: dict[str, Any]) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + struct.hash_struct(values))


def sign_digest(private_key: str | bytes, digest: bytes) -> str:
    """65-byte r‖s‖v signature (v = 27/28), hex with 0x."""
    sig = _private_key(private_key).sign_recoverable(digest, hasher=None)
    return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()


@lru_cache(maxsize=64)
def _private_key(private_key: str | bytes) -> PrivateKey:
    # Building a PrivateKey derives its public keys: a third of a signature's cost, and
    # the operator signs every quote and receipt with the same key.
    return PrivateKey(bytes.fromhex(private_key[2:]) if isinstance(private_key, str) else private_key)


def recover(digest: bytes, signature: str | bytes) -> str:
    """The checksummed address that signed `digest`; SignatureError when malformed."""
    try:
        raw = (
            bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
            if isinstance(signature, str)
            else signature
        )
    except ValueError:
        raise SignatureError("signature is not hex") from None
    if len(raw) != 65:
        raise SignatureError("signature must be 65 bytes")
    v = raw[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise SignatureError("bad recovery id")
    s = int.from_bytes(raw[32:64], "big")
    if s == 0 or s > SECP256K1_N // 2:  # EIP-2: reject malleable high-s signatures
        raise SignatureError("non-canonical signature (high s)")
    try:
        pub = PublicKey.from_signature_and_message(raw[:64] + bytes([v]), digest, hasher=None)
    except Exception:
        raise SignatureError("signature does not recover to a key") from None
    return _checksum(keccak(pub.format(compressed=False)[1:])[-20:])


def address_of_key(private_key: str) -> str:
    pub = PrivateKey(bytes.fromhex(private_key[2:])).public_key
    return _checksum(keccak(pub.format(compressed=False)[1:])[-20:])


@lru_cache(maxsize=4096)
def _checksum(addr20: bytes) -> str:
    hexaddr = addr20.hex()
    h = keccak(hexaddr.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(hexaddr))
