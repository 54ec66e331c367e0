"""Providers: one module each (a :class:`Provider` and its sans-IO :class:`ResponseDecoder`).

Each public module holds the provider and re-exports its decoder, which lives in a private
module beside it with the wire format (``_openai_decoder``, ``_openai_wire``, ...).
Providers are imported on first use, so ``import aiollm`` stays cheap.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigurationError
from ._base import Call, HTTPRequest, Prepared, Provider, ResponseDecoder

__all__ = [
    "PROVIDERS",
    "Call",
    "HTTPRequest",
    "Prepared",
    "Provider",
    "ResponseDecoder",
    "load_provider",
    "split_model",
]

PROVIDERS: dict[str, str] = {
    "dashscope": "aiollm.providers.dashscope:DashScopeProvider",
    "qianfan": "aiollm.providers.qianfan:QianfanProvider",
    "gateway": "aiollm.providers.gateway:GatewayProvider",
    "openai": "aiollm.providers.openai:OpenAIProvider",
}


def split_model(model: str) -> tuple[str, str]:
    """``"provider/model"`` → ``(provider, model)``, split at the first ``/`` only.

    Raises :class:`~aiollm.ConfigurationError` for a string without both parts or with an
    unknown provider. Public as ``aiollm.split_model``.
    """
    provider, sep, name = model.partition("/")
    if not sep or not provider or not name:
        raise ConfigurationError(
            f"model {model!r} must be '<provider>/<model>', e.g. 'qianfan/llama_2_7b'; "
            f"providers: {', '.join(PROVIDERS)}"
        )
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {provider!r} in {model!r}; providers: {', '.join(PROVIDERS)}"
        )
    return provider, name


def load_provider(name: str) -> type[Provider]:
    """The provider class registered under ``name``."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown provider {name!r}; providers: {', '.join(PROVIDERS)}"
        ) from None
    module_name, _, attr = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    return cls
