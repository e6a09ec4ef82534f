"""Shared fixtures: the offline models, and one real vLLM CPU engine per test session."""
import asyncio
import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_mistral():
    from pipeline.models import resolve_model

    return resolve_model("builtin:tiny-mistral")


@pytest.fixture(scope="session")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="session")
def tiny_engine(tiny_mistral, loop):
    """A real vLLM AsyncLLM on the CPU with the tiny Mistral (tekken tokenizer), started once."""
    from pipeline.engines import EngineOptions, VllmEngine

    async def make():
        return VllmEngine.create(tiny_mistral, EngineOptions(device="cpu", max_model_len=8192, cpu_kvcache_gib=1))

    engine = loop.run_until_complete(make())
    yield engine
    engine.close()
