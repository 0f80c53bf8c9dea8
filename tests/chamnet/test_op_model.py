"""The op-level model on a synthetic LUT whose latency follows the ops' work (a known law)."""

from __future__ import annotations

import statistics

import pytest

from chamlab.chamnet.predictors.op_model import OpLatencyModel
from chamlab.chamnet.spaces import SPACES
from chamlab.operators import ConvBNAct, InvertedResidual, PoolLinear


def _law(op) -> float:  # type: ignore[no-untyped-def]
    return 0.01 + 2e-9 * op.macs**0.95 + 1e-8 * op.params


def test_interpolates_unmeasured_ops_of_a_known_law() -> None:
    space = SPACES.get("chamnet-mbv2")
    import numpy as np

    ops = {op for a in space.sample(np.random.default_rng(0), 12) for op in space.ops(a)}
    ir = sorted((o for o in ops if isinstance(o, InvertedResidual)), key=lambda o: o.key)
    train, test = ir[::2], ir[1::2]
    model = OpLatencyModel({o: _law(o) for o in train})
    errs = [abs(100 * (model.predict(o) - _law(o)) / _law(o)) for o in test]
    assert statistics.median(errs) < 2.0
    loo = model.leave_one_out()
    assert len(loo) == len(train) and statistics.median(abs(e) for _, e in loo) < 10.0


def test_few_rows_use_the_nearest_op_scaled_by_macs_and_unknown_kinds_fail() -> None:
    a, b = ConvBNAct(16, 16, 3, 1, 8, 8), ConvBNAct(16, 32, 3, 1, 8, 8)
    model = OpLatencyModel({a: 1.0})
    assert model.can_predict(b)
    assert model.predict(b) == pytest.approx((b.macs + 1) / (a.macs + 1))
    assert not model.can_predict(PoolLinear(64, 10, 2, 2))
    with pytest.raises(KeyError):
        model.predict(PoolLinear(64, 10, 2, 2))


def test_each_kernel_of_a_block_gets_its_own_cost_per_mac() -> None:
    # a CPU's depthwise MAC costs several pointwise ones: one MAC column cannot price blocks whose
    # mix of the two differs (kernel 7 vs 3, expand 6 vs 1), the split columns can
    import numpy as np

    from chamlab.chamnet.predictors.op_model import single_mac_features

    def law(op: InvertedResidual) -> float:
        expand, depthwise, project = op.mac_terms()
        return 0.005 + 1e-9 * (expand + project) + 8e-9 * depthwise

    space = SPACES.get("chamnet-mbv2")
    ops = {op for a in space.sample(np.random.default_rng(1), 12) for op in space.ops(a)}
    ir = sorted((o for o in ops if isinstance(o, InvertedResidual)), key=lambda o: o.key)
    # hidden 96, 8x8 out: expand 96*64*16, depthwise 96*64*9, project 24*64*96 (single-kernel ops: one term)
    assert InvertedResidual(16, 24, 3, 1, 6, 8, 8).mac_terms() == (98304, 55296, 147456)
    assert ConvBNAct(3, 8, 3, 1, 8, 8).mac_terms() == (8 * 64 * 3 * 9,)
    train, test = ir[::2], ir[1::2]

    def median_err(model: OpLatencyModel) -> float:
        return statistics.median(abs(100 * (model.predict(o) - law(o)) / law(o)) for o in test)

    split = median_err(OpLatencyModel({o: law(o) for o in train}))
    single = median_err(OpLatencyModel({o: law(o) for o in train}, single_mac_features))
    assert split < 1.0 and single > 3 * split, (split, single)


def test_session_noise_separates_a_device_shift_from_the_spread_of_ops() -> None:
    import math

    import numpy as np

    from chamlab.chamnet.predictors.op_model import session_noise

    rng = np.random.default_rng(0)
    before = {f"op{i}": float(v) for i, v in enumerate(rng.uniform(0.01, 1.0, 400))}
    # each session adds noise of sd 0.1 in log p50; the second also runs 5 % slower overall
    b = {k: v * math.exp(rng.normal(0, 0.1)) for k, v in before.items()}
    a = {k: 1.05 * v * math.exp(rng.normal(0, 0.1)) for k, v in before.items()}
    noise = session_noise(b, {**a, "only-here": 1.0})
    assert noise["n_ops"] == 400
    assert noise["shift_pct"] == pytest.approx(5.0, abs=1.5)
    assert noise["log_var"] == pytest.approx(0.01, rel=0.25)
    with pytest.raises(ValueError, match="both sessions"):
        session_noise({"x": 1.0}, {"y": 1.0})


def test_shrinkage_weights_follow_noise_against_misfit() -> None:
    from chamlab.chamnet.predictors.op_model import MIN_MISFIT_LOG_VAR, shrinkage_weights

    scatter = {"a": 0.01, "b": 0.05}
    assert shrinkage_weights(scatter, 0.0) == {"a": 0.0, "b": 0.0}  # ops reproduce: keep them
    w = shrinkage_weights(scatter, 0.005)
    assert w["a"] == pytest.approx(0.5) and w["b"] == pytest.approx(0.1)
    # noise as large as the whole scatter: the model's misfit is at its floor, the model leads
    assert shrinkage_weights(scatter, 0.02)["a"] == pytest.approx(0.02 / (0.02 + MIN_MISFIT_LOG_VAR))


def test_shrunk_values_move_measured_ops_towards_the_model_in_log_space() -> None:
    import math

    import numpy as np

    space = SPACES.get("chamnet-mbv2")
    ops = sorted(
        {op for a in space.sample(np.random.default_rng(2), 8) for op in space.ops(a)}, key=lambda o: o.key
    )
    rng = np.random.default_rng(3)
    measured = {o: _law(o) * math.exp(rng.normal(0, 0.3)) for o in ops}  # noisy measurements of the law
    model = OpLatencyModel(measured)
    kinds = {o.op_type for o in ops}
    assert set(model.misfit_log_var()) <= kinds and "inverted_residual" in model.misfit_log_var()
    assert model.shrunk({}) == {o.key: v for o, v in measured.items()}  # no weight: as measured
    full = model.shrunk({"inverted_residual": 1.0})
    half = model.shrunk({"inverted_residual": 0.5})
    for o, v in measured.items():
        if o.op_type != "inverted_residual":
            assert full[o.key] == v
            continue
        assert full[o.key] == pytest.approx(model.predict(o))
        assert half[o.key] == pytest.approx(math.sqrt(v * model.predict(o)))
    # the noisy ops come closer to the law they were drawn from
    ir = [o for o in ops if o.op_type == "inverted_residual"]

    def err(values: dict[str, float]) -> float:
        return statistics.median(abs(math.log(values[o.key] / _law(o))) for o in ir)

    assert err(half) < err({o.key: v for o, v in measured.items()})
