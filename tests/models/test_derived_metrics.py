"""Derived metrics: a GPU's temperature above its node's other GPUs, computed on site by the one encoding funnel."""

from __future__ import annotations

import re

import numpy as np
import pytest

from infrabrain.models.derived_metrics import GPU_TEMP_ABOVE_SIBLINGS, siblings_above, with_derived_metrics
from infrabrain.models.explain import describe_change
from infrabrain.models.features import FeatureSet
from infrabrain.models.snapshots import graph_from_topology, snapshot_from_window

NAME, SOURCE = GPU_TEMP_ABOVE_SIBLINGS.name, GPU_TEMP_ABOVE_SIBLINGS.source


def test_siblings_above_compares_each_gpu_with_the_mean_of_its_nodes_other_gpus():
    # node 0: three GPUs; node 1: a lone GPU; one GPU without a node
    parent = np.array([0, 0, 0, 1, -1])
    v = np.array([[70.0, 72.0, 80.0, 60.0, 50.0],
                  [70.0, np.nan, 80.0, 60.0, 50.0],
                  [70.0, np.nan, np.nan, 60.0, 50.0]])
    out = siblings_above(v, parent)
    np.testing.assert_allclose(out[0, :3], [70 - 76, 72 - 75, 80 - 71])
    np.testing.assert_allclose(out[1, [0, 2]], [70 - 80, 80 - 70])  # a missing sibling is left out, not zero
    assert np.isnan(out[1, 1]) and np.isnan(out[2, :3]).all()  # missing itself / no observed sibling left
    assert np.isnan(out[:, 3]).all() and np.isnan(out[:, 4]).all()  # a lone GPU, a GPU with no node
    with pytest.raises(ValueError, match=r"parent has shape \(4,\), expected \(5,\)"):
        siblings_above(v, parent[:4])


def test_the_feature_set_names_the_derived_metric_and_the_daemon_collects_only_its_source(small_runs, small_splits):
    run, fs = small_runs[0], small_splits.feature_set
    assert fs.metrics_of("gpu")[-1] == NAME and fs.metrics_of("gpu")[:-1] == tuple(run.metric_names["gpu"])
    assert NAME not in fs.raw_metrics_of("gpu") and SOURCE in fs.raw_metrics_of("gpu")
    assert fs.raw_metrics_of("node") == fs.metrics_of("node")
    only = FeatureSet(metrics={"gpu": (NAME,)})  # a model reading only the derived metric still needs its source
    assert only.raw_metrics_of("gpu") == (SOURCE,)
    # telemetry without the source cannot give it: nothing is derived from another column
    no_temp = {k: [m for m in v if m != SOURCE] for k, v in run.metric_names.items()}
    assert NAME not in FeatureSet.from_run(type("R", (), {"metric_names": no_temp})()).metrics_of("gpu")


def test_the_encoded_derived_slot_is_the_normalised_temperature_gap(small_runs, small_splits):
    sp = small_splits
    site, run = sp.train_sites[0], small_runs[0]
    graph = graph_from_topology(run.topology)
    gn = graph.gpu_node()
    temp = np.asarray(run.metrics["gpu"])[:, :, run.metric_names["gpu"].index(SOURCE)]
    g = int(np.flatnonzero(gn == gn[0])[1])  # a GPU with siblings
    sib = [int(i) for i in np.flatnonzero(gn == gn[g]) if i != g]
    t = int(np.flatnonzero(np.isfinite(temp[:, [g, *sib]]).all(axis=1))[-1])  # the node up, every GPU read
    gap = temp[t, g] - np.nanmean(temp[t, sib])
    slot = sp.feature_set.metrics_of("gpu").index(NAME)
    j = sp.normalizer.center["gpu"][slot], sp.normalizer.scale["gpu"][slot]
    comp = int(graph.kind_index["gpu"][g])
    assert site.obs[t, comp, slot]
    np.testing.assert_allclose(site.vals0[t, comp, slot], (gap - j[0]) / j[1], rtol=1e-5, atol=1e-5)
    assert np.nanstd(site.values_nan(0, len(site.timestamps))[:, graph.kind_index["gpu"], slot]) > 0.1


def test_a_window_without_the_source_column_names_both(small_runs, small_splits):
    run = small_runs[0]
    names = {k: [m for m in v if m != SOURCE] for k, v in run.metric_names.items()}
    col = run.metric_names["gpu"].index(SOURCE)
    metrics = {k: np.asarray(v)[:70] for k, v in run.metrics.items()}
    metrics["gpu"] = np.delete(metrics["gpu"], col, axis=2)
    with pytest.raises(ValueError, match=rf"missing metric column.*{NAME}.*derived on site: {NAME} from {SOURCE}"):
        snapshot_from_window(run.topology, metrics, names, small_splits.feature_set, small_splits.normalizer, 60,
                             pool=5)


def test_with_derived_metrics_leaves_its_input_alone_and_checks_the_gpu_count(small_runs, small_splits):
    run, fs = small_runs[0], small_splits.feature_set
    gn = graph_from_topology(run.topology).gpu_node()
    before = np.asarray(run.metrics["gpu"]).copy()
    m, names = with_derived_metrics(run.metrics, run.metric_names, fs.metrics, gn)
    assert names["gpu"][-1] == NAME and m["gpu"].shape[2] == before.shape[2] + 1
    assert list(run.metric_names["gpu"]) == names["gpu"][:-1]  # the caller's names are not extended
    np.testing.assert_array_equal(np.asarray(run.metrics["gpu"]), before)
    m2, names2 = with_derived_metrics(run.metrics, run.metric_names, {"gpu": ()}, gn)  # not wanted: not computed
    assert names2["gpu"] == list(run.metric_names["gpu"]) and m2["gpu"] is run.metrics["gpu"]
    with pytest.raises(ValueError, match=rf"metrics\['gpu'\] has shape .*expected \[T, {len(gn)}, F\]"):
        with_derived_metrics({"gpu": before[:, 1:]}, run.metric_names, fs.metrics, gn)


def test_an_explanation_quotes_the_gap_as_a_level():
    rising = np.r_[np.full(20, 2.0), np.linspace(2.0, 8.2, 30), np.full(10, 8.2)]
    text = describe_change(rising, NAME, 60)
    assert re.fullmatch(r"temperature 8\.2 C above its node's other GPUs \(\+6\.2 C over 3\d min\)", text), text
    assert describe_change(np.full(60, 4.0), NAME, 60) == "temperature 4.0 C above its node's other GPUs"
    # a GPU cooler than its siblings is quoted as below them (follow-up 39: "-4.7 C above" had been printed)
    cooler = describe_change(np.linspace(-5.9, -4.7, 60), NAME, 60)
    assert re.fullmatch(r"temperature 4\.7 C below its node's other GPUs \(\+1\.2 C over \d+ min\)", cooler), cooler
    # a gap that moved by less than a sensor's jitter is its level alone (STEADY_C)
    assert describe_change(np.linspace(-4.9, -4.7, 60), NAME, 60) == "temperature 4.7 C below its node's other GPUs"


def test_gpu_node_maps_every_gpu_to_its_node(small_runs):
    graph = graph_from_topology(small_runs[0].topology)
    gn = graph.gpu_node()
    gpu_ids = graph.component_ids[graph.kind_index["gpu"]]
    node_ids = graph.component_ids[graph.node_global]
    assert len(gn) == len(gpu_ids) and (gn >= 0).all()
    # the simulator names a GPU after its node ("r00-n01-g3" sits in "r00-n01")
    assert [node_ids[n] for n in gn] == [g.rsplit("-g", 1)[0] for g in gpu_ids]


def test_the_federated_task_reads_no_derived_metric(small_runs):
    from infrabrain.client.predictor_task import feature_set

    assert NAME not in feature_set().metrics_of("gpu")
    plain = FeatureSet.from_run(small_runs[0], derived=False)
    assert plain.metrics_of("gpu") == tuple(small_runs[0].metric_names["gpu"])
