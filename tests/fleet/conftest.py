"""Fleet test fixtures: the real catalog and perf model, small slices of the shipped traces."""

from __future__ import annotations

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.fleet.workload import head, load_trace


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def make_sm(catalog):
    from tokenomy.perf import make_step_model

    def build(model="llama-3-8b", acc="h100", count=1, dtype="bf16"):
        return make_step_model(catalog.model(model), catalog.accelerator(acc), count=count, dtype=dtype)

    return build


@pytest.fixture(scope="session")
def h100_sm(make_sm):
    return make_sm()


@pytest.fixture(scope="session")
def conv():
    return load_trace("conv")


@pytest.fixture(scope="session")
def conv_head(conv):
    return head(conv, 1500)
