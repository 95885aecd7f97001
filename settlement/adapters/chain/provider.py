"""Reaching a node: `connect` gives a Chain over JSON-RPC (with retries of idempotent calls)
or over the embedded eth-tester (py-evm) chain."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import requests
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from settlement.adapters.chain.contracts import load_artifact
from settlement.adapters.chain.tx import Chain
from settlement.config import Settings
from settlement.errors import ArtifactMissing, RedactUrls

# web3's loggers that print the provider's URI (with its password and API key) at DEBUG.
_URL_LOGGERS = (
    "web3.providers.HTTPProvider",
    "web3._utils.http_session_manager.HTTPSessionManager",
    "web3.manager.RequestManager",
)


def connect(
    settings: Settings | None = None, *, rpc_url: str | None = None, **overrides: Any
) -> Chain:
    """A Chain from Settings: W2E_RPC_URL, or the embedded eth-tester (py-evm) chain when unset.

    `rpc_url` and keyword overrides (poll_interval, confirmations, ...) win over Settings.
    """
    settings = settings or Settings()
    url = rpc_url if rpc_url is not None else settings.rpc_url
    options: dict[str, Any] = {
        "poll_interval": settings.chain_poll_interval,
        "confirmations": settings.chain_confirmations,
        "tx_timeout": settings.chain_tx_timeout,
        "bump_blocks": settings.fee_bump_blocks,
        "bump_percent": settings.fee_bump_percent,
        "max_fee_per_gas": settings.max_fee_per_gas,
        "log_chunk": settings.log_chunk_blocks,
    }
    options.update(overrides)
    tester = None
    _redact_web3_logs()
    if url:
        provider: Any = HTTPProvider(
            url,
            request_kwargs={"timeout": 30},
            # A few quick retries ride out a node restart; an outage fails fast with advice.
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(requests.ConnectionError, requests.Timeout),
                retries=3,
                backoff_factor=0.1,
                method_allowlist=_RETRY_METHODS,
            ),
        )
    else:
        from eth_tester import EthereumTester, PyEVMBackend

        tester = EthereumTester(PyEVMBackend())
        tester.backend.chain.gas_estimator = _estimate_once
        provider = EthereumTesterProvider(tester)
    w3 = Web3(provider)
    # ENS lookups and request validation cost a round trip or a formatter pass per call and
    # are useless against our own contracts; gas is estimated explicitly in Chain.build.
    for name in ("ens_name_to_address", "validation", "gas_estimate", "gas_price_strategy"):
        with contextlib.suppress(ValueError):
            w3.middleware_onion.remove(name)
    chain = Chain(w3, url=url, tester=tester, **options)
    for name in ("W2EToken", "RewardDistributor"):
        with contextlib.suppress(ArtifactMissing):
            chain.register_errors(load_artifact(name).abi)
    return chain


def _redact_web3_logs() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrls) for f in logger.filters):
            logger.addFilter(RedactUrls())


def _estimate_once(state: Any, transaction: Any) -> int:
    """Gas for the embedded chain from one run at the block gas limit (py-evm's default
    bisects with a dozen runs): intrinsic gas plus execution gas before refunds. Chain.build's
    margin covers the 63/64 rule of nested calls."""
    from eth.vm.spoof import SpoofTransaction

    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(
            SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
        )
        if computation.is_error:
            raise computation.error
        return transaction.intrinsic_gas + computation.get_gas_used()
    finally:
        state.revert(snapshot)


# Reads only, and sends of signed bytes (idempotent by hash): safe to retry.
_RETRY_METHODS = (
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_call",
    "eth_estimateGas",
    "eth_getLogs",
    "eth_maxPriorityFeePerGas",
    "eth_getBalance",
    "eth_getCode",
    "eth_sendRawTransaction",
)
