import pytest


@pytest.fixture(scope="session")
def data_fixtures():
    """Builders of tiny dataset trees in the real layouts (tests/dataset_fixtures.py)."""
    import dataset_fixtures

    return dataset_fixtures
