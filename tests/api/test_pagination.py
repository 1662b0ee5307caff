from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.pagination import PageParams
from tests.helpers import client_for


def test_slice_reports_the_total_and_the_window() -> None:
    page = PageParams(limit=2, offset=3).slice(list(range(6)))
    assert page.model_dump() == {"items": [3, 4], "total": 6, "limit": 2, "offset": 3}


def test_offset_past_the_end_gives_an_empty_page() -> None:
    page = PageParams(limit=10, offset=50).slice(["a"])
    assert page.items == [] and page.total == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": 501}, "limit: Input should be less than or equal to 500"),
        ({"offset": -1}, "offset: Input should be greater than or equal to 0"),
    ],
)
def test_list_routes_check_their_window(
    ingested_dir: Path, params: dict[str, int], message: str
) -> None:
    with client_for(ingested_dir) as client:
        response = client.get("/v1/documents", params=params)
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


@pytest.mark.integration
def test_documents_page_through_the_catalog(ingested_dir: Path) -> None:
    with client_for(ingested_dir) as client:
        first = client.get("/v1/documents", params={"limit": 1}).json()
        second = client.get("/v1/documents", params={"limit": 1, "offset": 1}).json()
    assert first["total"] == second["total"] == 2
    assert len(first["items"]) == len(second["items"]) == 1
    assert first["items"][0]["document_id"] != second["items"][0]["document_id"]


def test_openapi_documents_the_page_shape(tmp_path: Path) -> None:
    with TestClient(client_for(tmp_path).app) as client:
        schema = client.get("/openapi.json").json()
    listed = schema["paths"]["/v1/documents"]["get"]["responses"]["200"]["content"]
    ref = listed["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {
        "items",
        "total",
        "limit",
        "offset",
    }
