"""The explorer's API fuzzed with Hypothesis against its own OpenAPI schema (served at ``/api/openapi.json``):
for every operation the schema lists, requests whose fields are drawn from the schema (patterns, enums,
bounds, the folder's real image names) or are any JSON at all. No request gets a 5xx; every refusal is a
JSON ``{"detail": "<one line>"}``."""
import re
from urllib.parse import quote

import pytest
import tifffile

from predict.demo.synthetic import generate_scene
from predict.encoders.registry import load_encoder

hypothesis = pytest.importorskip("hypothesis")
fastapi_testclient = pytest.importorskip("fastapi.testclient")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from predict.explorer import Explorer, ExplorerConfig  # noqa: E402
from predict.web.app import create_app  # noqa: E402

NAMES = ["scene.tif", "site..v2.tif"]
QUERY = "a green football field surrounded by a red track"
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=6)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for name, seed in zip(NAMES, (5, 6)):
        tifffile.imwrite(folder / name, generate_scene(seed, 500, 600).rgb, photometric="rgb")
    explorer = Explorer(load_encoder("demo", device="cpu"),
                        ExplorerConfig(images_dir=str(folder), outputs_dir=str(folder / "out"), preview_side=128))
    client = fastapi_testclient.TestClient(create_app(explorer))
    for name in NAMES:  # tiles ready, so that well-formed queries are answered at once
        while client.post("/api/encode", json={"image": name}).status_code == 202:
            pass
    first = client.post("/api/localise", json={"image": NAMES[0], "query": QUERY}).json()
    client.known = {"result": [first["result"]], "kind": ["probmap", "peaks"], "image": NAMES, "name": NAMES,
                    "query": [QUERY, "a zzzz lake", "zzzz"], "filename": [f"{first['result']}.png"]}
    return client


def resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].split("/")[-1]]
    return schema


def values(schema: dict, components: dict, known: list) -> st.SearchStrategy:
    """Values the schema allows (or nearly: bounds are probed a little beyond), the folder's known values, and
    any JSON at all."""
    schema = resolve(schema, components)
    options = [ANY_JSON]
    if known:
        options.append(st.sampled_from(known))
    for branch in schema.get("anyOf", []):
        options.append(values(branch, components, []))
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        pattern = schema.get("pattern")
        options.append(st.from_regex(pattern, fullmatch=True) if pattern else st.text(max_size=schema.get("maxLength", 40) + 2))
    elif kind in ("integer", "number"):
        low, high = schema.get("minimum", -10**6), schema.get("maximum", 10**6)
        options.append(st.integers(low - 2, high + 2) if kind == "integer" else st.floats(low - 1, high + 1))
    elif kind == "array":
        options.append(st.lists(values(schema.get("items", {}), components, []), max_size=8))
    return st.one_of(options)


def operations(client):
    schema = client.get("/api/openapi.json").json()
    components = schema.get("components", {}).get("schemas", {})
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation, components


def request_strategy(client, path, method, operation, components):
    parameters = {p["name"]: (p, values(p.get("schema", {}), components, client.known.get(p["name"], [])))
                  for p in operation.get("parameters", []) if p["in"] in ("query", "path")}
    body = None
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content:
        body_schema = resolve(content["schema"], components)
        fields = {name: values(field, components, client.known.get(name, []))
                  for name, field in body_schema["properties"].items()}
        required = {name: fields[name] for name in body_schema.get("required", [])}
        optional = {name: s for name, s in fields.items() if name not in required}
        body = st.one_of(st.fixed_dictionaries(required, optional=optional), ANY_JSON)
    return st.fixed_dictionaries({"parameters": st.fixed_dictionaries({n: s for n, (_, s) in parameters.items()}),
                                  "body": body if body is not None else st.none()})


def send(client, path, method, drawn, operation):
    url, query = path, {}
    for parameter in operation.get("parameters", []):
        value = drawn["parameters"].get(parameter["name"])
        text = value if isinstance(value, str) else str(value)
        if parameter["in"] == "path":
            url = url.replace("{" + parameter["name"] + "}", quote(text, safe="") or "x")
        else:
            query[parameter["name"]] = text
    if method in ("get", "delete"):
        return client.request(method.upper(), url, params=query)
    return client.request(method.upper(), url, params=query, json=drawn["body"])


@pytest.mark.parametrize("path, method", [("/api/localise", "post"), ("/api/encode", "post"), ("/api/image", "get"),
                                          ("/api/jobs/{job_id}", "get"), ("/api/jobs/{job_id}", "delete"),
                                          ("/api/regions", "get"), ("/api/download", "get"),
                                          ("/outputs/{filename}", "get"), ("/api/images", "get")])
def test_every_operation_of_the_schema_answers_without_a_server_error(client, path, method):
    found = {(p, m): (o, c) for p, m, o, c in operations(client)}
    assert (path, method) in found, sorted(found)
    operation, components = found[(path, method)]

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(request_strategy(client, path, method, operation, components))
    def check(drawn):
        response = send(client, path, method, drawn, operation)
        assert response.status_code < 500, (drawn, response.status_code, response.text[:300])
        if response.status_code >= 400:
            detail = response.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail

    check()


def test_the_schema_covers_every_api_route(client):
    routes = {(p, m) for p, m, _, _ in operations(client)}
    api = {(re.sub(r":\w+}", "}", route.path), method.lower()) for route in client.app.routes
           if re.match(r"^/(api|outputs)/", route.path)
           for method in getattr(route, "methods", ()) if method != "HEAD"}
    assert api <= routes | {("/api/openapi.json", "get")}
