"""The Grafana dashboard (deploy/grafana/streamrnn.json) against the daemon's metrics.

Every metric a PromQL expression names must be a series the daemon really exports (the
family is in :data:`streamrnn.metrics.METRIC_NAMES` and the suffix fits its type: ``_total``
only on counters, ``_bucket`` only on histograms, none on gauges), and every family must be
on some panel. The exported series and their types come from the registry itself (its samples,
with every labelled metric given a child), so a renamed or retyped metric in
streamrnn/metrics.py, or a series it stops exporting (``_created``), fails here until the
dashboard follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from streamrnn.metrics import METRIC_NAMES, DaemonMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamrnn.json"

#: A metric identifier of ours (PromQL names are [a-zA-Z_:][a-zA-Z0-9_:]*).
_METRIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])streamrnn_[A-Za-z0-9_:]*")
#: Double-, single- or back-quoted PromQL strings (label values, regexes).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')

_DATASOURCE_REFS = ("${datasource}", "$datasource")


def _family_types() -> dict[str, str]:
    """Family name -> type, from a fresh registry (the same one METRIC_NAMES comes from)."""
    return {metric.name: metric.type for metric in DaemonMetrics().registry.collect()}


def _exported_series() -> dict[str, tuple[str, str]]:
    """Every series name /metrics can show -> (family, type): the registry's own samples,
    once every labelled metric has a child (a labelled family has no sample before)."""
    metrics = DaemonMetrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*("x" for _ in metric._labelnames))
    index: dict[str, tuple[str, str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            previous = index.setdefault(sample.name, (family.name, family.type))
            assert previous[0] == family.name, f"{sample.name}: {previous[0]}, {family.name}"
    return index


def metric_tokens(expr: str) -> list[str]:
    """The ``streamrnn_*`` identifiers of a PromQL expression, outside quoted strings."""
    return _METRIC_TOKEN.findall(_STRING.sub('""', expr))


def resolve(token: str, index: dict[str, tuple[str, str]]) -> str:
    """The family ``token`` belongs to; AssertionError naming the problem if none."""
    if token in index:
        return index[token][0]
    # Say what is wrong: a known family with a suffix its type does not export, or no family.
    for family, kind in sorted(set(index.values()), key=lambda v: -len(v[0])):
        if token.startswith(family):
            allowed = ", ".join(sorted(name for name, v in index.items() if v[0] == family))
            raise AssertionError(
                f"{token!r}: {family} is a {kind}; it is exported as {allowed} only"
            )
    raise AssertionError(f"{token!r} is not a metric of streamrnn.metrics.METRIC_NAMES")


def _load() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        yield panel
        stack.extend(panel.get("panels", []))


def _variable_query(variable: dict[str, Any]) -> str | None:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return query if isinstance(query, str) else None


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query template variable."""
    found: list[tuple[str, str]] = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            assert isinstance(expr, str) and expr.strip(), (
                f"panel {panel.get('title')!r} target {target.get('refId')}: no expr"
            )
            found.append((f"panel {panel.get('title')!r} {target.get('refId')}", expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = _variable_query(variable)
            assert query, f"variable {variable.get('name')!r} has no query"
            found.append((f"variable {variable['name']!r}", query))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def index() -> dict[str, tuple[str, str]]:
    return _exported_series()


def test_metric_names_match_the_registry() -> None:
    assert set(_family_types()) == set(METRIC_NAMES)


def test_exported_series_fit_their_types(index: dict[str, tuple[str, str]]) -> None:
    """Every family has series; counters only as _total (and _created), histograms only as
    _bucket/_count/_sum (and _created), gauges only under their own name."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    assert {family for family, _ in index.values()} == set(METRIC_NAMES)
    for name, (family, kind) in index.items():
        assert kind in suffixes, f"{family}: a {kind}; teach this test its series"
        assert name in [family + suffix for suffix in suffixes[kind]], (name, kind)
    for family, kind in _family_types().items():
        required = {"counter": "_total", "histogram": "_bucket", "gauge": ""}[kind]
        assert family + required in index, family


def test_dashboard_basics(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["refresh"] == "30s"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query", name
        assert variables[name]["datasource"]["uid"] in _DATASOURCE_REFS, name


def test_every_expression_names_exported_series(
    dashboard: dict[str, Any], index: dict[str, tuple[str, str]]
) -> None:
    expressions = _expressions(dashboard)
    assert len(expressions) >= 20
    problems: list[str] = []
    for where, expr in expressions:
        # A name hidden in a string ({__name__="..."}) would escape this check.
        if "__name__" in expr:
            problems.append(f"{where}: uses __name__; name the metric directly")
        tokens = metric_tokens(expr)
        if not tokens:
            problems.append(f"{where}: names no streamrnn metric: {expr}")
        for token in tokens:
            try:
                resolve(token, index)
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")
        if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
            problems.append(f"{where}: unbalanced brackets: {expr}")
    assert not problems, "\n".join(problems)


def test_every_metric_family_is_on_a_panel(
    dashboard: dict[str, Any], index: dict[str, tuple[str, str]]
) -> None:
    used = {
        resolve(token, index)
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        for token in metric_tokens(target["expr"])
    }
    assert sorted(METRIC_NAMES - used) == []


def test_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(expr for _, expr in _expressions(dashboard))
    for needle in (
        "rate(streamrnn_points_total",
        "rate(streamrnn_messages_total",
        "histogram_quantile(0.5, sum by (le, instance) (rate(streamrnn_batch_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, instance) (rate(streamrnn_batch_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, instance) (rate(streamrnn_checkpoint_seconds_bucket",
        "sum by (severity)",
        "sum by (reason)",
        "by (topic, partition)",
        "time() - streamrnn_last_progress_timestamp_seconds",
    ):
        assert needle in exprs, needle
    tables = [p for p in _panels(dashboard) if p["type"] == "table"]
    assert any("streamrnn_model_info" in t["expr"] for p in tables for t in p["targets"])


def test_panel_ids_unique_and_layout_fits(dashboard: dict[str, Any]) -> None:
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


def test_datasources_use_the_template_variable(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in _DATASOURCE_REFS, panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            uid = target.get("datasource", {}).get("uid", "${datasource}")
            assert uid in _DATASOURCE_REFS, panel["title"]
    # Panels are filtered by the job/instance variables.
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rate(streamrnn_point_total[5m])", "not a metric"),  # typo
        ("rate(streamrnn_messages[5m])", "is a counter"),  # counter without _total
        ("rate(streamrnn_batch_seconds_total[5m])", "is a histogram"),  # wrong suffix
        ("streamrnn_live_series_total", "is a gauge"),
        ("streamrnn_ready_bucket", "is a gauge"),
    ],
)
def test_checker_rejects_bad_names(
    index: dict[str, tuple[str, str]], expr: str, message: str
) -> None:
    (token,) = metric_tokens(expr)
    with pytest.raises(AssertionError, match=message):
        resolve(token, index)


def test_checker_reads_names_not_strings(index: dict[str, tuple[str, str]]) -> None:
    expr = (
        'sum by (le) (rate(streamrnn_batch_seconds_bucket{topic="streamrnn_x"}[5m])) '
        '/ on() streamrnn_ready{job=~"$job"}'
    )
    assert metric_tokens(expr) == ["streamrnn_batch_seconds_bucket", "streamrnn_ready"]
    assert [resolve(t, index) for t in metric_tokens(expr)] == [
        "streamrnn_batch_seconds",
        "streamrnn_ready",
    ]
