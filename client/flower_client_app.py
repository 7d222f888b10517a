"""The site's Flower ClientApp (Message API): train and evaluate locally, send back arrays and aggregate metrics.

Flower starts a fresh process for every message, so this module imports only Flower's message types and numpy;
torch, the predictor and the privacy ledger are imported inside the handlers, and all state that must survive a
round (privacy ledger, cached local data, the latest global model) lives in the site's state directory.

Each reply is checked against the same rules the coordinator applies (:mod:`infrabrain.coordinator.inspection`)
before it leaves: a reply that would carry anything but the model's arrays and allow-listed metrics is refused
here, at the site (fail closed).

With ``secagg=true`` the coordinator runs Flower's legacy SecAgg+ workflow; those messages (legacy ``fitins`` /
``evaluateins`` records and SecAgg+ stages) are handed to a legacy NumPyClient wrapped in ``secaggplus_mod``.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

_LEGACY_PREFIXES = ("fitins", "evaluateins", "getparametersins", "getpropertiesins", "secaggplus")

app = ClientApp()


def _is_legacy(msg: Message) -> bool:
    return any(str(k).startswith(_LEGACY_PREFIXES) for k in msg.content.keys())


def _round_config(msg: Message) -> dict[str, Any]:
    records = msg.content.config_records
    return dict(records["config"]) if "config" in records else {}


def _global_arrays(msg: Message) -> tuple[list[str], list[Any]]:
    record = msg.content.array_records.get("arrays")
    if record is None:
        raise ValueError("message carries no 'arrays' ArrayRecord (the global model)")
    keys = list(record.keys())
    return keys, record.to_numpy_ndarrays()


def _checked_reply(msg: Message, content: RecordDict, kind: str, keys: list[str]) -> Message:
    from infrabrain.coordinator.inspection import check_reply_content, model_spec

    spec = model_spec(msg.content.array_records["arrays"]) if kind == "train" else []
    problem = check_reply_content(content, kind, spec, int(_round_config(msg).get("server-round", 0)))
    if problem is not None:
        raise RuntimeError(f"refusing to send a {kind} reply that breaks the site boundary: {problem}")
    return Message(content=content, reply_to=msg)


def _metrics(num_examples: int, metrics: dict[str, float]) -> MetricRecord:
    out: dict[str, float | int] = {"num-examples": int(num_examples)}
    out.update({k: float(v) for k, v in metrics.items()})
    return MetricRecord(out)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this site's data; reply with the new arrays and DP/loss metrics."""
    if _is_legacy(msg):
        return _legacy_app()(msg, context)
    from infrabrain.client import local_training

    cfg = _round_config(msg)
    settings = local_training.site_settings(context.node_config, cfg)
    keys, weights = _global_arrays(msg)
    result = local_training.train(settings, weights, cfg)
    if len(result.weights) != len(keys):
        raise RuntimeError(f"local training returned {len(result.weights)} arrays for a {len(keys)}-array model")
    arrays = ArrayRecord({k: _to_array(w) for k, w in zip(keys, result.weights, strict=True)})
    content = RecordDict({"arrays": arrays, "metrics": _metrics(result.num_examples, result.metrics)})
    return _checked_reply(msg, content, "train", keys)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's held-out data; keep it for local inference (the arrays
    and a predictor checkpoint calibrated on the site's own labels, :mod:`infrabrain.client.site_checkpoint`)."""
    if _is_legacy(msg):
        return _legacy_app()(msg, context)
    from infrabrain.client import local_training
    from infrabrain.client.site_checkpoint import keep_global_model

    cfg = _round_config(msg)
    settings = local_training.site_settings(context.node_config, cfg)
    keys, weights = _global_arrays(msg)
    result = local_training.evaluate(settings, weights, cfg)
    keep_global_model(settings, keys, weights, cfg, result.metrics)
    content = RecordDict({"metrics": _metrics(result.num_examples, result.metrics)})
    return _checked_reply(msg, content, "evaluate", keys)


@app.query("fleet_prior")
def fleet_prior(msg: Message, context: Context) -> Message:
    """One stage of the fleet root prior release (:mod:`infrabrain.client.fleet_prior_site`): only the stage's
    keys, ciphertexts, masked vector or shares leave."""
    from flwr.app import ConfigRecord

    from infrabrain.client import local_training
    from infrabrain.client.fleet_prior_site import handle_stage

    cfg = _round_config(msg)
    records = msg.content.config_records
    params = dict(records["fleet-prior"]) if "fleet-prior" in records else {}
    payload = dict(records["payload"]) if "payload" in records else {}
    settings = local_training.site_settings(context.node_config, cfg)
    reply = handle_stage(settings, context.node_config, cfg, params, payload)
    return Message(content=RecordDict({"fleet-prior": ConfigRecord(reply)}), reply_to=msg)


def _to_array(w: Any) -> Any:
    import numpy as np
    from flwr.app import Array

    return Array(np.ascontiguousarray(w))


def _legacy_app() -> ClientApp:
    """A legacy ClientApp (NumPyClient + ``secaggplus_mod``) for the SecAgg+ workflow."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    from infrabrain.client import local_training

    class SiteClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, context: Context) -> None:
            self.context = context

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
            settings = local_training.site_settings(self.context.node_config, config)
            res = local_training.train(settings, parameters, config)
            return res.weights, res.num_examples, dict(res.metrics)

        def evaluate(self, parameters: list[Any], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
            from infrabrain.client.site_checkpoint import keep_global_model

            settings = local_training.site_settings(self.context.node_config, config)
            res = local_training.evaluate(settings, parameters, config)
            keep_global_model(settings, [str(i) for i in range(len(parameters))], parameters, config,
                              res.metrics)  # the global arrays' keys: their positions, as the ServerApp names them
            metrics = dict(res.metrics)
            return float(metrics.pop("eval-loss", 0.0)), res.num_examples, metrics

    def client_fn(context: Context) -> Any:
        return SiteClient(context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
