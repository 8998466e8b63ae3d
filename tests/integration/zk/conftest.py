"""Fixtures for the prover's integration tests: small random circuits with keys (made
once per session), the compiled verifier, and a deploy helper on the `w3` chain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from web3 import Web3
from web3.contract import Contract

from scripts.solc import Artifact, compile_sources
from settlement.zk import groth16
from settlement.zk.testing import RandomCircuit, random_circuit
from settlement.zk.verifier_sol import generate_verifier


@dataclass(frozen=True, slots=True)
class Keyed:
    circuit: RandomCircuit
    pk: groth16.ProvingKey
    vk: groth16.VerifyingKey


def _keyed(n_constraints: int, n_public: int, seed: int) -> Keyed:
    rc = random_circuit(n_constraints, n_public, seed=seed, bit_fraction=0.3)
    pk, vk = groth16.setup(rc.r1cs)
    return Keyed(rc, pk, vk)


@pytest.fixture(scope="session")
def keyed() -> Keyed:
    return _keyed(60, 3, seed=11)


@pytest.fixture(scope="session")
def other_keyed() -> Keyed:
    """Same shape as `keyed`, different circuit and keys."""
    return _keyed(60, 3, seed=12)


@pytest.fixture(scope="session")
def keyed_factory() -> Callable[[int, int, int], Keyed]:
    return _keyed


@pytest.fixture(scope="session")
def verifier_artifact(keyed: Keyed) -> Artifact:
    return compile_sources({"V.sol": generate_verifier(keyed.vk)})["Groth16Verifier"]


def deploy(w3: Web3, artifact: Artifact) -> Contract:
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor().transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
