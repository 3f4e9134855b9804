from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return DATA / "routing_sample.jsonl"


@pytest.fixture(scope="session")
def matrix_path() -> Path:
    return DATA / "alpacaeval_matrix_sample.jsonl"


@pytest.fixture(scope="session")
def sample_rows(sample_path):
    from tokenomy.routing.quality.data import read_rows

    return read_rows(sample_path)
